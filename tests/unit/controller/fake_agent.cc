#include "tests/unit/controller/fake_agent.h"

#include "absl/strings/str_cat.h"

namespace pkgdist::testing {

using pkgdist::v1::TransferRequest;
using pkgdist::v1::TransferResponse;

void FakeAgent::Script(std::initializer_list<Behaviour> next) {
  absl::MutexLock l(&mu_);
  script_.insert(script_.end(), next.begin(), next.end());
}

void FakeAgent::SetDefault(Behaviour b) {
  absl::MutexLock l(&mu_);
  default_ = b;
}

void FakeAgent::HangRemovals(bool hang) {
  absl::MutexLock l(&mu_);
  hang_removals_ = hang;
}

Behaviour FakeAgent::Next() {
  absl::MutexLock l(&mu_);
  ++transfers_;
  if (script_.empty()) return default_;
  Behaviour b = script_.front();
  script_.pop_front();
  return b;
}

bool FakeAgent::WaitForTransfers(int n, absl::Duration timeout) {
  return WaitFor(&FakeAgent::transfers_, n, timeout);
}

bool FakeAgent::WaitForRemovals(int n, absl::Duration timeout) {
  return WaitFor(&FakeAgent::removals_, n, timeout);
}

bool FakeAgent::WaitForRemovalsCancelled(int n, absl::Duration timeout) {
  return WaitFor(&FakeAgent::removals_cancelled_, n, timeout);
}

bool FakeAgent::WaitForHangsEnded(int n, absl::Duration timeout) {
  return WaitFor(&FakeAgent::hangs_ended_, n, timeout);
}

bool FakeAgent::WaitFor(int FakeAgent::*count, int n, absl::Duration timeout) {
  absl::MutexLock l(&mu_);
  auto enough = [this, count, n]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return this->*count >= n; };
  return mu_.AwaitWithTimeout(absl::Condition(&enough), timeout);
}

int FakeAgent::transfers() {
  absl::MutexLock l(&mu_);
  return transfers_;
}

int FakeAgent::removals_cancelled() {
  absl::MutexLock l(&mu_);
  return removals_cancelled_;
}

uint64_t FakeAgent::chunk_bytes_received() {
  absl::MutexLock l(&mu_);
  return chunk_bytes_;
}

void FakeAgent::RemovalCancelled() {
  absl::MutexLock l(&mu_);
  ++removals_cancelled_;
}

grpc::Status FakeAgent::Transfer(
    grpc::ServerContext*, grpc::ServerReaderWriter<TransferResponse, TransferRequest>* stream) {
  grpc::Status s = TransferImpl(stream);
  absl::MutexLock l(&mu_);
  ++transfers_ended_;
  return s;
}

bool FakeAgent::WaitForTransfersEnded(int n, absl::Duration timeout) {
  return WaitFor(&FakeAgent::transfers_ended_, n, timeout);
}

grpc::Status FakeAgent::TransferImpl(
    grpc::ServerReaderWriter<TransferResponse, TransferRequest>* stream) {
  const Behaviour b = Next();
  TransferRequest req;
  if (!stream->Read(&req) || !req.has_offer()) {
    return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, "expected an Offer");
  }
  const std::string package_id = req.offer().package_id();
  const int chunks = req.offer().manifest().chunks_size();
  switch (b) {
    case Behaviour::kUnavailable:
      return grpc::Status(grpc::StatusCode::UNAVAILABLE, "scripted failure");
    case Behaviour::kHang:
      while (stream->Read(&req)) {
      }
      {
        absl::MutexLock l(&mu_);
        ++hangs_ended_;
      }
      return grpc::Status(grpc::StatusCode::CANCELLED, "hung until cancelled");
    default:
      break;
  }
  TransferResponse need;
  for (int i = 0; i < chunks; ++i) need.mutable_need()->add_indices(static_cast<uint32_t>(i));
  stream->Write(need);
  if (b == Behaviour::kEndOnSignal) {
    end_signal_.WaitForNotificationWithTimeout(absl::Seconds(30));
    return grpc::Status(grpc::StatusCode::ABORTED, "scripted end");
  }
  while (stream->Read(&req)) {
    if (req.has_chunk()) {
      {
        absl::MutexLock l(&mu_);
        chunk_bytes_ += req.chunk().data().size();
      }
      if (b == Behaviour::kDropMidWindow) {
        return grpc::Status(grpc::StatusCode::ABORTED, "scripted drop mid-window");
      }
      TransferResponse ack;
      ack.mutable_ack()->add_indices(req.chunk().index());
      stream->Write(ack);
    } else if (req.has_commit()) {
      TransferResponse published;
      published.mutable_published()->set_package_id(
          b == Behaviour::kWrongId ? std::string(32, 'x') : package_id);
      stream->Write(published);
      return grpc::Status::OK;
    }
  }
  return grpc::Status(grpc::StatusCode::CANCELLED, "stream ended before Commit");
}

grpc::ServerUnaryReactor* FakeAgent::Remove(grpc::CallbackServerContext* ctx,
                                            const pkgdist::v1::RemoveRequest*,
                                            pkgdist::v1::RemoveResponse*) {
  // Ends only when the caller cancels.
  class Hanging final : public grpc::ServerUnaryReactor {
   public:
    explicit Hanging(FakeAgent* agent) : agent_(agent) {}
    void OnCancel() override {
      agent_->RemovalCancelled();
      Finish(grpc::Status(grpc::StatusCode::CANCELLED, "removal cancelled"));
    }
    void OnDone() override { delete this; }

   private:
    FakeAgent* agent_;
  };
  bool hang;
  {
    absl::MutexLock l(&mu_);
    ++removals_;
    hang = hang_removals_;
  }
  if (hang) return new Hanging(this);
  auto* r = ctx->DefaultReactor();
  r->Finish(grpc::Status::OK);
  return r;
}

FakeAgentServer::FakeAgentServer(const TlsFiles& tls, FakeAgent* agent) {
  grpc::ServerBuilder builder;
  int port = 0;
  builder.AddListeningPort("127.0.0.1:0",
                           MakeServerCredentials(MakeCertificateProvider(tls), tls), &port);
  builder.RegisterService(agent);
  builder.SetMaxReceiveMessageSize(8 << 20);
  server_ = builder.BuildAndStart();
  if (server_ != nullptr && port != 0) address_ = absl::StrCat("127.0.0.1:", port);
}

FakeAgentServer::~FakeAgentServer() {
  if (server_ != nullptr) server_->Shutdown(std::chrono::system_clock::now());
}

}  // namespace pkgdist::testing
