// PeerServing (the relay side of FetchChunks) on real files in a temporary
// directory: runs per message, waiting for chunks not yet durable, who may
// fetch, the end of a grant, and the staged and published trees.
#include "agent/peer_serving.h"

#include <atomic>
#include <filesystem>
#include <map>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "shared/grpc_options.h"
#include "shared/manifest.h"
#include "tests/unit/agent/agent_test_util.h"

namespace pkgdist {
namespace {

using pkgdist::v1::FetchChunksRequest;
using pkgdist::v1::FetchChunksResponse;
using ::testing::ElementsAre;
using ::testing::HasSubstr;

constexpr uint32_t kChunk = 4096;

// A package staged in `tree` (a directory), and the path it is published at.
struct Package {
  std::string tree;
  std::string published;
  pkgdist::v1::Manifest manifest;
  std::string id;
};

// One Chunk message: its first index, count and data; or a Waiting.
struct Message {
  bool waiting = false;
  uint32_t index = 0, count = 0;
  std::string data;
};

std::vector<Message> ChunksOnly(const std::vector<Message>& all) {
  std::vector<Message> out;
  for (const Message& m : all) {
    if (!m.waiting) out.push_back(m);
  }
  return out;
}

// A Serve on a thread of its own, for the calls that wait.
class AsyncServe {
 public:
  AsyncServe(PeerServing& serving, std::string peer, FetchChunksRequest request)
      : thread_([this, &serving, peer = std::move(peer), request = std::move(request)] {
          absl::Status s = serving.Serve(
              peer, request,
              [this](const FetchChunksResponse& r) {
                absl::MutexLock l(&mu_);
                messages_.push_back(Message{r.has_waiting(), r.chunk().index(), r.chunk().count(),
                                            r.chunk().data()});
                return true;
              },
              [this] { return cancelled_.load(); });
          absl::MutexLock l(&mu_);
          status_ = s;
        }) {}
  // A call still waiting is cancelled, so that a failing test ends.
  ~AsyncServe() {
    cancelled_ = true;
    thread_.join();
  }

  // Blocks until a Waiting message came, or `timeout` passed.
  bool WaitForWaiting(absl::Duration timeout = absl::Seconds(5)) {
    absl::MutexLock l(&mu_);
    auto waiting = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
      for (const Message& m : messages_) {
        if (m.waiting) return true;
      }
      return false;
    };
    return mu_.AwaitWithTimeout(absl::Condition(&waiting), timeout);
  }
  // Serve's result once it returned, or nullopt after `timeout`.
  std::optional<absl::Status> Result(absl::Duration timeout = absl::Seconds(5)) {
    absl::MutexLock l(&mu_);
    auto done = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return status_.has_value(); };
    mu_.AwaitWithTimeout(absl::Condition(&done), timeout);
    return status_;
  }
  std::vector<Message> messages() {
    absl::MutexLock l(&mu_);
    return messages_;
  }
  void Cancel() { cancelled_ = true; }

 private:
  absl::Mutex mu_;
  std::vector<Message> messages_ ABSL_GUARDED_BY(mu_);
  std::optional<absl::Status> status_ ABSL_GUARDED_BY(mu_);
  std::atomic<bool> cancelled_{false};
  std::thread thread_;  // last: started once the rest is built
};

class PeerServingTest : public ::testing::Test {
 protected:
  PeerServingTest() : tmp_(testing::MakeTempDir()) {}

