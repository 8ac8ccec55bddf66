#include "agent/metrics.h"

#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "agent/transfer_session.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/unit/agent/agent_test_util.h"

namespace pkgdist {
namespace {

using pkgdist::v1::TransferRequest;
using pkgdist::v1::TransferResponse;
using ::testing::Pair;
using ::testing::UnorderedElementsAre;
using prometheus::MetricType;

constexpr uint32_t kChunk = 4096;

std::map<std::string, MetricType> Types(const std::vector<prometheus::MetricFamily>& families) {
  std::map<std::string, MetricType> out;
  for (const auto& f : families) out[f.name] = f.type;
  return out;
}

// The one sample of an unlabelled family (or of label value `label`): a
// counter's or gauge's value, a histogram's count.
double Value(const std::vector<prometheus::MetricFamily>& families, const std::string& name,
             const std::string& label = "") {
  for (const auto& f : families) {
    if (f.name != name) continue;
    for (const auto& m : f.metric) {
      if (!label.empty() && (m.label.empty() || m.label[0].value != label)) continue;
      switch (f.type) {
        case MetricType::Counter: return m.counter.value;
        case MetricType::Gauge: return m.gauge.value;
        case MetricType::Histogram: return static_cast<double>(m.histogram.sample_count);
        default: return -1;
      }
    }
  }
  ADD_FAILURE() << "no sample " << name << " " << label;
  return -1;
}

TEST(AgentMetricsTest, RegistersEveryFamilyWithItsType) {
  // The names and types the README lists (free bytes is the collectable's).
  AgentMetrics m;
  EXPECT_THAT(Types(m.registry()->Collect()),
              UnorderedElementsAre(
                  Pair("pkgdist_agent_received_bytes_total", MetricType::Counter),
                  Pair("pkgdist_agent_reused_bytes_total", MetricType::Counter),
                  Pair("pkgdist_agent_peer_received_bytes_total", MetricType::Counter),
                  Pair("pkgdist_agent_peer_served_bytes_total", MetricType::Counter),
                  Pair("pkgdist_agent_hash_mismatches_total", MetricType::Counter),
                  Pair("pkgdist_agent_data_fsync_duration_seconds", MetricType::Histogram),
                  Pair("pkgdist_agent_journal_fsync_duration_seconds", MetricType::Histogram),
                  Pair("pkgdist_agent_transfers_active", MetricType::Gauge),
                  Pair("pkgdist_agent_transfers_total", MetricType::Counter)));
}

TEST(AgentMetricsTest, RelayBytesCountApartFromTheControllers) {
  // Chunks from the site's relay are not what the controller sent.
  AgentMetrics m;
  m.ChunkReceived(100);
  m.PeerReceived(30);
  m.PeerServed(70);
  auto families = m.registry()->Collect();
  EXPECT_EQ(Value(families, "pkgdist_agent_received_bytes_total"), 100);
  EXPECT_EQ(Value(families, "pkgdist_agent_peer_received_bytes_total"), 30);
  EXPECT_EQ(Value(families, "pkgdist_agent_peer_served_bytes_total"), 70);
}

TEST(AgentMetricsTest, FreeBytesIsReadAtScrape) {
  // One unlabelled gauge with the root's free space; none for a missing root.
  TempDir dir = testing::MakeTempDir();
  auto families = MakeFreeBytesCollectable(dir.path())->Collect();
  EXPECT_THAT(Types(families), UnorderedElementsAre(Pair("pkgdist_agent_free_bytes",
                                                         MetricType::Gauge)));
  EXPECT_GT(Value(families, "pkgdist_agent_free_bytes"), 0);
  EXPECT_TRUE(MakeFreeBytesCollectable(dir.path() + "/missing")->Collect().empty());
}

// A controller in a test: answers each Need with its chunks (the first copy
// of chunk `corrupt_index` damaged), commits when everything is acked.
class ScriptedStream : public TransferStream {
 public:
  ScriptedStream(const pkgdist::v1::Manifest& m, std::string src, int corrupt_index = -1)
      : m_(m), src_(std::move(src)), corrupt_index_(corrupt_index) {
    TransferRequest offer;
    *offer.mutable_offer()->mutable_manifest() = m;
    offer.mutable_offer()->set_package_id(PackageId(m));
    offer.mutable_offer()->set_window_bytes(1 << 20);
    requests_.push_back(std::move(offer));
  }
  bool Read(ReceivedRequest* request) override {
    absl::MutexLock l(&mu_);
    auto ready = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return !requests_.empty(); };
    mu_.AwaitWithTimeout(absl::Condition(&ready), absl::Seconds(10));
    if (requests_.empty()) return false;
    SetReceived(std::move(requests_.front()), request);
    requests_.pop_front();
    return true;
  }
  bool Write(const TransferResponse& r) override {
    absl::MutexLock l(&mu_);
    for (uint32_t i : r.need().indices()) {
      outstanding_.insert(i);
      TransferRequest c;
      c.mutable_chunk()->set_index(i);
      std::string data = testing::ChunkData(m_, src_, i);
      if (static_cast<int>(i) == corrupt_index_) {
        data[0] ^= 1;
        corrupt_index_ = -1;
      }
      sent_bytes += data.size();
      c.mutable_chunk()->set_data(std::move(data));
      requests_.push_back(std::move(c));
    }
    for (uint32_t i : r.ack().indices()) outstanding_.erase(i);
    if ((r.has_need() || r.has_ack()) && outstanding_.empty()) {
      TransferRequest commit;
      commit.mutable_commit();
      requests_.push_back(std::move(commit));
    }
    return true;
  }

