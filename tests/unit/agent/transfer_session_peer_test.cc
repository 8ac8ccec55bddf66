// TransferSession with relays (docs/sites.md "Relays"): an agent that serves
// a package to its site's peers (TransferOptions.serving), and an agent that
// fetches its chunks from the source an Offer names (TransferOptions.peers)
// from a relay served in this process (the real AgentService over mutual TLS,
// certificates made by certs/gen-dev-certs.sh at test time).
#include <atomic>
#include <cstdlib>
#include <deque>
#include <filesystem>
#include <functional>
#include <memory>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include <grpcpp/grpcpp.h>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "agent/agent_service.h"
#include "agent/peer_fetch.h"
#include "agent/peer_serving.h"
#include "agent/transfer_session.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/unit/agent/fake_transfer_stream.h"
#include "shared/manifest.h"
#include "shared/sha256.h"
#include "shared/tls.h"
#include "tests/unit/agent/agent_test_util.h"
#include "tests/unit/agent/dev_certs.h"

namespace pkgdist {
namespace {

using pkgdist::v1::TransferRequest;
using pkgdist::v1::TransferResponse;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::IsEmpty;

constexpr uint32_t kChunk = 4096;
constexpr char kTrustDomain[] = "pkgdist.dev";

std::vector<uint32_t> Indices(const google::protobuf::RepeatedField<uint32_t>& f) {
  return std::vector<uint32_t>(f.begin(), f.end());
}

using pkgdist::testing::FakeStream;

// A relay that accepts FetchChunks and then says nothing, as a frozen agent.
class FrozenRelay final : public pkgdist::v1::Agent::Service {
 public:
  grpc::Status FetchChunks(grpc::ServerContext* ctx, const pkgdist::v1::FetchChunksRequest*,
                           grpc::ServerWriter<pkgdist::v1::FetchChunksResponse>*) override {
    calls_++;
    while (!ctx->IsCancelled()) absl::SleepFor(absl::Milliseconds(10));
    return grpc::Status(grpc::StatusCode::CANCELLED, "frozen");
  }
  std::atomic<int> calls_{0};
};

// Serves `service` on 127.0.0.1:0 with the certificate of `tls`.
class Server {
 public:
  Server(const TlsFiles& tls, grpc::Service* service) {
    grpc::ServerBuilder builder;
    int port = 0;
    builder.AddListeningPort("127.0.0.1:0",
                             MakeServerCredentials(MakeCertificateProvider(tls), tls), &port);
    builder.RegisterService(service);
    server_ = builder.BuildAndStart();
    if (server_ != nullptr && port != 0) address_ = absl::StrCat("127.0.0.1:", port);
  }
  ~Server() {
    if (server_ != nullptr) server_->Shutdown(std::chrono::system_clock::now());
  }
  const std::string& address() const { return address_; }

 private:
  std::unique_ptr<grpc::Server> server_;
  std::string address_;
};

class TransferSessionPeerTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    certs_ = testing::DevCerts::Generate({"dp1", "dp2", "dp3"});
    ASSERT_NE(certs_, nullptr);
  }
  static void TearDownTestSuite() { certs_.reset(); }
  static TlsFiles Tls(const std::string& stem) { return certs_->Tls(stem); }

  TransferSessionPeerTest() : tmp_(testing::MakeTempDir()), src_(tmp_.path() + "/src") {
    testing::WriteFile(src_ + "/data.bin", testing::Pattern(4 * kChunk, 'd'));
    testing::WriteFile(src_ + "/etc/app.conf", "key = value\n");
    manifest_ = testing::ManifestOf(src_, "app", "1.0", kChunk);  // chunks 0-3 data, 4 conf
    id_ = PackageId(manifest_);
    store_ = OpenStore("agent-root");
  }
  std::unique_ptr<PackageStore> OpenStore(const std::string& dir) {
    PackageStoreOptions options;
    options.reserve_bytes = 0;
    options.free_bytes = [](const std::string&) -> absl::StatusOr<uint64_t> {
      return uint64_t{1} << 40;
    };
    return std::move(PackageStore::Open(tmp_.path() + "/" + dir, options)).value();
  }