  // Writes `files` (path -> content) as the staged tree of name@version and
  // builds its manifest with fixed chunks of `chunk` bytes.
  Package MakePackage(const std::string& version, const std::map<std::string, std::string>& files,
                      uint32_t chunk = kChunk) {
    Package p;
    p.tree = absl::StrCat(tmp_.path(), "/staging/", version, "/tree");
    p.published = absl::StrCat(tmp_.path(), "/packages/app/", version);
    for (const auto& [path, content] : files) testing::WriteFile(p.tree + "/" + path, content);
    p.manifest = testing::ManifestOf(p.tree, "app", version, chunk);
    p.id = PackageId(p.manifest);
    return p;
  }
  // a.bin (chunks 0-3) and b.bin (chunks 4-6).
  Package TwoFiles(const std::string& version = "1.0") {
    Package p = MakePackage(version, {{"a.bin", testing::Pattern(4 * kChunk, 'a')},
                                      {"b.bin", testing::Pattern(3 * kChunk - 100, 'b')}});
    EXPECT_EQ(p.manifest.chunks_size(), 7);
    EXPECT_EQ(p.manifest.chunks(3).file(), p.manifest.chunks(0).file());
    EXPECT_NE(p.manifest.chunks(4).file(), p.manifest.chunks(3).file());
    return p;
  }
  void Grant(const Package& p, std::vector<std::string> peers, std::vector<bool> durable) {
    serving_.Grant(p.id, p.manifest, std::move(peers), p.tree, p.published, std::move(durable));
  }
  static std::vector<bool> All(const Package& p, bool v = true) {
    return std::vector<bool>(static_cast<size_t>(p.manifest.chunks_size()), v);
  }
  static FetchChunksRequest Request(const Package& p, const std::vector<uint32_t>& indices) {
    FetchChunksRequest r;
    r.set_package_id(p.id);
    r.mutable_indices()->Assign(indices.begin(), indices.end());
    return r;
  }
  static std::vector<uint32_t> Range(uint32_t from, uint32_t to) {
    std::vector<uint32_t> v;
    for (uint32_t i = from; i < to; ++i) v.push_back(i);
    return v;
  }
  // Serves synchronously (for calls that should not wait): a call that
  // waits all the same is cancelled after 3 s.
  absl::Status Serve(const std::string& peer, const FetchChunksRequest& request,
                     std::vector<Message>* out, bool cancelled = false) {
    const absl::Time deadline = absl::Now() + absl::Seconds(3);
    return serving_.Serve(
        peer, request,
        [out](const FetchChunksResponse& r) {
          out->push_back(
              Message{r.has_waiting(), r.chunk().index(), r.chunk().count(), r.chunk().data()});
          return true;
        },
        [cancelled, deadline] { return cancelled || absl::Now() > deadline; });
  }
  // The bytes of chunks [first, first + count) of `p`, from `tree`.
  static std::string Expected(const Package& p, uint32_t first, uint32_t count,
                              const std::string& tree) {
    std::string out;
    for (uint32_t i = first; i < first + count; ++i) out += testing::ChunkData(p.manifest, tree, i);
    return out;
  }
  static void Publish(const Package& p) {
    std::filesystem::create_directories(std::filesystem::path(p.published).parent_path());
    std::filesystem::rename(p.tree, p.published);
  }

  TempDir tmp_;
  PeerServing serving_;
};

// (index, count) of each message.
std::vector<std::pair<uint32_t, uint32_t>> Runs(const std::vector<Message>& messages) {
  std::vector<std::pair<uint32_t, uint32_t>> out;
  for (const Message& m : messages) out.emplace_back(m.index, m.count);
  return out;
}

TEST_F(PeerServingTest, ServesDurableChunksInOrderOneRunPerFile) {
  // Every chunk of two files: one message per file, with the file's bytes.
  Package p = TwoFiles();
  Grant(p, {"dp2"}, All(p));
  EXPECT_TRUE(serving_.Granted(p.id));
  std::vector<Message> got;
  ASSERT_TRUE(Serve("dp2", Request(p, Range(0, 7)), &got).ok());
  EXPECT_THAT(Runs(got), ElementsAre(std::pair{0u, 4u}, std::pair{4u, 3u}));
  ASSERT_EQ(got.size(), 2u);
  EXPECT_EQ(got[0].data, Expected(p, 0, 4, p.tree));
  EXPECT_EQ(got[1].data, Expected(p, 4, 3, p.tree));
  EXPECT_EQ(serving_.served_bytes(), p.manifest.total_size());
}

