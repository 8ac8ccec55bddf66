#include "tests/unit/controller/fake_agent.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "shared/manifest.h"
#include "shared/manifest_delta.h"

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

void FakeAgent::FailSource(bool fail) {
  absl::MutexLock l(&mu_);
  fail_source_ = fail;
}

std::vector<pkgdist::v1::Offer> FakeAgent::offers() {
  absl::MutexLock l(&mu_);
  return offers_;
}

void FakeAgent::HangRemovals(bool hang) {
  absl::MutexLock l(&mu_);
  hang_removals_ = hang;
}

void FakeAgent::SplitFirstNeed(size_t per_message, int local_every) {
  absl::MutexLock l(&mu_);
  need_per_message_ = per_message;
  local_every_ = local_every;
}

std::string FakeAgent::last_manifest_id() {
  absl::MutexLock l(&mu_);
  return last_manifest_id_;
}

int FakeAgent::last_manifest_parts() {
  absl::MutexLock l(&mu_);
  return last_manifest_parts_;
}

size_t FakeAgent::largest_manifest_message() {
  absl::MutexLock l(&mu_);
  return largest_manifest_message_;
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

bool FakeAgent::WaitForOffers(size_t n, absl::Duration timeout) {
  absl::MutexLock l(&mu_);
  auto enough = [this, n]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return offers_.size() >= n; };
  return mu_.AwaitWithTimeout(absl::Condition(&enough), timeout);
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

uint64_t FakeAgent::chunk_messages_received() {
  absl::MutexLock l(&mu_);
  return chunk_messages_;
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
  pkgdist::v1::Offer offer;
  if (grpc::Status error; !ReadOffer(stream, &offer, &error)) return error;
  const std::string package_id = offer.package_id();
  const int chunks = offer.manifest().chunks_size();
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
  if (b == Behaviour::kAnswerOnSignal) {
    answer_signal_.WaitForNotificationWithTimeout(absl::Seconds(30));
  }
  if (b == Behaviour::kHaveAll) {
    TransferResponse need;
    need.mutable_need();
    stream->Write(need);
  } else if (offer.has_source()) {
    // As if fetched from the source: acknowledged by the agent itself, or
    // (the source failing) asked of the controller.
    TransferResponse need;
    for (int i = 0; i < chunks; ++i) need.mutable_need()->add_peer(static_cast<uint32_t>(i));
    stream->Write(need);
    bool fail;
    {
      absl::MutexLock l(&mu_);
      fail = fail_source_;
    }
    TransferResponse next;
    if (fail) {
      for (int i = 0; i < chunks; ++i) next.mutable_need()->add_indices(static_cast<uint32_t>(i));
      next.mutable_need()->set_source_failed(
          absl::StrCat(offer.source().agent(), ": scripted source failure"));
    } else {
      for (int i = 0; i < chunks; ++i) next.mutable_ack()->add_indices(static_cast<uint32_t>(i));
    }
    stream->Write(next);
  } else {
    std::vector<uint32_t> local = SendFirstNeed(stream, chunks);
    if (!local.empty()) {
      TransferResponse ack;
      ack.mutable_ack()->mutable_indices()->Assign(local.begin(), local.end());
      stream->Write(ack);
    }
  }
  if (b == Behaviour::kEndOnSignal) {
    end_signal_.WaitForNotificationWithTimeout(absl::Seconds(30));
    return grpc::Status(grpc::StatusCode::ABORTED, "scripted end");
  }
  while (stream->Read(&req)) {
    if (req.has_chunk()) {
      {
        absl::MutexLock l(&mu_);
        chunk_bytes_ += req.chunk().data().size();
        ++chunk_messages_;
      }
      if (b == Behaviour::kDropMidWindow) {
        return grpc::Status(grpc::StatusCode::ABORTED, "scripted drop mid-window");
      }
      TransferResponse ack;  // every chunk of the message's run
      const uint32_t count = std::max<uint32_t>(req.chunk().count(), 1);
      for (uint32_t i = 0; i < count; ++i) ack.mutable_ack()->add_indices(req.chunk().index() + i);
      stream->Write(ack);
    } else if (req.has_commit()) {
      if (b == Behaviour::kPublishOnSignal) {
        publish_signal_.WaitForNotificationWithTimeout(absl::Seconds(30));
      }
      TransferResponse published;
      published.mutable_published()->set_package_id(
          b == Behaviour::kWrongId ? std::string(32, 'x') : package_id);
      stream->Write(published);
      return grpc::Status::OK;
    }
  }
  return grpc::Status(grpc::StatusCode::CANCELLED, "stream ended before Commit");
}

bool FakeAgent::ReadOffer(grpc::ServerReaderWriter<TransferResponse, TransferRequest>* stream,
                          pkgdist::v1::Offer* offer, grpc::Status* error) {
  TransferRequest req;
  if (!stream->Read(&req) || !req.has_offer()) {
    *error = grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, "expected an Offer");
    return false;
  }
  size_t largest = req.ByteSizeLong();
  offer->Swap(req.mutable_offer());
  {
    pkgdist::v1::Offer seen = *offer;
    seen.clear_manifest();
    absl::MutexLock l(&mu_);
    offers_.push_back(std::move(seen));
  }
  pkgdist::v1::Manifest& m = *offer->mutable_manifest();
  pkgdist::v1::Manifest base;
  std::string base_id;
  if (offer->delta_bases_size() > 0) {
    absl::MutexLock l(&mu_);
    for (const std::string& id : offer->delta_bases()) {
      if (auto it = bases_.find(id); it != bases_.end()) {
        base = it->second;
        base_id = id;
        break;
      }
    }
  }
  if (offer->delta_bases_size() > 0) {
    TransferResponse ask;
    ask.mutable_manifest_request()->set_base(base_id);
    stream->Write(ask);
  }
  uint64_t part_bytes = 0;
  int parts = 0;
  for (bool more = offer->manifest_parts() > 0 || offer->delta_bases_size() > 0; more;) {
    if (!stream->Read(&req) || !req.has_manifest_part()) {
      *error = grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                            absl::StrCat("expected manifest part ", parts + 1));
      return false;
    }
    ++parts;
    largest = std::max(largest, req.ByteSizeLong());
    part_bytes += req.manifest_part().ByteSizeLong();
    if (absl::Status s = ApplyManifestPart(base, req.manifest_part(), uint64_t{1} << 40,
                                           uint64_t{1} << 40, &m);
        !s.ok()) {
      *error = grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, std::string(s.message()));
      return false;
    }
    more = offer->delta_bases_size() > 0 ? req.manifest_part().more()
                                         : parts < static_cast<int>(offer->manifest_parts());
  }
  absl::MutexLock l(&mu_);
  last_manifest_id_ = PackageId(m);
  last_manifest_parts_ = parts;
  last_manifest_base_ = base_id;
  last_manifest_part_bytes_ = part_bytes;
  largest_manifest_message_ = std::max(largest_manifest_message_, largest);
  return true;
}

