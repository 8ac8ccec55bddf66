// TransferCall with a relay (docs/sites.md "Relays"): the agent's first Need
// lists chunks as `peer`, fetched from the source the Offer names, against
// an agent each test scripts message by message, over real mutual TLS.
#include <deque>
#include <functional>
#include <optional>
#include <set>
#include <thread>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "controller/transfer.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "shared/grpc_options.h"
#include "shared/manifest.h"
#include "tests/unit/controller/core_test_env.h"

namespace pkgdist::testing {
namespace {

using pkgdist::v1::TransferRequest;
using pkgdist::v1::TransferResponse;
using ::testing::ElementsAre;
using ::testing::ElementsAreArray;
using ::testing::HasSubstr;

using Stream = grpc::ServerReaderWriter<TransferResponse, TransferRequest>;

// The agent's side of one Transfer call: what the controller sent, read on a
// thread of its own so that the script can wait for a message with a bound
// (or for none to come) while it writes.
class AgentSide {
 public:
  AgentSide(grpc::ServerContext* ctx, Stream* stream) : ctx_(ctx), stream_(stream) {
    reader_ = std::thread([this] {
      TransferRequest r;
      while (stream_->Read(&r)) {
        absl::MutexLock l(&mu_);
        requests_.push_back(r);
      }
      absl::MutexLock l(&mu_);
      ended_ = true;
    });
  }
  ~AgentSide() {
    bool ended;
    {
      absl::MutexLock l(&mu_);
      ended = ended_;
    }
    if (!ended) ctx_->TryCancel();
    reader_.join();
  }
  AgentSide(const AgentSide&) = delete;
  AgentSide& operator=(const AgentSide&) = delete;

  // The next message, or nullopt once the stream ended or `timeout` passed.
  std::optional<TransferRequest> Next(absl::Duration timeout = absl::Seconds(10)) {
    absl::MutexLock l(&mu_);
    auto ready = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
      return !requests_.empty() || ended_;
    };
    mu_.AwaitWithTimeout(absl::Condition(&ready), timeout);
    if (requests_.empty()) return std::nullopt;
    TransferRequest r = std::move(requests_.front());
    requests_.pop_front();
    return r;
  }
  void Write(const TransferResponse& r) { stream_->Write(r); }

 private:
  grpc::ServerContext* ctx_;
  Stream* stream_;
  absl::Mutex mu_;
  std::deque<TransferRequest> requests_ ABSL_GUARDED_BY(mu_);
  bool ended_ ABSL_GUARDED_BY(mu_) = false;
  std::thread reader_;
};

// An Agent service whose Transfer runs the test's script.
class ScriptedAgent final : public pkgdist::v1::Agent::Service {
 public:
  using Script = std::function<grpc::Status(AgentSide&)>;
  explicit ScriptedAgent(Script script) : script_(std::move(script)) {}
  grpc::Status Transfer(grpc::ServerContext* ctx, Stream* stream) override {
    AgentSide side(ctx, stream);
    return script_(side);
  }