TEST_F(PeerServingTest, ARunEndsWhereTheIndicesSkipAChunk) {
  // 0,1 | 3 | 5,6: consecutive indices only.
  Package p = TwoFiles();
  Grant(p, {"dp2"}, All(p));
  std::vector<Message> got;
  ASSERT_TRUE(Serve("dp2", Request(p, {0, 1, 3, 5, 6}), &got).ok());
  EXPECT_THAT(Runs(got), ElementsAre(std::pair{0u, 2u}, std::pair{3u, 1u}, std::pair{5u, 2u}));
  for (const Message& m : got) EXPECT_EQ(m.data, Expected(p, m.index, m.count, p.tree));
}

TEST_F(PeerServingTest, ARunIsAtMostMaxRunBytes) {
  // 256 KiB chunks go four to a message, the last alone.
  Package p = MakePackage("1.0", {{"big.bin", testing::Pattern((3 << 20) + 1000, 'x')}}, 256 << 10);
  ASSERT_EQ(p.manifest.chunks_size(), 13);
  Grant(p, {"dp2"}, All(p));
  std::vector<Message> got;
  ASSERT_TRUE(Serve("dp2", Request(p, Range(0, 13)), &got).ok());
  EXPECT_THAT(Runs(got), ElementsAre(std::pair{0u, 4u}, std::pair{4u, 4u}, std::pair{8u, 4u},
                                     std::pair{12u, 1u}));
  for (const Message& m : got) {
    EXPECT_LE(m.data.size(), kMaxRunBytes);
    EXPECT_EQ(m.data, Expected(p, m.index, m.count, p.tree));
  }
}

TEST_F(PeerServingTest, AChunkNotYetDurableIsWaitedForWithWaitingMessages) {
  // Only chunk 0 is durable: it goes at once, then Waiting until 1 and 2
  // are durable, then both in one message.
  Package p = TwoFiles();
  std::vector<bool> durable = All(p, false);
  durable[0] = true;
  Grant(p, {"dp2"}, durable);
  AsyncServe serve(serving_, "dp2", Request(p, {0, 1, 2}));
  ASSERT_TRUE(serve.WaitForWaiting()) << "no Waiting while chunk 1 is not durable";
  EXPECT_FALSE(serve.Result(absl::ZeroDuration()).has_value());
  serving_.Durable(p.id, {1, 2});
  auto s = serve.Result();
  ASSERT_TRUE(s.has_value()) << "Serve did not end once the chunks were durable";
  EXPECT_TRUE(s->ok()) << *s;
  std::vector<Message> all = serve.messages();
  ASSERT_GE(all.size(), 3u);
  EXPECT_FALSE(all.front().waiting);
  EXPECT_THAT(Runs(ChunksOnly(all)), ElementsAre(std::pair{0u, 1u}, std::pair{1u, 2u}));
  EXPECT_FALSE(all.back().waiting);
  EXPECT_EQ(all.back().data, Expected(p, 1, 2, p.tree));
}

TEST_F(PeerServingTest, WaitingKeepsComingWhileOtherPackagesBecomeDurable) {
  // The relay receives package B while a peer waits for chunk 0 of A: B's
  // chunks becoming durable every 50 ms must not hold back A's Waiting,
  // which the peer needs at least every kWaitingEveryMs to keep its
  // silence bound from firing.
  Package a = TwoFiles("1.0");
  Package b = TwoFiles("2.0");
  Grant(a, {"dp2"}, All(a, false));
  Grant(b, {"dp3"}, All(b, false));
  AsyncServe serve(serving_, "dp2", Request(a, {0}));
  std::atomic<bool> stop{false};
  std::thread flusher([&] {
    for (uint32_t i = 0; !stop && i < 60; ++i) {
      serving_.Durable(b.id, {i % 7});
      absl::SleepFor(absl::Milliseconds(50));
    }
  });
  const bool waited = serve.WaitForWaiting(absl::Milliseconds(2500));
  stop = true;
  flusher.join();
  EXPECT_TRUE(waited) << "no Waiting in 2.5 s while another package's chunks became durable";
  serving_.Durable(a.id, {0});
  auto s = serve.Result();
  ASSERT_TRUE(s.has_value());
  EXPECT_TRUE(s->ok()) << *s;
}