  TransferRequest Offer(uint64_t window = 1 << 20) {
    TransferRequest r;
    *r.mutable_offer()->mutable_manifest() = manifest_;
    r.mutable_offer()->set_package_id(id_);
    r.mutable_offer()->set_window_bytes(window);
    return r;
  }
  TransferRequest OfferFrom(const std::string& agent, const std::string& address,
                            uint32_t silence_ms = 3000) {
    TransferRequest r = Offer();
    r.mutable_offer()->mutable_source()->set_agent(agent);
    r.mutable_offer()->mutable_source()->set_address(address);
    r.mutable_offer()->set_source_silence_ms(silence_ms);
    return r;
  }
  TransferRequest Chunk(uint32_t index) {
    TransferRequest r;
    r.mutable_chunk()->set_index(index);
    r.mutable_chunk()->set_data(testing::ChunkData(manifest_, src_, index));
    return r;
  }
  static TransferRequest Commit() {
    TransferRequest r;
    r.mutable_commit();
    return r;
  }

  // Acts as the controller: sends the chunks a Need asks for (peer chunks
  // it waits for, as for sent ones) and commits once every chunk is acked.
  void ReactLikeAController(FakeStream& stream) {
    stream.on_write = [this, &stream](const TransferResponse& r) {
      if (r.has_need()) {
        for (uint32_t i : r.need().indices()) {
          outstanding_.insert(i);
          stream.requests.push_back(Chunk(i));
          ++sent_;
        }
        for (uint32_t i : r.need().peer()) outstanding_.insert(i);
        if (!r.need().source_failed().empty()) source_failed_.push_back(r.need().source_failed());
      }
      if (r.has_ack()) {
        if (r.ack().indices().empty()) ++empty_acks_;
        for (uint32_t i : r.ack().indices()) {
          acked_.insert(i);
          outstanding_.erase(i);
        }
      }
      if ((r.has_need() && !r.need().more()) || r.has_ack()) {
        if (outstanding_.empty() && !committed_) {
          committed_ = true;
          stream.requests.push_back(Commit());
        }
      }
    };
  }

  absl::Status Run(FakeStream& stream, const TransferOptions& options) {
    TransferSession session(*store_, options, stream, [] {}, "test-controller");
    return session.Run();
  }
  std::vector<TransferResponse> Responses(FakeStream& stream) {
    absl::MutexLock l(&stream.mu);
    return stream.responses;
  }
  std::string Published(const std::string& path) {
    return testing::ReadFile(tmp_.path() + "/agent-root/packages/app/1.0/" + path);
  }
  void ExpectPublishedIntact() {
    EXPECT_EQ(Published("data.bin"), testing::ReadFile(src_ + "/data.bin"));
    EXPECT_EQ(Published("etc/app.conf"), "key = value\n");
  }

  // A relay (dp1) in this process: the real AgentService with `serving`.
  void StartRelay() {
    relay_store_ = OpenStore("relay-root");
    TransferOptions o;
    o.serving = &relay_serving_;
    relay_service_ = std::make_unique<AgentService>(*relay_store_, o,
                                                    SpiffeId{kTrustDomain, "controller", ""});
    relay_ = std::make_unique<Server>(Tls("dp1"), relay_service_.get());
    ASSERT_FALSE(relay_->address().empty()) << "the relay did not start";
  }
  // The relay grants `peers` the package, staged in `tree` (a copy of the
  // source), with the chunks in `durable` durable.
  void GrantAtRelay(std::vector<std::string> peers, const std::string& tree,
                    std::vector<bool> durable) {
    relay_serving_.Grant(id_, manifest_, std::move(peers), tree, tmp_.path() + "/nowhere",
                         std::move(durable));
  }
  std::string CopyOfSource(const std::string& name) {
    const std::string dest = tmp_.path() + "/" + name;
    std::filesystem::copy(src_, dest, std::filesystem::copy_options::recursive);
    return dest;
  }
  TransferOptions PeerOptions() {
    TransferOptions o;
    o.peers = &fetcher_;
    return o;
  }

  static inline std::unique_ptr<testing::DevCerts> certs_;
  TempDir tmp_;
  std::string src_;
  pkgdist::v1::Manifest manifest_;
  std::string id_;
  std::unique_ptr<PackageStore> store_;

