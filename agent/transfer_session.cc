#include "agent/transfer_session.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "agent/disk_util.h"
#include "shared/grpc_options.h"
#include "shared/logging.h"
#include "shared/manifest_delta.h"
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
    case TransferRequest::kManifestPart: return "manifest part";
    default: return "empty message";
  }
}

}  // namespace

void SetReceived(TransferRequest request, ReceivedRequest* out) {
  out->request = std::move(request);
  out->data = out->request.has_chunk() ? Pieces(out->request.chunk().data()) : Pieces();
  out->slices.clear();
}

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
  // The stream ended at a request that did not parse: that is the call's end.
  if (absl::Status error = stream_.read_error(); !error.ok()) s = error;
  if (options_.metrics != nullptr) options_.metrics->TransferEnded(s);
  log_scope_ = nullptr;
  return s;
}

absl::Status TransferSession::Serve() {
  ReceivedRequest received;
  if (!stream_.Read(&received)) return absl::CancelledError("stream ended before an offer");
  TransferRequest& request = received.request;
  if (!request.has_offer()) {
    return absl::InvalidArgumentError(absl::StrCat(Describe(request), " before offer"));
  }
  pkgdist::v1::Offer* offer = request.mutable_offer();
  if (offer->delta_bases_size() > 0 || offer->manifest_parts() > 0) {
    assembled_offer_ = std::make_unique<pkgdist::v1::Offer>();
    assembled_offer_->Swap(request.mutable_offer());
    RETURN_IF_ERROR(assembled_offer_->delta_bases_size() > 0
                        ? ReceiveRequestedManifest(*assembled_offer_)
                        : ReceiveManifestParts(*assembled_offer_));
    offer = assembled_offer_.get();
  }
  RETURN_IF_ERROR(AcceptOffer(*offer));
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

absl::Status TransferSession::CheckManifestHead(const pkgdist::v1::Manifest& m) const {
  if (m.total_size() > options_.limits.max_total_size) {
    return absl::InvalidArgumentError(absl::StrCat("invalid manifest: package size ",
                                                   m.total_size(), " exceeds max_total_size ",
                                                   options_.limits.max_total_size));
  }
  return absl::OkStatus();
}

absl::Status TransferSession::AppendManifestPart(const pkgdist::v1::Manifest& base,
                                                 const pkgdist::v1::ManifestPart& part,
                                                 const std::string& where,
                                                 pkgdist::v1::Manifest* m) {
  // Checked before the part is appended, so that memory stays within what a
  // valid manifest needs. Every chunk holds at least one byte
  // (ValidateManifest), so a valid manifest has at most total_size of them
  // (itself at most max_total_size).
  const int entries = m->files_size() + m->chunks_size();
  if (absl::Status s =
          ApplyManifestPart(base, part, options_.limits.max_files, m->total_size(), m);
      !s.ok()) {
    return absl::InvalidArgumentError(absl::StrCat("invalid manifest: ", where, " ", s.message()));
  }
  if (m->files_size() + m->chunks_size() == entries) {
    return absl::InvalidArgumentError(absl::StrCat(where, " is empty"));
  }
  return absl::OkStatus();
}

absl::Status TransferSession::ReadManifestPart(const std::string& where,
                                               ReceivedRequest* received) {
  if (!stream_.Read(received)) {
    return absl::CancelledError(absl::StrCat("stream ended before ", where));
  }
  if (!received->request.has_manifest_part()) {
    return absl::InvalidArgumentError(
        absl::StrCat(Describe(received->request), " before ", where));
  }
  return absl::OkStatus();
}

absl::Status TransferSession::ReceiveManifestParts(pkgdist::v1::Offer& offer) {
  pkgdist::v1::Manifest& m = *offer.mutable_manifest();
  const uint32_t parts = offer.manifest_parts();
  RETURN_IF_ERROR(CheckManifestHead(m));
  const ManifestLimits& limits = options_.limits;
  if (static_cast<uint64_t>(m.files_size()) > limits.max_files) {
    return absl::InvalidArgumentError(absl::StrCat("invalid manifest: the offer brings it to ",
                                                   m.files_size(), " entries, more than max_files ",
                                                   limits.max_files));
  }
  if (static_cast<uint64_t>(m.chunks_size()) > m.total_size()) {
    return absl::InvalidArgumentError(
        absl::StrCat("invalid manifest: the offer brings it to ", m.chunks_size(),
                     " chunks, more than its ", m.total_size(), " bytes can have"));
  }
  const pkgdist::v1::Manifest no_base;
  ReceivedRequest received;
  for (uint32_t i = 1; i <= parts; ++i) {
    const std::string where = absl::StrCat("manifest part ", i, " of ", parts);
    RETURN_IF_ERROR(ReadManifestPart(where, &received));
    RETURN_IF_ERROR(AppendManifestPart(no_base, received.request.manifest_part(), where, &m));
  }
  return absl::OkStatus();
}

absl::Status TransferSession::ReceiveRequestedManifest(pkgdist::v1::Offer& offer) {
  pkgdist::v1::Manifest& m = *offer.mutable_manifest();
  if (offer.manifest_parts() > 0 || m.files_size() > 0 || m.chunks_size() > 0) {
    return absl::InvalidArgumentError(
        "an offer with delta_bases must carry no files, chunks or manifest_parts");
  }
  if (offer.delta_bases_size() > kMaxDeltaBases) {
    return absl::InvalidArgumentError(absl::StrCat("an offer names ", offer.delta_bases_size(),
                                                   " delta bases, more than ", kMaxDeltaBases));
  }
  RETURN_IF_ERROR(CheckManifestHead(m));
  // The newest base published here; none: the manifest comes whole.
  pkgdist::v1::Manifest base;
  TransferResponse response;
  for (const std::string& id : offer.delta_bases()) {
    if (id.size() != 32) return absl::InvalidArgumentError("a delta base must be 32 bytes");
    if (std::optional<pkgdist::v1::Manifest> b = store_.PublishedManifest(id)) {
      base = std::move(*b);
      response.mutable_manifest_request()->set_base(id);
      break;
    }
  }
  if (!response.has_manifest_request()) response.mutable_manifest_request();
  RETURN_IF_ERROR(Send(response));
  ReceivedRequest received;
  uint64_t bytes = 0;
  uint32_t part = 0;
  do {
    const std::string where = absl::StrCat("requested manifest part ", ++part);
    RETURN_IF_ERROR(ReadManifestPart(where, &received));
    bytes += received.request.manifest_part().ByteSizeLong();
    RETURN_IF_ERROR(AppendManifestPart(base, received.request.manifest_part(), where, &m));
  } while (received.request.manifest_part().more());
  const std::string& base_id = response.manifest_request().base();
  if (!base_id.empty()) {
    spdlog::info("manifest of {}@{}: a delta of {}@{} ({}), {} bytes in {} parts", m.name(),
                 m.version(), base.name(), base.version(), ToHex(base_id), bytes, part);
  }
  return absl::OkStatus();
}

absl::Status TransferSession::AcceptOffer(pkgdist::v1::Offer& offer) {
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
    GrantPeers(offer, m, true);
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
  // The staging takes the manifest over (one copy of it in memory, not two:
  // about 170 bytes a chunk); from here on it is staging_->manifest().
  auto staging = store_.OpenStaging(std::move(*offer.mutable_manifest()), package_id_);
  if (!staging.ok()) return DiskError(staging.status());
  staging_ = std::move(staging).value();
  staging_->set_metrics(options_.metrics);
  const pkgdist::v1::Manifest& staged = staging_->manifest();
  GrantPeers(offer, staged, false);
  if (absl::Status s = store_.CheckFreeSpace(staging_->missing_bytes()); !s.ok()) {
    if (staging_->durable_count() == 0) {
      // Nothing received yet: a refused offer leaves no staging behind.
      staging_.reset();
      if (absl::Status rm = store_.DiscardStaging(package_id_); !rm.ok()) spdlog::warn("{}", rm);
    }
    return s;
  }
  window_bytes_ = offer.window_bytes() > 0 ? offer.window_bytes() : options_.default_window_bytes;
  flush_threshold_ = std::max<uint64_t>(1, window_bytes_ / 2);
  // The sender's next message: a run of chunks, or one chunk larger than a run.
  max_chunk_bytes_ = std::min<uint64_t>(MaxRunBytes(window_bytes_), staged.total_size());
  for (const auto& c : staged.chunks()) {
    max_chunk_bytes_ = std::max<uint64_t>(max_chunk_bytes_, c.length());
  }
  return NeedAndCopyLocal();
}

absl::Status TransferSession::NeedAndCopyLocal() {
  // Chunks some other package on this disk holds are copied from there, not
  // sent: the Need lists them as local, and the controller waits for their
  // Acks like for sent chunks. The copy runs after the Need, so the
  // controller's first chunks are on their way meanwhile.
  const pkgdist::v1::Manifest& m = staging_->manifest();
  std::vector<uint32_t> local = store_.LocalChunks(*staging_);
  std::vector<uint32_t> need, peer;
  need.reserve(staging_->missing_count() - local.size());
  uint64_t need_bytes = 0, local_bytes = 0;
  for (uint32_t index : staging_->Missing()) {
    if (!std::binary_search(local.begin(), local.end(), index)) need.push_back(index);
  }
  for (uint32_t index : need) need_bytes += m.chunks(static_cast<int>(index)).length();
  for (uint32_t index : local) local_bytes += m.chunks(static_cast<int>(index)).length();
  const bool from_source = offer_->has_source() && options_.peers != nullptr && !need.empty();
  spdlog::info("transfer of {} from {}: need {} of {} chunks ({} bytes){}, {} local ({} bytes)",
               label_, peer_, need.size(), staging_->chunk_count(), need_bytes,
               from_source ? absl::StrCat(" from ", offer_->source().agent()) : "", local.size(),
               local_bytes);
  if (from_source) peer.swap(need);
  RETURN_IF_ERROR(SendFirstNeed(need, local, peer));
  if (!local.empty()) RETURN_IF_ERROR(CopyLocal(local, local_bytes));
  if (!peer.empty()) RETURN_IF_ERROR(FetchFromSource(peer));
  return absl::OkStatus();
}

absl::Status TransferSession::CopyLocal(const std::vector<uint32_t>& local, uint64_t local_bytes) {
  const pkgdist::v1::Manifest& m = staging_->manifest();
  auto failed = store_.CopyLocalChunks(*staging_, local, [this] { return StartFlush(); });
  if (!failed.ok()) return DiskError(failed.status());
  RETURN_IF_ERROR(Collect(Staging::Await::kAll));
  uint64_t failed_bytes = 0;
  for (uint32_t index : *failed) failed_bytes += m.chunks(static_cast<int>(index)).length();
  if (options_.metrics != nullptr) options_.metrics->Reused(local_bytes - failed_bytes);
  if (failed->empty()) return absl::OkStatus();
  spdlog::warn("transfer of {}: {} local chunks ({} bytes) were not where the chunk store said "
               "or failed their sha256; requesting them",
               label_, failed->size(), failed_bytes);
  return SendNeed(*failed);
}

void TransferSession::GrantPeers(const pkgdist::v1::Offer& offer, const pkgdist::v1::Manifest& m,
                                 bool published) {
  if (options_.serving == nullptr || offer.serve_peers().empty()) return;
  std::vector<bool> durable(static_cast<size_t>(m.chunks_size()), published);
  if (staging_ != nullptr) {
    for (uint32_t i = 0; i < staging_->chunk_count(); ++i) durable[i] = staging_->IsDurable(i);
  }
  options_.serving->Grant(package_id_, m, {offer.serve_peers().begin(), offer.serve_peers().end()},
                          JoinPath(store_.StagingDir(ToHex(package_id_)), "tree"),
                          store_.PackageDir(m.name(), m.version()), std::move(durable));
  if (published) options_.serving->Published(package_id_);
  serving_peers_ = true;
  spdlog::info("transfer of {}: serving it to {} peer(s) of this site", label_,
               offer.serve_peers_size());
}

absl::Status TransferSession::FetchFromSource(const std::vector<uint32_t>& peer) {
  const pkgdist::v1::PeerSource& source = offer_->source();
  const absl::Duration silence =
      absl::Milliseconds(std::max<uint32_t>(offer_->source_silence_ms(), 1000));
  auto fetch = options_.peers->Fetch(source, package_id_, peer, silence, cancelled_);
  pkgdist::v1::FetchChunksResponse response;
  while (fetch->Next(&response)) {
    // The controller hears nothing else from us until a flush acknowledges
    // half a window, which at a slow site takes longer than its silence
    // bound: an empty Ack every second says we are alive.
    if (SinceLastSend() >= absl::Seconds(1)) {
      TransferResponse alive;
      alive.mutable_ack();
      RETURN_IF_ERROR(Send(alive));
    }
    if (response.has_waiting()) continue;
    if (!response.has_chunk()) continue;
    const pkgdist::v1::Chunk& chunk = response.chunk();
    if (options_.metrics != nullptr) options_.metrics->PeerReceived(chunk.data().size());
    if (absl::Status s = CheckRun(chunk, chunk.data().size()); !s.ok()) {
      fetch->Abandon(s);
      break;
    }
    const uint32_t count = std::max<uint32_t>(chunk.count(), 1);
    absl::string_view data = chunk.data();
    for (uint32_t i = chunk.index(); i < chunk.index() + count; ++i) {
      const uint32_t length = staging_->manifest().chunks(static_cast<int>(i)).length();
      auto written = staging_->WriteChunk(i, data.substr(0, length));
      data.remove_prefix(length);
      if (absl::IsDataLoss(written.status()) || absl::IsInvalidArgument(written.status())) {
        if (options_.metrics != nullptr) options_.metrics->HashMismatch();
        fetch->Abandon(written.status());
        break;
      }
      if (!written.ok()) return DiskError(written.status());
    }
    if (!fetch->status().ok()) break;
    RETURN_IF_ERROR(Collect(Staging::Await::kNone));
    if (staging_->unflushed_bytes() >= flush_threshold_) RETURN_IF_ERROR(StartFlush());
  }
  RETURN_IF_ERROR(StartFlush());
  RETURN_IF_ERROR(Collect(Staging::Await::kAll));
  std::vector<uint32_t> left;
  uint64_t left_bytes = 0;
  for (uint32_t i : peer) {
    if (staging_->IsReceived(i)) continue;
    left.push_back(i);
    left_bytes += staging_->manifest().chunks(static_cast<int>(i)).length();
  }
  if (left.empty()) {
    spdlog::info("transfer of {}: {} chunks came from {}", label_, peer.size(), source.agent());
    return absl::OkStatus();
  }
  std::string why = fetch->status().ok() ? absl::StrCat(source.agent(), ": ended early")
                                         : std::string(fetch->status().message());
  spdlog::warn("transfer of {}: {} of {} chunks ({} bytes) did not come from {}: {}; asking the "
               "controller",
               label_, left.size(), peer.size(), left_bytes, source.agent(), why);
  TransferResponse response_need;
  response_need.mutable_need()->mutable_indices()->Assign(left.begin(), left.end());
  response_need.mutable_need()->set_source_failed(std::move(why));
  return Send(response_need);
}

absl::Status TransferSession::ReceiveChunks() {
  ReceivedRequest received;
  while (stream_.Read(&received)) {
    const TransferRequest& request = received.request;
    switch (request.msg_case()) {
      case TransferRequest::kChunk:
        RETURN_IF_ERROR(OnChunk(request.chunk(), std::move(received.data)));
        break;
      case TransferRequest::kCommit:
        return OnCommit();
      case TransferRequest::kOffer:
        return absl::InvalidArgumentError("second offer on one stream");
      case TransferRequest::kManifestPart:
        return absl::InvalidArgumentError(
            absl::StrCat("manifest part after the need (the offer announced ",
                         offer_->manifest_parts(), " parts)"));
      default:
        return absl::InvalidArgumentError("empty message");
    }
  }
  return absl::CancelledError(absl::StrCat("stream of ", label_, " ended before commit"));
}

absl::Status TransferSession::CheckRun(const pkgdist::v1::Chunk& chunk,
                                       uint64_t data_bytes) const {
  // One message may carry a run of consecutive chunks of one file.
  const pkgdist::v1::Manifest& m = staging_->manifest();
  const uint32_t first = chunk.index();
  const uint32_t count = std::max<uint32_t>(chunk.count(), 1);
  const uint32_t n = staging_->chunk_count();
  if (first >= n || count > n - first) {
    return absl::InvalidArgumentError(absl::StrCat("chunk index ", first, count > 1 ? absl::StrCat("+", count) : "",
                                                   " out of range (", n, " chunks)"));
  }
  uint64_t expected = 0;
  for (uint32_t i = first; i < first + count; ++i) {
    const auto& c = m.chunks(static_cast<int>(i));
    if (c.file() != m.chunks(static_cast<int>(first)).file()) {
      return absl::InvalidArgumentError(
          absl::StrCat("chunks ", first, "+", count, ": a run must stay within one file"));
    }
    expected += c.length();
  }
  if (data_bytes != expected) {
    return absl::InvalidArgumentError(absl::StrCat(
        "chunk ", first, count > 1 ? absl::StrCat("+", count) : "", ": ", data_bytes,
        " bytes, manifest says ", expected));
  }
  return absl::OkStatus();
}

absl::Status TransferSession::OnChunk(const pkgdist::v1::Chunk& chunk, Pieces data) {
  if (options_.metrics != nullptr) options_.metrics->ChunkReceived(data.size());
  RETURN_IF_ERROR(CheckRun(chunk, data.size()));
  const pkgdist::v1::Manifest& m = staging_->manifest();
  const uint32_t first = chunk.index();
  const uint32_t count = std::max<uint32_t>(chunk.count(), 1);
  for (uint32_t i = first; i < first + count; ++i) {
    RETURN_IF_ERROR(WriteOne(i, data.TakeFront(m.chunks(static_cast<int>(i)).length())));
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

absl::Status TransferSession::WriteOne(uint32_t index, const Pieces& data) {
  auto written = staging_->WriteChunk(index, data);
  if (absl::IsDataLoss(written.status())) {
    if (options_.metrics != nullptr) options_.metrics->HashMismatch();
    if (++mismatches_[index] >= kMaxMismatchesPerChunk) {
      // The same chunk wrong again and again is not damage in transit but a
      // damaged (or altered) copy at the sender: asking once more would
      // loop for ever. The target records this and retries later.
      return absl::DataLossError(absl::StrCat(
          "chunk ", index, " of ", label_, " failed its sha256 check ",
          kMaxMismatchesPerChunk, " times: the sender's copy does not match the manifest"));
    }
    spdlog::warn("transfer of {} from {}: {}; requesting it again", label_, peer_,
                 written.status().message());
    // Acknowledge what is pending first (rare, so waiting is fine): the
    // sender learns of every good chunk before the one it must resend.
    RETURN_IF_ERROR(StartFlush());
    RETURN_IF_ERROR(Collect(Staging::Await::kAll));
    RETURN_IF_ERROR(SendNeed({index}));
  } else if (absl::IsInvalidArgument(written.status())) {
    return written.status();
  } else if (!written.ok()) {
    return DiskError(written.status());
  } else if (*written == Staging::WriteResult::kAlreadyReceived) {
    RETURN_IF_ERROR(OnDuplicate(index));
  }
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
    if (serving_peers_) options_.serving->Durable(package_id_, indices);
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
            options_.signatures->CheckAndRecordPublish(staging_->manifest(), package_id_,
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
  if (serving_peers_) options_.serving->Published(package_id_);
  return SendPublished();
}

void TransferSession::DropStaging() {
  // Under this package's lease: no other transfer of it writes there.
  if (absl::Status rm = store_.DiscardStaging(package_id_); !rm.ok()) {
    spdlog::warn("transfer of {}: deleting refused staging: {}", label_, rm);
  }
}

absl::Status TransferSession::SendNeed(std::vector<uint32_t> indices) {
  TransferResponse response;
  response.mutable_need()->mutable_indices()->Assign(indices.begin(), indices.end());
  return Send(response);
}

absl::Status TransferSession::SendFirstNeed(const std::vector<uint32_t>& need,
                                            const std::vector<uint32_t>& local,
                                            const std::vector<uint32_t>& peer) {
  const size_t per_message = std::max<size_t>(1, options_.need_indices_per_message);
  size_t n = 0, l = 0, p = 0;  // sent so far of need, local and peer
  // Takes what fits of `from` (from `*done` on) into `to`.
  size_t room = 0;
  auto take = [&room](const std::vector<uint32_t>& from, size_t* done,
                      google::protobuf::RepeatedField<uint32_t>* to) {
    const size_t k = std::min(room, from.size() - *done);
    to->Assign(from.begin() + static_cast<ptrdiff_t>(*done),
               from.begin() + static_cast<ptrdiff_t>(*done + k));
    *done += k;
    room -= k;
  };
  do {
    TransferResponse response;
    auto* msg = response.mutable_need();
    room = per_message;
    take(need, &n, msg->mutable_indices());
    take(local, &l, msg->mutable_local());
    take(peer, &p, msg->mutable_peer());
    msg->set_more(n < need.size() || l < local.size() || p < peer.size());
    RETURN_IF_ERROR(Send(response));
  } while (n < need.size() || l < local.size() || p < peer.size());
  return absl::OkStatus();
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
  last_send_ = absl::Now();
  return absl::OkStatus();
}

absl::Duration TransferSession::SinceLastSend() {
  absl::MutexLock l(&send_mu_);
  return absl::Now() - last_send_;
}

}  // namespace pkgdist