TEST_F(PeerServingTest, APeerNotGrantedOrAPackageNotOfferedIsPermissionDenied) {
  Package p = TwoFiles();
  Grant(p, {"dp2", "dp3"}, All(p));
  std::vector<Message> got;
  absl::Status s = Serve("dp4", Request(p, {0}), &got);
  EXPECT_TRUE(absl::IsPermissionDenied(s)) << s;
  EXPECT_THAT(std::string(s.message()), HasSubstr("dp4"));
  FetchChunksRequest unknown = Request(p, {0});
  unknown.set_package_id(std::string(32, 'u'));
  s = Serve("dp2", unknown, &got);
  EXPECT_TRUE(absl::IsPermissionDenied(s)) << s;
  EXPECT_TRUE(got.empty());
  EXPECT_EQ(serving_.served_bytes(), 0u);
}

TEST_F(PeerServingTest, IndicesOutOfRangeOrNotAscendingAreInvalid) {
  Package p = TwoFiles();
  Grant(p, {"dp2"}, All(p));
  for (const std::vector<uint32_t>& bad :
       {std::vector<uint32_t>{7}, {0, 1, 100}, {2, 1}, {1, 1}, {0, 0xffffffffu}}) {
    std::vector<Message> got;
    absl::Status s = Serve("dp2", Request(p, bad), &got);
    EXPECT_TRUE(absl::IsInvalidArgument(s)) << s << " for " << ::testing::PrintToString(bad);
    EXPECT_TRUE(got.empty()) << "served before the indices were checked";
  }
}

TEST_F(PeerServingTest, ForgetEndsAWaitingServeWithNotFound) {
  // Removing another version leaves the grant; removing this one ends the
  // call waiting for its chunk, and later calls are refused.
  Package p = TwoFiles();
  Grant(p, {"dp2"}, All(p, false));
  serving_.Forget("app", "2.0");
  serving_.Forget("other", "1.0");
  EXPECT_TRUE(serving_.Granted(p.id));
  AsyncServe serve(serving_, "dp2", Request(p, {0}));
  ASSERT_TRUE(serve.WaitForWaiting());
  serving_.Forget("app", "1.0");
  auto s = serve.Result();
  ASSERT_TRUE(s.has_value()) << "Forget did not end the waiting call";
  EXPECT_TRUE(absl::IsNotFound(*s)) << *s;
  EXPECT_FALSE(serving_.Granted(p.id));
  std::vector<Message> got;
  EXPECT_TRUE(absl::IsPermissionDenied(Serve("dp2", Request(p, {0}), &got)));
}

TEST_F(PeerServingTest, AGrantAgainTakesTheNewPeersAndFlags) {
  // dp2 was granted with chunks 0 and 1 durable; the next Offer (a resumed
  // transfer, its staging checked again) names dp3 and finds only chunk 2
  // durable: dp2 is refused, dp3 gets chunk 2 at once and waits for 0.
  Package p = TwoFiles();
  std::vector<bool> first = All(p, false);
  first[0] = true;
  Grant(p, {"dp2"}, first);
  serving_.Durable(p.id, {1});
  std::vector<bool> again = All(p, false);
  again[2] = true;
  Grant(p, {"dp3"}, again);
  std::vector<Message> got;
  EXPECT_TRUE(absl::IsPermissionDenied(Serve("dp2", Request(p, {2}), &got)));
  absl::Status s = Serve("dp3", Request(p, {2}), &got);
  ASSERT_TRUE(s.ok()) << s;
  EXPECT_THAT(Runs(got), ElementsAre(std::pair{2u, 1u}));
  EXPECT_EQ(got[0].data, Expected(p, 2, 1, p.tree));
  AsyncServe serve(serving_, "dp3", Request(p, {0, 1}));
  ASSERT_TRUE(serve.WaitForWaiting()) << "a chunk no longer flagged durable was served";
  serving_.Durable(p.id, {0, 1});
  auto done = serve.Result();
  ASSERT_TRUE(done.has_value());
  EXPECT_TRUE(done->ok()) << *done;
  EXPECT_THAT(Runs(ChunksOnly(serve.messages())), ElementsAre(std::pair{0u, 2u}));
}

