#include "agent/transfer_session.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "agent/disk_util.h"
#include "shared/logging.h"
#include "shared/sha256.h"
#include "shared/status_macros.h"

namespace pkgdist {
namespace {

using pkgdist::v1::TransferRequest;
using pkgdist::v1::TransferResponse;

// A local disk failure as the stream reports it: disk full stays
// RESOURCE_EXHAUSTED (with the path), anything else becomes INTERNAL.
absl::Status DiskError(const absl::Status& s) {
  if (s.ok() || absl::IsResourceExhausted(s) || absl::IsInternal(s)) return s;
  return absl::InternalError(s.message());
}

const char* Describe(const TransferRequest& r) {
  switch (r.msg_case()) {
    case TransferRequest::kOffer: return "offer";
    case TransferRequest::kChunk: return "chunk";
    case TransferRequest::kCommit: return "commit";
    default: return "empty message";
  }
}

}  // namespace

TransferSession::TransferSession(PackageStore& store, const TransferOptions& options,
                                 TransferStream& stream, std::function<void()> cancel,
                                 std::string peer, std::string job_id)
    : store_(store),
      options_(options),
      stream_(stream),
      cancel_(std::move(cancel)),
      peer_(std::move(peer)),
      job_id_(std::move(job_id)) {}

TransferSession::~TransferSession() = default;

absl::Status TransferSession::Run() {
  ScopedLogFields scope(log_fields());
  log_scope_ = &scope;
  if (options_.metrics != nullptr) options_.metrics->TransferStarted();
  absl::Status s = Serve();
  if (options_.metrics != nullptr) options_.metrics->TransferEnded(s);
  log_scope_ = nullptr;
  return s;
}

absl::Status TransferSession::Serve() {
  TransferRequest request;
  if (!stream_.Read(&request)) return absl::CancelledError("stream ended before an offer");
  if (!request.has_offer()) {
    return absl::InvalidArgumentError(absl::StrCat(Describe(request), " before offer"));
  }
  RETURN_IF_ERROR(AcceptOffer(request.offer()));
  if (published_) return absl::OkStatus();
  absl::Status s = ReceiveChunks();
  if (!s.ok() && staging_ != nullptr) {
    // Keep what arrived intact for the next attempt; nothing to ack it to.
    (void)staging_->Flush();
  }
  // No flush may call back into this session (or the stream) after it ends.
  if (staging_ != nullptr) staging_->WaitForFlushes();
  return s;
}

absl::Status TransferSession::AcceptOffer(const pkgdist::v1::Offer& offer) {
  const pkgdist::v1::Manifest& m = offer.manifest();
  if (absl::Status s = ValidateManifest(m, options_.limits); !s.ok()) {
    return absl::InvalidArgumentError(absl::StrCat("invalid manifest: ", s.message()));
  }
  if (offer.package_id().size() != 32) {
    return absl::InvalidArgumentError("offer.package_id must be 32 bytes");
  }
  package_id_ = PackageId(m);
  label_ = absl::StrCat(m.name(), "@", m.version());
  if (log_scope_ != nullptr) log_scope_->Set({.package = label_});
  if (package_id_ != offer.package_id()) {
    return absl::DataLossError(absl::StrCat("package id ", ToHex(offer.package_id()),
                                            " does not match the manifest of ", label_,
                                            " (computed ", ToHex(package_id_), ")"));
  }
  ASSIGN_OR_RETURN(lease_, store_.locks().Acquire(ToHex(package_id_), cancel_, options_.lock_wait));
  ASSIGN_OR_RETURN(auto published, store_.PublishedId(m.name(), m.version()));
  if (published.has_value()) {
    if (*published != package_id_) {
      return absl::AlreadyExistsError(absl::StrCat(label_, " is already published with id ",
                                                   ToHex(*published), ", not ",
                                                   ToHex(package_id_)));
    }
    if (options_.signatures != nullptr) {
      RETURN_IF_ERROR(options_.signatures->CheckPublished(m, package_id_, offer.signature()));
    }
    spdlog::info("transfer of {} from {}: already published", label_, peer_);
    return SendPublished();
  }
  if (options_.signatures != nullptr) {
    if (absl::Status s = options_.signatures->CheckStage(m, package_id_, offer.signature());
        !s.ok()) {
      DropStaging();
      return s;
    }
  }
  offer_ = &offer;
  auto staging = store_.OpenStaging(m, package_id_);
  if (!staging.ok()) return DiskError(staging.status());
  staging_ = std::move(staging).value();
  staging_->set_metrics(options_.metrics);
  const uint64_t missing_before_copy = options_.metrics != nullptr ? staging_->missing_bytes() : 0;
  auto copied = store_.CopyKnownChunks(*staging_);
  if (!copied.ok()) return DiskError(copied.status());
  if (options_.metrics != nullptr && *copied > 0) {
    options_.metrics->Reused(missing_before_copy - staging_->missing_bytes());
  }
  if (absl::Status s = store_.CheckFreeSpace(staging_->missing_bytes()); !s.ok()) {
    if (staging_->durable_count() == 0) {
      // Nothing received yet: a refused offer leaves no staging behind.
      std::string dir = staging_->dir();
      staging_.reset();
      if (absl::Status rm = RemoveTree(dir); !rm.ok()) spdlog::warn("{}", rm);
    }
    return s;
  }
  window_bytes_ = offer.window_bytes() > 0 ? offer.window_bytes() : options_.default_window_bytes;
  flush_threshold_ = std::max<uint64_t>(1, window_bytes_ / 2);
  for (const auto& c : m.chunks()) max_chunk_bytes_ = std::max<uint64_t>(max_chunk_bytes_, c.length());
  spdlog::info("transfer of {} from {}: need {} of {} chunks ({} bytes){}", label_, peer_,
               staging_->missing_count(), staging_->chunk_count(), staging_->missing_bytes(),
               *copied > 0 ? absl::StrCat(", ", *copied, " reused from other versions") : "");
  return SendNeed(staging_->Missing());
}

absl::Status TransferSession::ReceiveChunks() {
  TransferRequest request;
  while (stream_.Read(&request)) {
    switch (request.msg_case()) {
      case TransferRequest::kChunk:
        RETURN_IF_ERROR(OnChunk(request.chunk()));
        break;
      case TransferRequest::kCommit:
        return OnCommit();
      case TransferRequest::kOffer:
        return absl::InvalidArgumentError("second offer on one stream");
      default:
        return absl::InvalidArgumentError("empty message");
    }
  }
  return absl::CancelledError(absl::StrCat("stream of ", label_, " ended before commit"));
}

absl::Status TransferSession::OnChunk(const pkgdist::v1::Chunk& chunk) {
  if (options_.metrics != nullptr) options_.metrics->ChunkReceived(chunk.data().size());
  auto written = staging_->WriteChunk(chunk.index(), chunk.data());
  if (absl::IsDataLoss(written.status())) {
    if (options_.metrics != nullptr) options_.metrics->HashMismatch();
    if (++mismatches_[chunk.index()] >= kMaxMismatchesPerChunk) {
      // The same chunk wrong again and again is not damage in transit but a
      // damaged (or altered) copy at the sender: asking once more would
      // loop for ever. The target records this and retries later.
      return absl::DataLossError(absl::StrCat(
          "chunk ", chunk.index(), " of ", label_, " failed its sha256 check ",
          kMaxMismatchesPerChunk, " times: the sender's copy does not match the manifest"));
    }
    spdlog::warn("transfer of {} from {}: {}; requesting it again", label_, peer_,
                 written.status().message());
    // Acknowledge what is pending first (rare, so waiting is fine): the
    // sender learns of every good chunk before the one it must resend.
    RETURN_IF_ERROR(StartFlush());
    RETURN_IF_ERROR(Collect(Staging::Await::kAll));
    RETURN_IF_ERROR(SendNeed({chunk.index()}));
  } else if (absl::IsInvalidArgument(written.status())) {
    return written.status();
  } else if (!written.ok()) {
    return DiskError(written.status());
  } else if (*written == Staging::WriteResult::kAlreadyReceived) {
    RETURN_IF_ERROR(OnDuplicate(chunk.index()));
  }
  RETURN_IF_ERROR(Collect(Staging::Await::kNone));
  const bool all_received = staging_->missing_count() == 0;
  if (staging_->unflushed_bytes() >= flush_threshold_ || all_received || WindowFull()) {
    RETURN_IF_ERROR(StartFlush());
  }
  // The sender can do nothing before the last Acks: wait for them here, so
  // that they are out before the next read (and its Commit) comes.
  if (all_received) RETURN_IF_ERROR(Collect(Staging::Await::kAll));
  return absl::OkStatus();
}

absl::Status TransferSession::OnDuplicate(uint32_t index) {
  // A chunk sent again (its Ack was lost) is acknowledged again once
  // durable, not rewritten. One still in a flush is waited for (its flush
  // acknowledges it too); one not flushed yet is acknowledged by its flush.
  if (!staging_->IsDurable(index)) RETURN_IF_ERROR(Collect(Staging::Await::kAll));
  if (!staging_->IsDurable(index)) return absl::OkStatus();
  TransferResponse response;
  response.mutable_ack()->add_indices(index);
  return Send(response);
}

absl::Status TransferSession::StartFlush() {
  // Runs on the writer's task thread once the chunks are durable, while
  // this thread may be blocked in Read: the Ack must not wait for more data.
  auto acknowledge = [this](const std::vector<uint32_t>& indices) {
    TransferResponse response;
    response.mutable_ack()->mutable_indices()->Assign(indices.begin(), indices.end());
    (void)Send(response);  // a closed stream also ends this thread's Read
  };
  if (absl::Status s = staging_->StartFlush(acknowledge); !s.ok()) return DiskError(s);
  return absl::OkStatus();
}

absl::Status TransferSession::Collect(Staging::Await await) {
  auto flushed = staging_->Collect(await);
  if (!flushed.ok()) return DiskError(flushed.status());
  return absl::OkStatus();
}

absl::Status TransferSession::OnCommit() {
  RETURN_IF_ERROR(Collect(Staging::Await::kAll));
  if (staging_->durable_count() != staging_->chunk_count()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "commit before all chunks acknowledged (", staging_->chunk_count() -
        staging_->durable_count(), " of ", staging_->chunk_count(), " outstanding)"));
  }
  if (options_.signatures != nullptr) {
    // A key removed since the Offer is refused here: revocation reaches
    // transfers already under way.
    if (absl::Status s =
            options_.signatures->CheckAndRecordPublish(offer_->manifest(), package_id_,
                                                       offer_->signature());
        !s.ok()) {
      if (!absl::IsFailedPrecondition(s)) return s;
      staging_->WaitForFlushes();
      staging_.reset();
      DropStaging();
      return s;
    }
  }
  absl::Status s = store_.Publish(*staging_, package_id_);
  if (absl::IsDataLoss(s) || absl::IsAlreadyExists(s)) return s;
  if (!s.ok()) return DiskError(s);
  return SendPublished();
}

void TransferSession::DropStaging() {
  // Under this package's lease: no other transfer of it writes there.
  if (absl::Status rm = RemoveTree(store_.StagingDir(ToHex(package_id_))); !rm.ok()) {
    spdlog::warn("transfer of {}: deleting refused staging: {}", label_, rm);
  }
}

absl::Status TransferSession::SendNeed(std::vector<uint32_t> indices) {
  TransferResponse response;
  response.mutable_need()->mutable_indices()->Assign(indices.begin(), indices.end());
  return Send(response);
}

absl::Status TransferSession::SendPublished() {
  published_ = true;
  TransferResponse response;
  response.mutable_published()->set_package_id(package_id_);
  return Send(response);
}

absl::Status TransferSession::Send(const TransferResponse& response) {
  absl::MutexLock l(&send_mu_);
  if (!stream_.Write(response)) {
    return absl::CancelledError(absl::StrCat("stream of ", label_, " closed by the peer"));
  }
  return absl::OkStatus();
}

}  // namespace pkgdist
