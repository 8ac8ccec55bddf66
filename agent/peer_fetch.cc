#include "agent/peer_fetch.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "shared/grpc_options.h"

namespace pkgdist {

PeerFetcher::PeerFetcher(TlsFiles tls, std::string trust_domain, int max_message_bytes)
    : tls_(std::move(tls)),
      trust_domain_(std::move(trust_domain)),
      max_message_bytes_(max_message_bytes),
      provider_(MakeCertificateProvider(tls_)) {}

std::unique_ptr<PeerFetch> PeerFetcher::Fetch(const pkgdist::v1::PeerSource& source,
                                              std::string package_id,
                                              std::vector<uint32_t> indices,
                                              absl::Duration silence,
                                              std::function<bool()> cancelled) {
  auto creds =
      MakeChannelCredentials(provider_, tls_, SpiffeId{trust_domain_, "agent", source.agent()});
  const int detect_seconds = std::max(1, static_cast<int>(absl::ToInt64Seconds(silence)));
  auto channel = grpc::CreateCustomChannel(
      source.address(), creds, AgentChannelArgs(detect_seconds, 1000, max_message_bytes_));
  return std::make_unique<PeerFetch>(std::move(channel), source.agent(), std::move(package_id),
                                     std::move(indices), silence, std::move(cancelled));
}

PeerFetch::PeerFetch(std::shared_ptr<grpc::Channel> channel, std::string source,
                     std::string package_id, std::vector<uint32_t> indices,
                     absl::Duration silence, std::function<bool()> cancelled)
    : stub_(pkgdist::v1::Agent::NewStub(std::move(channel))),
      source_(std::move(source)),
      package_id_(std::move(package_id)),
      indices_(std::move(indices)),
      silence_(silence),
      cancelled_(std::move(cancelled)) {
  {
    absl::MutexLock l(&mu_);
    last_heard_ = absl::Now();
  }
  StartCall();
  watchdog_ = std::thread([this] { Watch(); });
}

PeerFetch::~PeerFetch() {
  {
    absl::MutexLock l(&mu_);
    done_ = true;
    if (reader_ != nullptr) ctx_->TryCancel();
  }
  watchdog_.join();
  // A call cancelled above (or never read to its end) still owes Finish.
  if (reader_ != nullptr) (void)reader_->Finish();
}

void PeerFetch::StartCall() {
  pkgdist::v1::FetchChunksRequest request;
  request.set_package_id(package_id_);
  const size_t end = std::min(indices_.size(), next_ + kFetchIndicesPerCall);
  request.mutable_indices()->Assign(indices_.begin() + static_cast<ptrdiff_t>(next_),
                                    indices_.begin() + static_cast<ptrdiff_t>(end));
  next_ = end;
  absl::MutexLock l(&mu_);
  ctx_ = std::make_unique<grpc::ClientContext>();
  reader_ = stub_->FetchChunks(ctx_.get(), request);
}

void PeerFetch::Watch() {
  absl::MutexLock l(&mu_);
  while (!done_) {
    mu_.AwaitWithTimeout(absl::Condition(&done_), absl::Milliseconds(100));
    if (done_) break;
    std::string why;
    if (cancelled_()) {
      why = "the transfer was cancelled";
    } else if (absl::Now() - last_heard_ > silence_) {
      why = absl::StrCat("no message for ", absl::FormatDuration(silence_));
    }
    if (!why.empty() && gave_up_.empty()) {
      gave_up_ = why;
      ctx_->TryCancel();
    }
  }
}

void PeerFetch::Abandon(absl::Status why) {
  if (status_.ok()) {
    status_ = absl::Status(why.code(), absl::StrCat(source_, ": ", why.message()));
  }
  absl::MutexLock l(&mu_);
  if (gave_up_.empty()) gave_up_ = "abandoned";
  ctx_->TryCancel();
}

bool PeerFetch::Next(pkgdist::v1::FetchChunksResponse* response) {
  while (status_.ok()) {
    if (reader_->Read(response)) {
      absl::MutexLock l(&mu_);
      last_heard_ = absl::Now();
      return true;
    }
    grpc::Status s = reader_->Finish();
    reader_.reset();
    std::string gave_up;
    {
      absl::MutexLock l(&mu_);
      gave_up = gave_up_;
    }
    if (!gave_up.empty()) {
      status_ = absl::UnavailableError(absl::StrCat(source_, ": ", gave_up));
    } else if (!s.ok()) {
      status_ = absl::Status(static_cast<absl::StatusCode>(s.error_code()),
                             absl::StrCat(source_, ": ", s.error_message()));
    } else if (next_ < indices_.size()) {
      StartCall();
      continue;
    }
    return false;
  }
  return false;
}

}  // namespace pkgdist
