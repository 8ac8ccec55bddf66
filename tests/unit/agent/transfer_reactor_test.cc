// Agent.Transfer through the raw callback method (agent/transfer_reactor.h):
// the real AgentService served in this process over mutual TLS
// (certificates made by certs/gen-dev-certs.sh at test time), called as the
// controller calls it, with ByteBuffers through a generic stub.
#include <dirent.h>

#include <cstdlib>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include <grpcpp/generic/generic_stub.h>
#include <grpcpp/grpcpp.h>
#include <grpcpp/impl/codegen/proto_utils.h>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "agent/agent_service.h"
#include "agent/package_store.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "pkgdist/v1/agent.grpc.pb.h"
#include "shared/chunk_wire.h"
#include "shared/grpc_options.h"
#include "shared/logging.h"
#include "shared/manifest.h"
#include "shared/tls.h"
#include "tests/unit/agent/agent_test_util.h"
#include "tests/unit/agent/dev_certs.h"

namespace pkgdist {
namespace {

using pkgdist::v1::TransferRequest;
using pkgdist::v1::TransferResponse;
using ::testing::HasSubstr;

constexpr uint32_t kChunk = 64 * 1024;
constexpr char kTrustDomain[] = "pkgdist.dev";
constexpr char kTransferMethod[] = "/pkgdist.v1.Agent/Transfer";
// How long any one step of a call may take before the test gives up on it.
constexpr absl::Duration kStep = absl::Seconds(10);

// Threads of this process named `name` (/proc/self/task/*/comm).
int ThreadsNamed(const std::string& name) {
  int n = 0;
  DIR* dir = ::opendir("/proc/self/task");
  if (dir == nullptr) return -1;
  while (dirent* e = ::readdir(dir)) {
    if (e->d_name[0] == '.') continue;
    auto comm = ReadFileToString(absl::StrCat("/proc/self/task/", e->d_name, "/comm"));
    if (comm.ok() && *comm == name + "\n") ++n;
  }
  ::closedir(dir);
  return n;
}

grpc::ByteBuffer Serialize(const TransferRequest& r) {
  grpc::ByteBuffer b;
  bool own = false;
  EXPECT_TRUE(grpc::SerializationTraits<TransferRequest>::Serialize(r, &b, &own).ok());
  return b;
}

// One Agent.Transfer call as raw ByteBuffers, driven one operation at a
// time: each method starts an operation and waits for it (kStep at most).
class RawTransferCall {
 public:
  explicit RawTransferCall(const std::shared_ptr<grpc::Channel>& channel) {
    ctx_.AddMetadata(kJobIdMetadataKey, "job-reactor-test");
    call_ = grpc::GenericStub(channel).PrepareCall(&ctx_, kTransferMethod, &cq_);
    call_->StartCall(this);
    started_ = Await();
  }
  ~RawTransferCall() {
    if (!finished_) {
      ctx_.TryCancel();
      (void)Finish();
    }
    cq_.Shutdown();
    void* tag;
    bool ok;
    while (cq_.Next(&tag, &ok)) {
    }
  }

  bool started() const { return started_; }
  bool Write(const grpc::ByteBuffer& b) {
    call_->Write(b, this);
    return Await();
  }
  bool Write(const TransferRequest& r) { return Write(Serialize(r)); }
  // The next response; nullopt once the call ended (or one did not parse).
  std::optional<TransferResponse> Read() {
    grpc::ByteBuffer b;
    call_->Read(&b, this);
    if (!Await()) return std::nullopt;
    TransferResponse r;
    if (!grpc::SerializationTraits<TransferResponse>::Deserialize(&b, &r).ok()) return std::nullopt;
    return r;
  }
  void Cancel() { ctx_.TryCancel(); }
  // Half-closes (unless cancelled) and returns the call's status.
  grpc::Status Finish() {
    finished_ = true;
    grpc::Status status;
    call_->Finish(&status, this);
    if (!Await()) ADD_FAILURE() << "Finish did not complete";
    return status;
  }
  grpc::Status WritesDoneAndFinish() {
    call_->WritesDone(this);
    (void)Await();
    return Finish();
  }

 private:
  // The outcome of the one operation in flight; a failure if it takes more
  // than kStep (the operation then completes at the destructor's cancel).
  bool Await() {
    void* tag = nullptr;
    bool ok = false;
    auto got = cq_.AsyncNext(&tag, &ok, absl::ToChronoTime(absl::Now() + kStep));
    if (got != grpc::CompletionQueue::GOT_EVENT) {
      ADD_FAILURE() << "a call operation took more than " << kStep;
      return false;
    }
    return ok;
  }

  grpc::ClientContext ctx_;
  grpc::CompletionQueue cq_;
  std::unique_ptr<grpc::GenericClientAsyncReaderWriter> call_;
  bool started_ = false;
  bool finished_ = false;
};

class TransferReactorTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    certs_ = testing::DevCerts::Generate({"dp1", "dp2"});
    ASSERT_NE(certs_, nullptr);
  }
  static void TearDownTestSuite() { certs_.reset(); }
  static TlsFiles Tls(const std::string& stem) { return certs_->Tls(stem); }