  uint64_t sent_bytes = 0;

 private:
  const pkgdist::v1::Manifest m_;
  const std::string src_;
  absl::Mutex mu_;
  int corrupt_index_ ABSL_GUARDED_BY(mu_);
  std::deque<TransferRequest> requests_ ABSL_GUARDED_BY(mu_);
  std::set<uint32_t> outstanding_ ABSL_GUARDED_BY(mu_);
};

// A store at `root` (no space reserved) and session options that count
// into `metrics`.
struct MeteredStore {
  explicit MeteredStore(const std::string& root) {
    PackageStoreOptions store_options;
    store_options.reserve_bytes = 0;
    auto opened = PackageStore::Open(root, store_options);
    EXPECT_TRUE(opened.ok()) << opened.status();
    if (opened.ok()) store = std::move(opened).value();
    options.metrics = &metrics;
  }
  std::unique_ptr<PackageStore> store;
  AgentMetrics metrics;
  TransferOptions options;
};

TEST(AgentMetricsTest, SessionsCountReceivedReusedMismatchedAndFsyncs) {
  // Version 1 arrives with one damaged chunk re-requested; version 2 shares
  // three of its four data chunks, which are copied, not received.
  TempDir tmp = testing::MakeTempDir();
  std::string v1 = tmp.path() + "/v1", v2 = tmp.path() + "/v2";
  std::string data = testing::Pattern(4 * kChunk, 'd');
  testing::WriteFile(v1 + "/data.bin", data);
  testing::WriteFile(v2 + "/data.bin", data.substr(0, 3 * kChunk) + std::string(kChunk, 'x'));
  auto m1 = testing::ManifestOf(v1, "app", "1.0", kChunk);
  auto m2 = testing::ManifestOf(v2, "app", "2.0", kChunk);
  MeteredStore env(tmp.path() + "/root");
  ASSERT_NE(env.store, nullptr);

  ScriptedStream first(m1, v1, /*corrupt_index=*/2);
  EXPECT_TRUE(TransferSession(*env.store, env.options, first, [] {}, "peer", "job1").Run().ok());
  ScriptedStream second(m2, v2);
  EXPECT_TRUE(TransferSession(*env.store, env.options, second, [] {}, "peer", "job2").Run().ok());

  auto f = env.metrics.registry()->Collect();
  EXPECT_EQ(Value(f, "pkgdist_agent_received_bytes_total"),
            static_cast<double>(first.sent_bytes + second.sent_bytes));
  EXPECT_EQ(first.sent_bytes, 5 * kChunk);   // four chunks and the damaged one again
  EXPECT_EQ(second.sent_bytes, 1 * kChunk);  // only the new chunk
  EXPECT_EQ(Value(f, "pkgdist_agent_reused_bytes_total"), 3 * kChunk);
  EXPECT_EQ(Value(f, "pkgdist_agent_hash_mismatches_total"), 1);
  EXPECT_EQ(Value(f, "pkgdist_agent_transfers_total", "ok"), 2);
  EXPECT_EQ(Value(f, "pkgdist_agent_transfers_active"), 0);
  EXPECT_GE(Value(f, "pkgdist_agent_journal_fsync_duration_seconds"), 2);
  EXPECT_GE(Value(f, "pkgdist_agent_data_fsync_duration_seconds"), 2);
}

TEST(AgentMetricsTest, ARequestThatDoesNotParseCountsAsInvalidArgument) {
  // The stream ends at bytes that are no TransferRequest, after the Offer:
  // the session returns the stream's error and the metric records it, not
  // the CANCELLED of a stream that simply ended.
  class UnparsableAfterOffer : public ScriptedStream {
   public:
    using ScriptedStream::ScriptedStream;
    bool Read(ReceivedRequest* request) override {
      if (reads_++ == 0) return ScriptedStream::Read(request);
      return false;
    }
    absl::Status read_error() override {
      return reads_ > 1 ? absl::InvalidArgumentError("request does not parse") : absl::OkStatus();
    }

   private:
    int reads_ = 0;
  };
  TempDir tmp = testing::MakeTempDir();
  testing::WriteFile(tmp.path() + "/src/data.bin", testing::Pattern(2 * kChunk, 'u'));
  auto m = testing::ManifestOf(tmp.path() + "/src", "app", "1.0", kChunk);
  MeteredStore env(tmp.path() + "/root");
  ASSERT_NE(env.store, nullptr);

  UnparsableAfterOffer stream(m, tmp.path() + "/src");
  absl::Status s = TransferSession(*env.store, env.options, stream, [] {}, "peer", "job").Run();
  EXPECT_TRUE(absl::IsInvalidArgument(s)) << s;
  auto f = env.metrics.registry()->Collect();
  EXPECT_EQ(Value(f, "pkgdist_agent_transfers_total", "invalid_argument"), 1);
  EXPECT_EQ(Value(f, "pkgdist_agent_transfers_active"), 0);
}

}  // namespace
}  // namespace pkgdist