  PeerServing relay_serving_;
  std::unique_ptr<PackageStore> relay_store_;
  std::unique_ptr<AgentService> relay_service_;
  std::unique_ptr<Server> relay_;
  PeerFetcher fetcher_{Tls("dp2"), kTrustDomain, 8 << 20};

  // Written by ReactLikeAController, under the stream's lock.
  std::set<uint32_t> outstanding_, acked_;
  std::vector<std::string> source_failed_;
  int sent_ = 0, empty_acks_ = 0;
  bool committed_ = false;
};

TEST_F(TransferSessionPeerTest, WithoutAFetcherAnOfferWithASourceIsServedByTheController) {
  // TransferOptions.peers unset: the source is ignored, every chunk needed.
  FakeStream stream;
  ReactLikeAController(stream);
  stream.requests.push_back(OfferFrom("dp1", "127.0.0.1:1"));
  absl::Status s = Run(stream, TransferOptions{});
  ASSERT_TRUE(s.ok()) << s;
  auto responses = Responses(stream);
  ASSERT_FALSE(responses.empty());
  EXPECT_THAT(Indices(responses.front().need().indices()), ElementsAre(0, 1, 2, 3, 4));
  EXPECT_THAT(Indices(responses.front().need().peer()), IsEmpty());
  EXPECT_TRUE(responses.back().has_published());
  EXPECT_EQ(sent_, 5);
  ExpectPublishedIntact();
}

TEST_F(TransferSessionPeerTest, AnOfferWithServePeersGrantsThePackageAsItsChunksBecomeDurable) {
  // The relay's own transfer: once chunks 0 and 1 are acknowledged (durable)
  // dp2 may fetch them; after Commit every chunk is served from the
  // published tree, the staging being gone.
  PeerServing serving;
  TransferOptions options;
  options.serving = &serving;
  FakeStream stream;
  stream.wait_for_more = true;
  TransferRequest offer = Offer(2 * kChunk);
  offer.mutable_offer()->add_serve_peers("dp2");
  {
    absl::MutexLock l(&stream.mu);
    stream.requests.push_back(offer);
    stream.requests.push_back(Chunk(0));
    stream.requests.push_back(Chunk(1));
  }
  std::set<uint32_t> acked;
  stream.on_write = [&](const TransferResponse& r) {
    if (!r.has_ack()) return;
    acked.insert(r.ack().indices().begin(), r.ack().indices().end());
    if (acked.size() == 5) stream.requests.push_back(Commit());
  };
  absl::Status result;
  std::thread session([&] { result = Run(stream, options); });
  ASSERT_TRUE(stream.WaitUntil([&] { return acked.count(0) && acked.count(1); }))
      << "chunks 0 and 1 were not acknowledged";
  EXPECT_TRUE(serving.Granted(id_));
  auto serve = [&](const std::vector<uint32_t>& indices, std::string* data) {
    pkgdist::v1::FetchChunksRequest req;
    req.set_package_id(id_);
    req.mutable_indices()->Assign(indices.begin(), indices.end());
    return serving.Serve(
        "dp2", req,
        [data](const pkgdist::v1::FetchChunksResponse& r) {
          if (r.has_chunk()) *data += r.chunk().data();
          return true;
        },
        [] { return false; });
  };
  std::string data;
  absl::Status s = serve({0, 1}, &data);
  EXPECT_TRUE(s.ok()) << s;
  EXPECT_EQ(data, testing::ChunkData(manifest_, src_, 0) + testing::ChunkData(manifest_, src_, 1));
  {
    absl::MutexLock l(&stream.mu);
    for (uint32_t i = 2; i < 5; ++i) stream.requests.push_back(Chunk(i));
  }
  session.join();
  ASSERT_TRUE(result.ok()) << result;
  ASSERT_FALSE(std::filesystem::exists(store_->StagingDir(ToHex(id_)))) << "staging left behind";
  data.clear();
  s = serve({0, 1, 2, 3, 4}, &data);
  EXPECT_TRUE(s.ok()) << s;
  std::string all;
  for (uint32_t i = 0; i < 5; ++i) all += testing::ChunkData(manifest_, src_, i);
  EXPECT_EQ(data, all);
}