  TransferReactorTest() : tmp_(testing::MakeTempDir()), src_(tmp_.path() + "/src") {
    testing::WriteFile(src_ + "/data.bin", testing::Pattern(5 * kChunk + 777, 'r'));
    testing::WriteFile(src_ + "/etc/app.conf", "key = value\n");
    manifest_ = testing::ManifestOf(src_, "app", "1.0", kChunk);  // chunks 0-5 data, 6 conf
    PackageStoreOptions options;
    options.reserve_bytes = 0;
    options.free_bytes = [](const std::string&) -> absl::StatusOr<uint64_t> {
      return uint64_t{1} << 40;
    };
    store_ = std::move(PackageStore::Open(tmp_.path() + "/agent-root", options)).value();
    service_ = std::make_unique<AgentService>(*store_, TransferOptions(),
                                              SpiffeId{kTrustDomain, "controller", ""});
    grpc::ServerBuilder builder;
    ConfigureAgentServer(builder);
    const TlsFiles tls = Tls("dp1");
    builder.AddListeningPort("127.0.0.1:0",
                             MakeServerCredentials(MakeCertificateProvider(tls), tls), &port_);
    builder.RegisterService(service_.get());
    server_ = builder.BuildAndStart();
  }
  ~TransferReactorTest() override {
    ShutdownServer();
    service_.reset();  // waits for the session threads
  }

  void SetUp() override { ASSERT_TRUE(server_ != nullptr && port_ != 0) << "no server"; }

  // Shuts the server down, cancelling the calls still running.
  void ShutdownServer() {
    if (server_ == nullptr) return;
    server_->Shutdown(absl::ToChronoTime(absl::Now()));
    server_->Wait();
    server_.reset();
  }

  // A channel to the agent as `stem` (the controller, or an intruder).
  std::shared_ptr<grpc::Channel> Channel(const std::string& stem = "controller") {
    const TlsFiles tls = Tls(stem);
    return grpc::CreateCustomChannel(
        absl::StrCat("127.0.0.1:", port_),
        MakeChannelCredentials(MakeCertificateProvider(tls), tls,
                               SpiffeId{kTrustDomain, "agent", "dp1"}),
        AgentChannelArgs());
  }

  TransferRequest Offer() {
    TransferRequest r;
    *r.mutable_offer()->mutable_manifest() = manifest_;
    r.mutable_offer()->set_package_id(PackageId(manifest_));
    r.mutable_offer()->set_window_bytes(8 << 20);
    return r;
  }
  // Chunks first..first+count-1 as the controller sends them: their data
  // its own slice (shared/chunk_wire.h).
  grpc::ByteBuffer Chunks(uint32_t first, uint32_t count) {
    std::string data;
    for (uint32_t i = first; i < first + count; ++i) {
      data += testing::ChunkData(manifest_, src_, i);
    }
    return EncodeChunkRequest(first, count > 1 ? count : 0, grpc::Slice(data));
  }
  static TransferRequest Commit() {
    TransferRequest r;
    r.mutable_commit();
    return r;
  }
  // Reads responses until every index in `outstanding` is acknowledged.
  static void ReadAcks(RawTransferCall& call, std::set<uint32_t> outstanding) {
    while (!outstanding.empty()) {
      std::optional<TransferResponse> r = call.Read();
      ASSERT_TRUE(r.has_value()) << "the call ended with " << outstanding.size()
                                 << " chunks unacknowledged";
      ASSERT_TRUE(r->has_ack()) << "expected an ack, got " << r->ShortDebugString();
      for (uint32_t i : r->ack().indices()) outstanding.erase(i);
    }
  }
  std::string Published(const std::string& path) {
    return testing::ReadFile(tmp_.path() + "/agent-root/packages/app/1.0/" + path);
  }

  static inline std::unique_ptr<testing::DevCerts> certs_;
  TempDir tmp_;
  std::string src_;
  pkgdist::v1::Manifest manifest_;
  std::unique_ptr<PackageStore> store_;
  std::unique_ptr<AgentService> service_;
  std::unique_ptr<grpc::Server> server_;
  int port_ = 0;
};