 private:
  Script script_;
};

TransferResponse NeedOf(const std::vector<uint32_t>& indices, const std::vector<uint32_t>& peer,
                        const std::string& source_failed = "") {
  TransferResponse r;
  r.mutable_need()->mutable_indices()->Assign(indices.begin(), indices.end());
  r.mutable_need()->mutable_peer()->Assign(peer.begin(), peer.end());
  if (!source_failed.empty()) r.mutable_need()->set_source_failed(source_failed);
  return r;
}

TransferResponse AckOf(const std::vector<uint32_t>& indices) {
  TransferResponse r;
  r.mutable_ack()->mutable_indices()->Assign(indices.begin(), indices.end());
  return r;
}

// Receives chunk messages, acknowledging each run, until every index of
// `expected` came; records each index received in `*got`, in order, and
// the number of messages in `*messages`. False if something else came.
bool ReceiveAndAck(AgentSide& side, size_t expected, std::vector<uint32_t>* got, int* messages) {
  while (got->size() < expected) {
    auto r = side.Next();
    if (!r.has_value() || !r->has_chunk()) return false;
    ++*messages;
    const uint32_t count = std::max<uint32_t>(r->chunk().count(), 1);
    std::vector<uint32_t> run;
    for (uint32_t i = 0; i < count; ++i) run.push_back(r->chunk().index() + i);
    got->insert(got->end(), run.begin(), run.end());
    side.Write(AckOf(run));
  }
  return true;
}

// Answers Commit with Published of `id`; false if another message came.
bool PublishOnCommit(AgentSide& side, const std::string& id) {
  auto r = side.Next();
  if (!r.has_value() || !r->has_commit()) return false;
  TransferResponse published;
  published.mutable_published()->set_package_id(id);
  side.Write(published);
  return true;
}

class TransferPeerTest : public CoreTest {
 protected:
  TransferParams Params(const std::string& id) { return TransferParamsFor(id, &read_pool_); }
  // `p` with dp2 as the source dp1 fetches from.
  static TransferParams WithSource(TransferParams p) {
    p.source_agent = "dp2";
    p.source_address = "192.0.2.2:7701";
    return p;
  }
  // The call, and the agent's server until this goes: declared after the
  // agent and what its script touches, it stops the server (waiting for
  // the script to return) before they are destroyed.
  struct Running {
    std::shared_ptr<TransferCall> call;
    TransferPeerTest* test;
    ~Running() { test->server_.reset(); }
    TransferCall* operator->() const { return call.get(); }
  };
  // Serves `agent` as dp1 and starts a transfer of `p` to it.
  Running Start(ScriptedAgent& agent, TransferParams p) {
    server_ = std::make_unique<FakeAgentServer>(Tls("dp1"), &agent);
    EXPECT_FALSE(server_->address().empty());
    return Running{TransferCall::Start(
        pool_->Channel("dp1", server_->address()), std::move(p), &clock_,
        [this](const TransferCall::Progress& progress) {
          absl::MutexLock l(&mu_);
          acked_ = progress.bytes_acked;
          sent_ += progress.bytes_sent_delta;
          reused_ += progress.bytes_reused_delta;
          from_peer_ += progress.bytes_from_peer_delta;
          if (!progress.source_failed.empty()) source_failed_.push_back(progress.source_failed);
          ++reports_;
        },
        [this](const TransferResult& r) {
          result_ = r;
          done_.Notify();
        }), this};
  }
  TransferResult Wait() {
    EXPECT_TRUE(done_.WaitForNotificationWithTimeout(absl::Seconds(30))) << "the call never ended";
    return result_;
  }
  // Blocks until more than `n` progress reports came (10 s at most).
  bool WaitForReports(int n) {
    absl::MutexLock l(&mu_);
    auto more = [this, n]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return reports_ > n; };
    return mu_.AwaitWithTimeout(absl::Condition(&more), absl::Seconds(10));
  }
  int reports() {
    absl::MutexLock l(&mu_);
    return reports_;
  }
  static uint64_t BytesOf(const pkgdist::v1::Manifest& m, const std::vector<uint32_t>& indices) {
    uint64_t n = 0;
    for (uint32_t i : indices) n += m.chunks(static_cast<int>(i)).length();
    return n;
  }

  ReadPool read_pool_{1};
  std::unique_ptr<FakeAgentServer> server_;
  absl::Notification done_;
  TransferResult result_;
  absl::Mutex mu_;
  uint64_t acked_ ABSL_GUARDED_BY(mu_) = 0, sent_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t reused_ ABSL_GUARDED_BY(mu_) = 0, from_peer_ ABSL_GUARDED_BY(mu_) = 0;
  std::vector<std::string> source_failed_ ABSL_GUARDED_BY(mu_);
  int reports_ ABSL_GUARDED_BY(mu_) = 0;
};

TEST_F(TransferPeerTest, PeerChunksAreNotSentAndTheirAcksCountAsFromPeer) {
  // Even chunks needed, odd ones from the source: the Offer names the
  // source, its detection bound and the peers; exactly the even chunks are
  // sent; Commit waits for the odd ones' Acks, which count as from peer.
  TransferParams p = WithSource(Params(ImportPackage("app", "1.0", (3 << 20) + 5)));
  p.serve_peers = {"dp3", "dp4"};
  const auto m = p.manifest;
  const std::string id = p.package_id;
  std::vector<uint32_t> even, odd;
  for (int i = 0; i < m->chunks_size(); ++i) {
    (i % 2 == 0 ? even : odd).push_back(static_cast<uint32_t>(i));
  }
  ASSERT_GT(odd.size(), 10u);
  pkgdist::v1::Offer offer;
  std::vector<uint32_t> got;
  bool early_commit = false, ok = false;
  int messages = 0;
  ScriptedAgent agent([&](AgentSide& side) {
    auto first = side.Next();
    if (!first.has_value() || !first->has_offer()) return grpc::Status::CANCELLED;
    offer = first->offer();
    side.Write(NeedOf(even, odd));
    if (!ReceiveAndAck(side, even.size(), &got, &messages)) return grpc::Status::CANCELLED;
    // The odd chunks are not acknowledged yet: nothing may follow.
    early_commit = side.Next(absl::Milliseconds(300)).has_value();
    side.Write(AckOf(odd));
    ok = PublishOnCommit(side, id);
    return grpc::Status::OK;
  });
  auto call = Start(agent, std::move(p));
  TransferResult result = Wait();
  EXPECT_TRUE(result.published) << result.status;
  EXPECT_TRUE(ok) << "no Commit after the peer chunks' Acks";
  EXPECT_FALSE(early_commit) << "a message (Commit) came before the peer chunks were acknowledged";
  EXPECT_EQ(offer.source().agent(), "dp2");
  EXPECT_EQ(offer.source().address(), "192.0.2.2:7701");
  EXPECT_EQ(offer.source_silence_ms(), 5000u);
  EXPECT_THAT(offer.serve_peers(), ElementsAre("dp3", "dp4"));
  EXPECT_EQ(std::set<uint32_t>(got.begin(), got.end()),
            std::set<uint32_t>(even.begin(), even.end()));
  EXPECT_EQ(got.size(), even.size()) << "a chunk was sent twice";
  absl::MutexLock l(&mu_);
  EXPECT_EQ(acked_, m->total_size());
  EXPECT_EQ(sent_, BytesOf(*m, even));
  EXPECT_EQ(from_peer_, BytesOf(*m, odd));
  EXPECT_EQ(reused_, 0u);
  EXPECT_TRUE(source_failed_.empty());
}