TEST_F(PeerServingTest, AGrantAgainLetsAWaitingServeGoOn) {
  // A call waiting when the Offer comes again (the relay's own transfer
  // resumed) is served once the chunk is durable.
  Package p = TwoFiles();
  Grant(p, {"dp2"}, All(p, false));
  AsyncServe serve(serving_, "dp2", Request(p, {3}));
  ASSERT_TRUE(serve.WaitForWaiting());
  Grant(p, {"dp2", "dp3"}, All(p, false));
  serving_.Durable(p.id, {3});
  auto s = serve.Result();
  ASSERT_TRUE(s.has_value());
  EXPECT_TRUE(s->ok()) << *s;
  EXPECT_THAT(Runs(ChunksOnly(serve.messages())), ElementsAre(std::pair{3u, 1u}));
}

TEST_F(PeerServingTest, OncePublishedEveryChunkIsReadFromThePublishedTree) {
  // Nothing flagged durable, the staged tree renamed into place as
  // publishing does: Published() serves every chunk, from the new path.
  Package p = TwoFiles();
  Grant(p, {"dp2"}, All(p, false));
  Publish(p);
  serving_.Published(p.id);
  ASSERT_FALSE(std::filesystem::exists(p.tree));
  std::vector<Message> got;
  absl::Status s = Serve("dp2", Request(p, Range(0, 7)), &got);
  ASSERT_TRUE(s.ok()) << s;
  EXPECT_THAT(Runs(got), ElementsAre(std::pair{0u, 4u}, std::pair{4u, 3u}));
  ASSERT_EQ(got.size(), 2u);
  EXPECT_EQ(got[0].data, Expected(p, 0, 4, p.published));
  EXPECT_EQ(got[1].data, Expected(p, 4, 3, p.published));
}

TEST_F(PeerServingTest, PublishedWakesAWaitingServe) {
  Package p = TwoFiles();
  Grant(p, {"dp2"}, All(p, false));
  AsyncServe serve(serving_, "dp2", Request(p, {5, 6}));
  ASSERT_TRUE(serve.WaitForWaiting());
  Publish(p);
  serving_.Published(p.id);
  auto s = serve.Result();
  ASSERT_TRUE(s.has_value()) << "Published() did not wake the waiting call";
  EXPECT_TRUE(s->ok()) << *s;
  std::vector<Message> chunks = ChunksOnly(serve.messages());
  EXPECT_THAT(Runs(chunks), ElementsAre(std::pair{5u, 2u}));
  EXPECT_EQ(chunks.back().data, Expected(p, 5, 2, p.published));
}

TEST_F(PeerServingTest, ADurableChunkIsFoundInThePublishedTreeBeforePublishedIsCalled) {
  // The rename has happened, Published() not yet: the chunk missing from
  // the staged tree is read from the published one.
  Package p = TwoFiles();
  Grant(p, {"dp2"}, All(p));
  Publish(p);
  std::vector<Message> got;
  absl::Status s = Serve("dp2", Request(p, {1, 2, 4}), &got);
  ASSERT_TRUE(s.ok()) << s;
  EXPECT_THAT(Runs(got), ElementsAre(std::pair{1u, 2u}, std::pair{4u, 1u}));
  for (const Message& m : got) EXPECT_EQ(m.data, Expected(p, m.index, m.count, p.published));
}