TEST_F(TransferSessionPeerTest, AnAlreadyPublishedPackageOfferedWithServePeersIsServed) {
  // The relay already holds the package: it answers Published and serves it.
  PeerServing serving;
  TransferOptions options;
  options.serving = &serving;
  FakeStream first;
  ReactLikeAController(first);
  first.requests.push_back(Offer());
  ASSERT_TRUE(Run(first, options).ok());
  EXPECT_FALSE(serving.Granted(id_)) << "granted without serve_peers";
  FakeStream second;
  TransferRequest offer = Offer();
  offer.mutable_offer()->add_serve_peers("dp2");
  second.requests.push_back(offer);
  ASSERT_TRUE(Run(second, options).ok());
  ASSERT_TRUE(Responses(second).back().has_published());
  EXPECT_TRUE(serving.Granted(id_));
  pkgdist::v1::FetchChunksRequest req;
  req.set_package_id(id_);
  for (uint32_t i = 0; i < 5; ++i) req.add_indices(i);
  std::string data;
  absl::Status s = serving.Serve(
      "dp2", req,
      [&data](const pkgdist::v1::FetchChunksResponse& r) {
        data += r.chunk().data();
        return true;
      },
      [] { return false; });
  EXPECT_TRUE(s.ok()) << s;
  EXPECT_EQ(data.size(), manifest_.total_size());
}

TEST_F(TransferSessionPeerTest, APeerFetchesEveryChunkFromItsSource) {
  // dp2 with dp1 as its source: the first Need lists every chunk as peer,
  // dp1 serves them over mutual TLS, dp2 acknowledges them all and
  // publishes; the controller sends nothing.
  StartRelay();
  GrantAtRelay({"dp2"}, CopyOfSource("relay-tree"), std::vector<bool>(5, true));
  FakeStream stream;
  ReactLikeAController(stream);
  stream.requests.push_back(OfferFrom("dp1", relay_->address()));
  absl::Status s = Run(stream, PeerOptions());
  ASSERT_TRUE(s.ok()) << s;
  auto responses = Responses(stream);
  ASSERT_FALSE(responses.empty());
  EXPECT_THAT(Indices(responses.front().need().indices()), IsEmpty());
  EXPECT_THAT(Indices(responses.front().need().peer()), ElementsAre(0, 1, 2, 3, 4));
  EXPECT_THAT(acked_, ElementsAre(0, 1, 2, 3, 4));
  EXPECT_THAT(source_failed_, IsEmpty());
  EXPECT_EQ(sent_, 0);
  EXPECT_TRUE(responses.back().has_published());
  ExpectPublishedIntact();
  EXPECT_EQ(relay_serving_.served_bytes(), manifest_.total_size());
}

TEST_F(TransferSessionPeerTest, AChunkTheSourceCorruptedIsRefusedAndAskedOfTheController) {
  // dp1's copy of chunk 2 has a flipped byte: dp2 keeps 0 and 1, asks the
  // controller for the rest naming why, and publishes the right bytes.
  StartRelay();
  const std::string tree = CopyOfSource("relay-tree");
  std::string data = testing::ReadFile(tree + "/data.bin");
  data[2 * kChunk + 5] ^= 1;
  testing::WriteFile(tree + "/data.bin", data);
  GrantAtRelay({"dp2"}, tree, std::vector<bool>(5, true));
  FakeStream stream;
  ReactLikeAController(stream);
  stream.requests.push_back(OfferFrom("dp1", relay_->address()));
  absl::Status s = Run(stream, PeerOptions());
  ASSERT_TRUE(s.ok()) << s;
  std::vector<std::vector<uint32_t>> needs;
  for (const auto& r : Responses(stream)) {
    if (r.has_need()) needs.push_back(Indices(r.need().indices()));
  }
  EXPECT_THAT(needs, ElementsAre(IsEmpty(), ElementsAre(2, 3, 4)));
  ASSERT_EQ(source_failed_.size(), 1u);
  EXPECT_THAT(source_failed_[0], HasSubstr("dp1"));
  EXPECT_EQ(sent_, 3);
  EXPECT_THAT(acked_, ElementsAre(0, 1, 2, 3, 4));
  ExpectPublishedIntact();
}