TEST_F(TransferPeerTest, AnOfferWithoutASourceNamesNone) {
  // No source_agent: the Offer has no source and no silence bound, and
  // names the peers it may serve.
  TransferParams p = Params(ImportPackage("app", "1.0", 64 << 10));
  p.serve_peers = {"dp2"};
  const std::string id = p.package_id;
  pkgdist::v1::Offer offer;
  ScriptedAgent agent([&](AgentSide& side) {
    auto first = side.Next();
    if (!first.has_value() || !first->has_offer()) return grpc::Status::CANCELLED;
    offer = first->offer();
    side.Write(NeedOf({}, {}));
    PublishOnCommit(side, id);
    return grpc::Status::OK;
  });
  auto call = Start(agent, std::move(p));
  EXPECT_TRUE(Wait().published);
  EXPECT_FALSE(offer.has_source());
  EXPECT_EQ(offer.source_silence_ms(), 0u);
  EXPECT_THAT(offer.serve_peers(), ElementsAre("dp2"));
}

TEST_F(TransferPeerTest, ASourceFailedNeedIsSentExactlyThoseAndReportedOnce) {
  // Every chunk from the source; the first third arrives, then the agent
  // asks the controller for the rest naming why: exactly those are sent,
  // the reason is reported once, and only the first third counts as from
  // peer.
  TransferParams p = WithSource(Params(ImportPackage("app", "1.0", (3 << 20) + 5)));
  const auto m = p.manifest;
  const std::string id = p.package_id;
  std::vector<uint32_t> all, fetched, left;
  for (int i = 0; i < m->chunks_size(); ++i) {
    all.push_back(static_cast<uint32_t>(i));
    (i < m->chunks_size() / 3 ? fetched : left).push_back(static_cast<uint32_t>(i));
  }
  std::vector<uint32_t> got;
  bool ok = false;
  int messages = 0;
  ScriptedAgent agent([&](AgentSide& side) {
    auto first = side.Next();
    if (!first.has_value() || !first->has_offer()) return grpc::Status::CANCELLED;
    side.Write(NeedOf({}, all));
    side.Write(AckOf(fetched));
    side.Write(NeedOf(left, {}, "dp2: no message for 5s"));
    if (!ReceiveAndAck(side, left.size(), &got, &messages)) return grpc::Status::CANCELLED;
    ok = PublishOnCommit(side, id);
    return grpc::Status::OK;
  });
  auto call = Start(agent, std::move(p));
  TransferResult result = Wait();
  EXPECT_TRUE(result.published) << result.status;
  EXPECT_TRUE(ok);
  EXPECT_EQ(std::set<uint32_t>(got.begin(), got.end()),
            std::set<uint32_t>(left.begin(), left.end()));
  EXPECT_EQ(got.size(), left.size()) << "a chunk was sent twice";
  absl::MutexLock l(&mu_);
  EXPECT_THAT(source_failed_, ElementsAre("dp2: no message for 5s"));
  EXPECT_EQ(from_peer_, BytesOf(*m, fetched));
  EXPECT_EQ(sent_, BytesOf(*m, left));
  EXPECT_EQ(acked_, m->total_size());
}