TEST_F(PeerServingTest, AChunkInNeitherTreeFailsTheCallAsAReadFailure) {
  // Neither tree holds the file (deleted under the agent): the call fails
  // as the header says a failing read does (INTERNAL), not as a grant that
  // ended (NOT_FOUND).
  Package p = TwoFiles();
  Grant(p, {"dp2"}, All(p));
  std::filesystem::remove_all(p.tree);
  std::vector<Message> got;
  absl::Status s = Serve("dp2", Request(p, {0}), &got);
  EXPECT_FALSE(s.ok());
  EXPECT_TRUE(got.empty());
  EXPECT_EQ(s.code(), absl::StatusCode::kInternal) << s;
}

TEST_F(PeerServingTest, ACancelledCallOrAFailedWriteEndsServeCancelled) {
  Package p = TwoFiles();
  Grant(p, {"dp2"}, All(p));
  std::vector<Message> got;
  absl::Status s = Serve("dp2", Request(p, {0}), &got, /*cancelled=*/true);
  EXPECT_TRUE(absl::IsCancelled(s)) << s;
  EXPECT_TRUE(got.empty()) << "a cancelled call was written to";
  int writes = 0;
  s = serving_.Serve(
      "dp2", Request(p, {0, 4}),
      [&writes](const FetchChunksResponse&) {
        ++writes;
        return false;
      },
      [] { return false; });
  EXPECT_TRUE(absl::IsCancelled(s)) << s;
  EXPECT_EQ(writes, 1) << "written to after a write failed";
}

TEST_F(PeerServingTest, ACallCancelledWhileWaitingEnds) {
  Package p = TwoFiles();
  Grant(p, {"dp2"}, All(p, false));
  AsyncServe serve(serving_, "dp2", Request(p, {0}));
  ASSERT_TRUE(serve.WaitForWaiting());
  serve.Cancel();
  auto s = serve.Result(absl::Seconds(3));
  ASSERT_TRUE(s.has_value()) << "a cancelled call kept waiting";
  EXPECT_TRUE(absl::IsCancelled(*s)) << *s;
}

TEST_F(PeerServingTest, GrantsBeyondTheLimitPushOutTheOldest) {
  // kMaxServedPackages grants, the first granted again (newest now), one
  // more: the second is pushed out, and a call waiting on it ends.
  std::vector<Package> p;
  for (size_t i = 0; i <= kMaxServedPackages + 1; ++i) {
    p.push_back(MakePackage(absl::StrCat("v", i), {{"f.bin", testing::Pattern(kChunk, 'f')}}));
  }
  for (size_t i = 0; i < kMaxServedPackages; ++i) Grant(p[i], {"dp2"}, All(p[i], false));
  for (size_t i = 0; i < kMaxServedPackages; ++i) EXPECT_TRUE(serving_.Granted(p[i].id)) << i;
  Grant(p[0], {"dp2"}, All(p[0], false));
  AsyncServe serve(serving_, "dp2", Request(p[1], {0}));
  ASSERT_TRUE(serve.WaitForWaiting());
  Grant(p[kMaxServedPackages], {"dp2"}, All(p[kMaxServedPackages], false));
  EXPECT_TRUE(serving_.Granted(p[0].id)) << "the grant renewed last was pushed out";
  EXPECT_FALSE(serving_.Granted(p[1].id)) << "the oldest grant stayed";
  for (size_t i = 2; i <= kMaxServedPackages; ++i) EXPECT_TRUE(serving_.Granted(p[i].id)) << i;
  auto s = serve.Result();
  ASSERT_TRUE(s.has_value()) << "the call on the pushed-out grant kept waiting";
  EXPECT_TRUE(absl::IsNotFound(*s)) << *s;
}

}  // namespace
}  // namespace pkgdist