TEST_F(TransferReactorTest, AMultiChunkTransferThroughTheRawMethodPublishesTheRightBytes) {
  // Offer, Need, chunks as the controller encodes them (runs of several and
  // single ones, data in its own slice), Acks, Commit, Published: the
  // published files are the source's, byte for byte.
  RawTransferCall call(Channel());
  ASSERT_TRUE(call.started());
  ASSERT_TRUE(call.Write(Offer()));
  std::optional<TransferResponse> need = call.Read();
  ASSERT_TRUE(need.has_value() && need->has_need()) << "no Need";
  ASSERT_EQ(need->need().indices_size(), 7);
  EXPECT_EQ(service_->running_transfers(), 1u);
  ASSERT_TRUE(call.Write(Chunks(0, 3)));  // a run within data.bin
  ASSERT_TRUE(call.Write(Chunks(3, 1)));
  ASSERT_TRUE(call.Write(Chunks(4, 2)));
  ASSERT_TRUE(call.Write(Chunks(6, 1)));  // app.conf
  ReadAcks(call, {0, 1, 2, 3, 4, 5, 6});
  ASSERT_TRUE(call.Write(Commit()));
  std::optional<TransferResponse> published = call.Read();
  ASSERT_TRUE(published.has_value() && published->has_published()) << "no Published";
  EXPECT_EQ(published->published().package_id(), PackageId(manifest_));
  grpc::Status status = call.WritesDoneAndFinish();
  EXPECT_TRUE(status.ok()) << status.error_message();
  EXPECT_TRUE(Published("data.bin") == testing::ReadFile(src_ + "/data.bin"))
      << "data.bin differs from the source";
  EXPECT_EQ(Published("etc/app.conf"), "key = value\n");
  EXPECT_TRUE(service_->WaitForTransfers(kStep)) << "the session thread did not end";
}

TEST_F(TransferReactorTest, GarbageBytesEndTheCallWithInvalidArgumentAndTheAgentStaysUp) {
  // Bytes that are no TransferRequest: INVALID_ARGUMENT saying so; the next
  // call (Inventory, and a Transfer's Offer) is served as usual.
  {
    RawTransferCall call(Channel());
    ASSERT_TRUE(call.started());
    const std::string garbage = "\xff\xff\xff\xff garbage, not a TransferRequest";
    grpc::Slice slice(garbage);
    ASSERT_TRUE(call.Write(grpc::ByteBuffer(&slice, 1)));
    EXPECT_FALSE(call.Read().has_value());
    grpc::Status status = call.Finish();
    EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << status.error_message();
    EXPECT_THAT(status.error_message(), HasSubstr("does not parse"));
  }
  EXPECT_TRUE(service_->WaitForTransfers(kStep)) << "the session thread did not end";
  auto stub = pkgdist::v1::Agent::NewStub(Channel());
  grpc::ClientContext ctx;
  ctx.set_deadline(absl::ToChronoTime(absl::Now() + kStep));
  pkgdist::v1::InventoryResponse inventory;
  grpc::Status s = stub->Inventory(&ctx, pkgdist::v1::InventoryRequest(), &inventory);
  EXPECT_TRUE(s.ok()) << s.error_message();
  RawTransferCall next(Channel());
  ASSERT_TRUE(next.Write(Offer()));
  std::optional<TransferResponse> need = next.Read();
  EXPECT_TRUE(need.has_value() && need->has_need()) << "the next Transfer got no Need";
}

TEST_F(TransferReactorTest, ACallerThatIsNotTheControllerIsRefused) {
  // An agent's certificate is valid but not the controller's: PERMISSION_DENIED,
  // and no session starts.
  RawTransferCall call(Channel("dp2"));
  (void)call.Write(Offer());
  EXPECT_FALSE(call.Read().has_value());
  grpc::Status status = call.Finish();
  EXPECT_EQ(status.error_code(), grpc::StatusCode::PERMISSION_DENIED) << status.error_message();
  EXPECT_EQ(service_->running_transfers(), 0u);
}

TEST_F(TransferReactorTest, AClientCancellingMidTransferEndsTheSessionThread) {
  // The session is blocked reading the next chunk when the client cancels:
  // its thread ends, none is left behind, and the server shuts down at once.
  RawTransferCall call(Channel());
  ASSERT_TRUE(call.Write(Offer()));
  ASSERT_TRUE(call.Read().has_value());
  ASSERT_TRUE(call.Write(Chunks(0, 1)));
  EXPECT_EQ(service_->running_transfers(), 1u);
  EXPECT_EQ(ThreadsNamed("pkgdist-xfer"), 1);
  call.Cancel();
  EXPECT_TRUE(service_->WaitForTransfers(kStep)) << "the session thread outlived the cancel";
  EXPECT_EQ(ThreadsNamed("pkgdist-xfer"), 0) << "a session thread was left running";
  const absl::Time start = absl::Now();
  ShutdownServer();
  EXPECT_LT(absl::Now() - start, kStep) << "the server took too long to shut down";
}

TEST_F(TransferReactorTest, ShuttingTheServerDownMidTransferEndsTheSessionThread) {
  // A session waiting for chunks is cancelled by the server's shutdown:
  // Shutdown returns, and the session thread ends with it.
  RawTransferCall call(Channel());
  ASSERT_TRUE(call.Write(Offer()));
  ASSERT_TRUE(call.Read().has_value());
  EXPECT_EQ(service_->running_transfers(), 1u);
  const absl::Time start = absl::Now();
  ShutdownServer();
  EXPECT_LT(absl::Now() - start, kStep) << "the server took too long to shut down";
  EXPECT_TRUE(service_->WaitForTransfers(kStep)) << "the session thread outlived the shutdown";
  EXPECT_EQ(ThreadsNamed("pkgdist-xfer"), 0) << "a session thread was left running";
}

}  // namespace
}  // namespace pkgdist