TEST_F(TransferPeerTest, ChunksTheSourceDidNotDeliverGoOutInOrderAndInRuns) {
  // A source that fails at once leaves the whole package to the
  // controller: it goes out as a direct transfer would, ascending, in runs
  // of about kMaxRunBytes, not a message per chunk.
  TransferParams p = WithSource(Params(ImportPackage("app", "1.0", (3 << 20) + 5)));
  const auto m = p.manifest;
  const std::string id = p.package_id;
  std::vector<uint32_t> all;
  for (int i = 0; i < m->chunks_size(); ++i) all.push_back(static_cast<uint32_t>(i));
  std::vector<uint32_t> got;
  int messages = 0;
  ScriptedAgent agent([&](AgentSide& side) {
    auto first = side.Next();
    if (!first.has_value() || !first->has_offer()) return grpc::Status::CANCELLED;
    side.Write(NeedOf({}, all));
    side.Write(NeedOf(all, {}, "dp2: connection refused"));
    if (!ReceiveAndAck(side, all.size(), &got, &messages)) return grpc::Status::CANCELLED;
    PublishOnCommit(side, id);
    return grpc::Status::OK;
  });
  auto call = Start(agent, std::move(p));
  EXPECT_TRUE(Wait().published);
  EXPECT_THAT(got, ElementsAreArray(all)) << "not in ascending order";
  EXPECT_LE(static_cast<uint64_t>(messages), m->total_size() / (kMaxRunBytes / 2) + 2)
      << all.size() << " chunks in " << messages << " messages";
}

TEST_F(TransferPeerTest, APeerListWhenNoSourceWasNamedFailsTheTransfer) {
  // An agent that claims to fetch from a peer the controller never named
  // is broken: INTERNAL, nothing published.
  TransferParams p = Params(ImportPackage("app", "1.0", 256 << 10));
  const int chunks = p.manifest->chunks_size();
  ASSERT_GE(chunks, 2);
  ScriptedAgent agent([&](AgentSide& side) {
    auto first = side.Next();
    if (!first.has_value() || !first->has_offer()) return grpc::Status::CANCELLED;
    std::vector<uint32_t> need;
    for (int i = 1; i < chunks; ++i) need.push_back(static_cast<uint32_t>(i));
    side.Write(NeedOf(need, {0}));
    while (side.Next().has_value()) {
    }
    return grpc::Status::CANCELLED;
  });
  auto call = Start(agent, std::move(p));
  TransferResult result = Wait();
  EXPECT_FALSE(result.published);
  EXPECT_EQ(result.status.code(), absl::StatusCode::kInternal) << result.status;
  EXPECT_THAT(std::string(result.status.message()), HasSubstr("none was named"));
}

TEST_F(TransferPeerTest, AnEmptyAckWhileFetchingKeepsTheSilenceBoundFromFiring) {
  // The agent fetches every chunk from its source and says nothing but an
  // empty Ack meanwhile: the call is Answered() only after the Need, the
  // empty Ack restarts the detection bound (5 s), and 5 s without one
  // still ends the call, since the peer chunks are owed.
  TransferParams p = WithSource(Params(ImportPackage("app", "1.0", 256 << 10)));
  std::vector<uint32_t> all;
  for (int i = 0; i < p.manifest->chunks_size(); ++i) all.push_back(static_cast<uint32_t>(i));
  absl::Notification send_need, send_alive;
  ScriptedAgent agent([&](AgentSide& side) {
    auto first = side.Next();
    if (!first.has_value() || !first->has_offer()) return grpc::Status::CANCELLED;
    if (!send_need.WaitForNotificationWithTimeout(absl::Seconds(10))) {
      return grpc::Status::CANCELLED;
    }
    side.Write(NeedOf({}, all));
    if (!send_alive.WaitForNotificationWithTimeout(absl::Seconds(10))) {
      return grpc::Status::CANCELLED;
    }
    side.Write(AckOf({}));
    while (side.Next().has_value()) {
    }
    return grpc::Status::CANCELLED;
  });
  auto call = Start(agent, std::move(p));
  EXPECT_FALSE(call->Answered()) << "answered before any Need";
  send_need.Notify();
  ASSERT_TRUE(WaitForReports(0)) << "the first Need was not reported";
  EXPECT_TRUE(call->Answered());
  clock_.AdvanceMs(4000);
  call->Tick();
  ASSERT_TRUE(call->Answered()) << "failed within the bound";
  const int before = reports();
  send_alive.Notify();
  ASSERT_TRUE(WaitForReports(before)) << "the empty Ack was not reported";
  clock_.AdvanceMs(4000);  // 8 s after the Need, 4 s after the empty Ack
  call->Tick();
  EXPECT_TRUE(call->Answered()) << "the empty Ack did not restart the silence bound";
  clock_.AdvanceMs(1500);  // 5.5 s of silence
  call->Tick();
  TransferResult result = Wait();
  EXPECT_FALSE(result.published);
  EXPECT_EQ(result.status.code(), absl::StatusCode::kDeadlineExceeded) << result.status;
  EXPECT_THAT(std::string(result.status.message()), HasSubstr("no answer from agent"));
  EXPECT_FALSE(call->Answered());
}

}  // namespace
}  // namespace pkgdist::testing