void FakeAgent::HoldBase(const pkgdist::v1::Manifest& m) {
  absl::MutexLock l(&mu_);
  bases_[PackageId(m)] = m;
}

std::string FakeAgent::last_manifest_base() {
  absl::MutexLock l(&mu_);
  return last_manifest_base_;
}

uint64_t FakeAgent::last_manifest_part_bytes() {
  absl::MutexLock l(&mu_);
  return last_manifest_part_bytes_;
}

std::vector<uint32_t> FakeAgent::SendFirstNeed(
    grpc::ServerReaderWriter<TransferResponse, TransferRequest>* stream, int chunks) {
  size_t per_message;
  int local_every;
  {
    absl::MutexLock l(&mu_);
    per_message = need_per_message_ > 0 ? need_per_message_ : static_cast<size_t>(chunks) + 1;
    local_every = local_every_;
  }
  std::vector<uint32_t> need, local;
  for (int i = 0; i < chunks; ++i) {
    (local_every > 0 && i % local_every == local_every - 1 ? local : need)
        .push_back(static_cast<uint32_t>(i));
  }
  size_t n = 0, l = 0;
  do {
    TransferResponse msg;
    auto* m = msg.mutable_need();
    for (size_t room = per_message; room > 0 && n < need.size(); --room) m->add_indices(need[n++]);
    for (size_t room = per_message - m->indices_size(); room > 0 && l < local.size(); --room) {
      m->add_local(local[l++]);
    }
    m->set_more(n < need.size() || l < local.size());
    stream->Write(msg);
  } while (n < need.size() || l < local.size());
  return local;
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

FakeAgentServer::FakeAgentServer(const TlsFiles& tls, grpc::Service* agent) {
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