TEST_F(TransferSessionPeerTest, ASourceWhoseCertificateIsAnotherAgentsIsNotTrusted) {
  // The Offer names dp3 at dp1's address: dp1's certificate does not prove
  // dp3, so nothing is taken from it; the controller sends every chunk.
  StartRelay();
  GrantAtRelay({"dp2"}, CopyOfSource("relay-tree"), std::vector<bool>(5, true));
  FakeStream stream;
  ReactLikeAController(stream);
  stream.requests.push_back(OfferFrom("dp3", relay_->address()));
  absl::Status s = Run(stream, PeerOptions());
  ASSERT_TRUE(s.ok()) << s;
  ASSERT_EQ(source_failed_.size(), 1u);
  EXPECT_THAT(source_failed_[0], HasSubstr("dp3"));
  EXPECT_EQ(sent_, 5);
  EXPECT_EQ(relay_serving_.served_bytes(), 0u);
  ExpectPublishedIntact();
}

TEST_F(TransferSessionPeerTest, ASourceThatDidNotGrantThisAgentRefusesAndTheControllerSends) {
  // dp1 serves the package to dp3 only: dp2 is refused (PERMISSION_DENIED)
  // and falls back to the controller.
  StartRelay();
  GrantAtRelay({"dp3"}, CopyOfSource("relay-tree"), std::vector<bool>(5, true));
  FakeStream stream;
  ReactLikeAController(stream);
  stream.requests.push_back(OfferFrom("dp1", relay_->address()));
  absl::Status s = Run(stream, PeerOptions());
  ASSERT_TRUE(s.ok()) << s;
  ASSERT_EQ(source_failed_.size(), 1u);
  EXPECT_THAT(source_failed_[0], HasSubstr("not named as a peer"));
  EXPECT_EQ(sent_, 5);
  ExpectPublishedIntact();
}

TEST_F(TransferSessionPeerTest, ASilentSourceIsGivenUpAfterItsSilenceBound) {
  // A frozen relay accepts the call and sends nothing: after
  // source_silence_ms (1 s) dp2 asks the controller for every chunk.
  FrozenRelay frozen;
  Server server(Tls("dp1"), &frozen);
  ASSERT_FALSE(server.address().empty());
  FakeStream stream;
  ReactLikeAController(stream);
  stream.requests.push_back(OfferFrom("dp1", server.address(), 1000));
  const absl::Time start = absl::Now();
  absl::Status s = Run(stream, PeerOptions());
  ASSERT_TRUE(s.ok()) << s;
  EXPECT_GE(absl::Now() - start, absl::Seconds(1));
  EXPECT_GE(frozen.calls_.load(), 1);
  ASSERT_EQ(source_failed_.size(), 1u);
  EXPECT_THAT(source_failed_[0], HasSubstr("no message"));
  EXPECT_EQ(sent_, 5);
  ExpectPublishedIntact();
}

TEST_F(TransferSessionPeerTest, WhileTheSourceWaitsThePeerTellsTheControllerItIsAlive) {
  // dp1 holds nothing yet: dp2 waits on its Waiting messages, sending the
  // controller an empty Ack at least every second, and takes the chunks as
  // soon as dp1 has them.
  StartRelay();
  GrantAtRelay({"dp2"}, CopyOfSource("relay-tree"), std::vector<bool>(5, false));
  FakeStream stream;
  ReactLikeAController(stream);
  stream.wait_for_more = true;
  {
    absl::MutexLock l(&stream.mu);
    stream.requests.push_back(OfferFrom("dp1", relay_->address()));
  }
  absl::Status result;
  std::thread session([&] { result = Run(stream, PeerOptions()); });
  const bool alive = stream.WaitUntil([this] { return empty_acks_ > 0; });
  relay_serving_.Durable(id_, {0, 1, 2, 3, 4});
  session.join();
  EXPECT_TRUE(alive) << "no empty Ack while the source waited";
  ASSERT_TRUE(result.ok()) << result;
  {
    absl::MutexLock l(&stream.mu);
    EXPECT_THAT(source_failed_, IsEmpty());
    EXPECT_EQ(sent_, 0);
    EXPECT_THAT(acked_, ElementsAre(0, 1, 2, 3, 4));
  }
  ExpectPublishedIntact();
}

}  // namespace
}  // namespace pkgdist
