#include "controller/transfer.h"

#include <algorithm>

#include <grpcpp/generic/generic_stub.h>

#include "absl/strings/str_cat.h"
#include "shared/chunk_wire.h"
#include "shared/grpc_options.h"
#include "shared/logging.h"
#include "shared/manifest_delta.h"
#include "shared/sha256.h"

namespace pkgdist {
namespace {

constexpr int64_t kProgressReportMs = 250;

// Agent.Transfer's path, called through a generic stub so that requests are
// ByteBuffers (agent.proto; a wrong path fails every transfer test).
constexpr char kTransferMethod[] = "/pkgdist.v1.Agent/Transfer";

using pkgdist::v1::Manifest;
using pkgdist::v1::TransferRequest;
using pkgdist::v1::TransferResponse;

// A position in a manifest's files and chunks.
struct ManifestCursor {
  int file = 0;
  int chunk = 0;
};

// Where the manifest part that starts at `at` ends: files, then (once every
// file is in) chunks, as many as fit in kManifestPartBytes, at least one.
ManifestCursor PartEnd(const Manifest& m, ManifestCursor at) {
  size_t used = 0;
  auto fits = [&used](const google::protobuf::MessageLite& e) {
    size_t n = RepeatedElementBytes(e);
    if (used > 0 && used + n > kManifestPartBytes) return false;
    used += n;
    return true;
  };
  while (at.file < m.files_size() && fits(m.files(at.file))) ++at.file;
  while (at.file == m.files_size() && at.chunk < m.chunks_size() && fits(m.chunks(at.chunk))) {
    ++at.chunk;
  }
  return at;
}

// How many parts the manifest has from `at` on (sizes only, nothing copied).
uint32_t PartsFrom(const Manifest& m, ManifestCursor at) {
  uint32_t n = 0;
  while (at.file < m.files_size() || at.chunk < m.chunks_size()) {
    at = PartEnd(m, at);
    ++n;
  }
  return n;
}

// Copies files [from.file, to.file) and chunks [from.chunk, to.chunk) of
// `m` to the end of `files` and `chunks`.
template <typename FilesField, typename ChunksField>
void CopyPart(const Manifest& m, ManifestCursor from, ManifestCursor to, FilesField* files,
              ChunksField* chunks) {
  files->Reserve(files->size() + to.file - from.file);
  for (int i = from.file; i < to.file; ++i) *files->Add() = m.files(i);
  chunks->Reserve(chunks->size() + to.chunk - from.chunk);
  for (int i = from.chunk; i < to.chunk; ++i) *chunks->Add() = m.chunks(i);
}

}  // namespace

std::shared_ptr<TransferCall> TransferCall::Start(const std::shared_ptr<grpc::Channel>& channel,
                                                  TransferParams params, const Clock* clock,
                                                  ProgressFn on_progress, DoneFn on_done) {
  std::shared_ptr<TransferCall> call(
      new TransferCall(std::move(params), clock, std::move(on_progress), std::move(on_done)));
  call->self_ = call;
  call->ctx_.AddMetadata(kJobIdMetadataKey, call->p_.job_id);
  grpc::TemplatedGenericStub<grpc::ByteBuffer, TransferResponse>(channel).PrepareBidiStreamingCall(
      &call->ctx_, kTransferMethod, grpc::StubOptions(), call.get());
  {
    absl::MutexLock l(&call->mu_);
    call->FillOffer();
    call->Stage();
    call->write_in_flight_ = true;
    call->last_heard_ms_ = clock->NowMs();
    call->allowance_ms_ = call->last_heard_ms_;
  }
  call->StartWrite(&call->out_);
  call->StartRead(&call->resp_);
  // Held until the read side ends, so that Tick() may start writes.
  call->AddHold();
  call->StartCall();
  return call;
}

TransferCall::TransferCall(TransferParams params, const Clock* clock, ProgressFn on_progress,
                           DoneFn on_done)
    : throttle_(std::move(params.throttle)),
      p_(std::move(params)),
      clock_(clock),
      on_progress_(std::move(on_progress)),
      on_done_(std::move(on_done)),
      reader_(p_.tree, p_.manifest),
      inflight_(static_cast<size_t>(p_.manifest->chunks_size()), 0) {}

void TransferCall::FillOffer() {
  const Manifest& m = *p_.manifest;
  auto* offer = req_.mutable_offer();
  offer->set_package_id(p_.package_id);
  offer->set_window_bytes(p_.window_bytes);
  if (p_.signature.ByteSizeLong() > 0) *offer->mutable_signature() = p_.signature;
  for (const std::string& peer : p_.serve_peers) offer->add_serve_peers(peer);
  if (!p_.source_agent.empty()) {
    offer->mutable_source()->set_agent(p_.source_agent);
    offer->mutable_source()->set_address(p_.source_address);
    offer->set_source_silence_ms(static_cast<uint32_t>(p_.detect_seconds) * 1000);
  }
  const bool delta = p_.deltas != nullptr && !p_.delta_bases.empty() &&
                     (m.files_size() > 0 || m.chunks_size() > 0);
  if (!delta && m.ByteSizeLong() <= kManifestPartBytes) {
    *offer->mutable_manifest() = m;
    return;
  }
  Manifest* head = offer->mutable_manifest();
  head->set_name(m.name());
  head->set_version(m.version());
  head->set_total_size(m.total_size());
  if (delta) {
    for (const std::string& id : p_.delta_bases) offer->add_delta_bases(id);
    awaiting_request_ = true;
    return;
  }
  ManifestCursor end = PartEnd(m, {});
  CopyPart(m, {}, end, head->mutable_files(), head->mutable_chunks());
  part_file_ = end.file;
  part_chunk_ = end.chunk;
  parts_left_ = PartsFrom(m, end);
  offer->set_manifest_parts(parts_left_);
}

void TransferCall::NextManifestPart() {
  --parts_left_;
  if (delta_ != nullptr) {
    *req_.mutable_manifest_part() = (*delta_)[delta_next_++];
    return;
  }
  const Manifest& m = *p_.manifest;
  const ManifestCursor from{part_file_, part_chunk_};
  const ManifestCursor end = PartEnd(m, from);
  // The previous part's message, if any, is reused: its elements stay
  // allocated for this one.
  auto* part = req_.mutable_manifest_part();
  part->Clear();
  CopyPart(m, from, end, part->mutable_files(), part->mutable_chunks());
  part->set_more(requested_ && parts_left_ > 0);
  part_file_ = end.file;
  part_chunk_ = end.chunk;
}

TransferCall::Action TransferCall::HandleManifestRequest() {
  if (!awaiting_request_) {
    return Fail(absl::InternalError("agent asked for the manifest unasked, or twice"));
  }
  awaiting_request_ = false;
  requested_ = true;
  const std::string& base = resp_.manifest_request().base();
  if (base.empty()) return SendRequestedManifest(nullptr);
  if (std::find(p_.delta_bases.begin(), p_.delta_bases.end(), base) == p_.delta_bases.end()) {
    return Fail(absl::InternalError(
        absl::StrCat("agent asked for a delta of ", ToHex(base), ", which was not offered")));
  }
  preparing_delta_ = true;
  p_.read_pool->Submit([self = shared_from_this(), base] {
    self->OnDeltaReady(self->p_.deltas->Get(base, self->p_.manifest, self->p_.package_id));
  });
  return Action::kNone;
}

void TransferCall::OnDeltaReady(
    absl::StatusOr<std::shared_ptr<const ManifestDeltas::Parts>> parts) {
  Action action = Action::kNone;
  {
    absl::MutexLock l(&mu_);
    preparing_delta_ = false;
    if (read_done_ || !failure_.ok()) return;
    if (!parts.ok()) {
      // The agent asked for a delta; the whole manifest rebuilds the same.
      LogWith({.job = p_.job_id, .agent = p_.agent}, spdlog::level::warn,
              "sending the whole manifest instead of a delta: {}", parts.status());
    }
    action = SendRequestedManifest(parts.ok() ? *std::move(parts) : nullptr);
    HoldForWrite(action);
  }
  PerformDetached(action);
}

TransferCall::Action TransferCall::SendRequestedManifest(
    std::shared_ptr<const ManifestDeltas::Parts> delta) {
  if (delta != nullptr && !delta->empty()) {
    delta_ = std::move(delta);
    parts_left_ = static_cast<uint32_t>(delta_->size());
  } else {
    part_file_ = part_chunk_ = 0;
    parts_left_ = PartsFrom(*p_.manifest, {});
  }
  // A write still in flight (the Offer's) sends the first part when done.
  if (write_in_flight_) return Action::kNone;
  NextManifestPart();
  Stage();
  write_in_flight_ = true;
  last_heard_ms_ = clock_->NowMs();
  return Action::kWrite;
}

void TransferCall::Stage() {
  bool own_buffer = false;
  out_.Clear();  // Serialize wants an empty buffer
  grpc::Status s = grpc::SerializationTraits<TransferRequest>::Serialize(req_, &out_, &own_buffer);
  if (!s.ok()) {
    // Every message is bounded (kManifestPartBytes): this is a bug. The agent
    // refuses the empty message, and the call ends with this error.
    out_.Clear();
    Fail(absl::InternalError(absl::StrCat("serializing a request: ", s.error_message())));
  }
}

TransferCall::Action TransferCall::Fail(absl::Status s) {
  if (failure_.ok()) failure_ = std::move(s);
  return Action::kCancel;
}

void TransferCall::Perform(Action a) {
  switch (a) {
    case Action::kWrite:
      StartWrite(&out_);
      break;
    case Action::kWritesDone:
      StartWritesDone();
      break;
    case Action::kCancel:
      ctx_.TryCancel();
      break;
    case Action::kNone:
      break;
  }
}

void TransferCall::OnReadDone(bool ok) {
  bool read_more = false;
  Action action = Action::kNone;
  {
    absl::MutexLock l(&mu_);
    last_heard_ms_ = clock_->NowMs();
    if (ok) {
      action = HandleResponse();
      read_more = phase_ != Phase::kPublished && failure_.ok();
    }
    if (!read_more) read_done_ = true;
  }
  Perform(action);
  MaybeReportProgress(false);
  if (read_more) {
    StartRead(&resp_);
  } else {
    RemoveHold();
  }
}

bool TransferCall::ListOnce(uint32_t index) {
  if (index >= first_need_listed_.size() || first_need_listed_[index]) return false;
  first_need_listed_[index] = true;
  return true;
}

TransferCall::Action TransferCall::HandleFirstNeed() {
  // Everything the first Need does not list is already durable there.
  const auto& chunks = p_.manifest->chunks();
  // A chunk listed twice (needed and local, or in two messages) would be
  // counted twice: refused. The flags live only until the Need's last message.
  if (first_need_listed_.empty()) first_need_listed_.resize(static_cast<size_t>(chunks.size()));
  for (uint32_t i : resp_.need().indices()) {
    if (!ListOnce(i)) {
      return Fail(absl::InternalError(absl::StrCat("agent needs chunk ", i, ": unknown, or listed twice")));
    }
    first_need_bytes_ += chunks[static_cast<int>(i)].length();
    queue_.push_back(i);
  }
  for (uint32_t i : resp_.need().local()) {
    if (!ListOnce(i)) {
      return Fail(absl::InternalError(absl::StrCat("agent lists chunk ", i, " as local: ",
                                                   "unknown, or listed twice")));
    }
    inflight_[i] = kLocal;
    ++local_count_;
    first_need_bytes_ += chunks[static_cast<int>(i)].length();
  }
  for (uint32_t i : resp_.need().peer()) {
    if (p_.source_agent.empty() || !ListOnce(i)) {
      return Fail(absl::InternalError(absl::StrCat(
          "agent lists chunk ", i, " as from a peer: ",
          p_.source_agent.empty() ? "none was named" : "unknown, or listed twice")));
    }
    inflight_[i] = kPeer;
    ++local_count_;
    first_need_bytes_ += chunks[static_cast<int>(i)].length();
  }
  // More of this Need follows: nothing is decided before its last message.
  if (resp_.need().more()) return Action::kNone;
  first_need_listed_ = {};
  const uint64_t total = p_.manifest->total_size();
  bytes_acked_ = total - std::min(first_need_bytes_, total);
  unreported_ack_ = true;
  phase_ = Phase::kSending;
  return Pump();
}

TransferCall::Action TransferCall::HandleResponse() {
  using R = pkgdist::v1::TransferResponse;
  const auto& chunks = p_.manifest->chunks();
  if (resp_.has_manifest_request()) return HandleManifestRequest();
  if (awaiting_request_ || preparing_delta_) {
    return Fail(absl::InternalError("agent answered an offer of delta bases without asking for the manifest"));
  }
  if (parts_left_ > 0) {
    // The agent answers only once it holds the whole manifest.
    return Fail(absl::InternalError(absl::StrCat(
        "agent answered before the manifest was sent (", parts_left_, " parts to go)")));
  }
  switch (resp_.msg_case()) {
    case R::kNeed: {
      if (phase_ == Phase::kOffered) {
        return HandleFirstNeed();
      } else {
        // A re-request: the agent dropped these (hash mismatch, a local
        // copy that failed its hash, or a source that failed); send them.
        if (!resp_.need().source_failed().empty() && unreported_source_failed_.empty()) {
          unreported_source_failed_ = resp_.need().source_failed();
          unreported_ack_ = true;
        }
        // They go first, in the order asked (ascending), so that
        // consecutive ones still travel as runs.
        std::vector<uint32_t> again;
        for (uint32_t i : resp_.need().indices()) {
          if (i >= inflight_.size()) continue;
          if (inflight_[i] == kSent) {
            inflight_bytes_ -= chunks[static_cast<int>(i)].length();
            --inflight_count_;
          } else if (inflight_[i] == kLocal || inflight_[i] == kPeer) {
            --local_count_;
          }
          inflight_[i] = kNotPending;
          again.push_back(i);
        }
        queue_.insert(queue_.begin(), again.begin(), again.end());
      }
      return Pump();
    }
    case R::kAck: {
      uint64_t acked_chunks = 0, acked_bytes = 0;
      for (uint32_t i : resp_.ack().indices()) {
        if (i >= inflight_.size() || inflight_[i] == kNotPending) continue;
        uint32_t len = chunks[static_cast<int>(i)].length();
        bytes_acked_ += len;
        if (inflight_[i] == kLocal) {
          --local_count_;
          unreported_reused_ += len;
        } else if (inflight_[i] == kPeer) {
          --local_count_;
          unreported_from_peer_ += len;
        } else {
          inflight_bytes_ -= len;
          --inflight_count_;
          ++acked_chunks;
          acked_bytes += len;
        }
        inflight_[i] = kNotPending;
      }
      if (p_.metrics != nullptr) p_.metrics->ChunksAcked(acked_chunks, acked_bytes);
      unreported_ack_ = true;
      return Pump();
    }
    case R::kPublished:
      if (resp_.published().package_id() != p_.package_id) {
        return Fail(absl::DataLossError("agent published another package id"));
      }
      phase_ = Phase::kPublished;
      bytes_acked_ = p_.manifest->total_size();
      unreported_ack_ = true;
      return Action::kNone;
    default:
      return Fail(absl::InternalError("agent sent an empty message"));
  }
}

TransferCall::Action TransferCall::Pump() {
  if (write_in_flight_ || writes_done_ || read_done_ || !failure_.ok()) return Action::kNone;
  if (phase_ != Phase::kSending) return Action::kNone;
  const auto& chunks = p_.manifest->chunks();
  if (queue_.empty()) {
    if (inflight_count_ > 0 || local_count_ > 0) return Action::kNone;
    req_.Clear();
    req_.mutable_commit();
    Stage();
    phase_ = Phase::kCommitted;
    write_in_flight_ = true;
    return Action::kWrite;
  }
  uint32_t idx = queue_.front();
  if (!ready_ || ready_index_ != idx || ready_count_ > RunAtFront()) {
    RequestRead();  // OnChunkRead pumps again
    return Action::kNone;
  }
  const uint32_t count = ready_count_;
  const uint64_t len = ready_data_.size();
  if (inflight_count_ > 0 && inflight_bytes_ + len > p_.window_bytes) return Action::kNone;
  // The transfer's own pace, then the shared limits; a message held back
  // goes when Tick() comes back.
  if (p_.max_bytes_per_second > 0) {
    int64_t now = clock_->NowMs();
    double rate = static_cast<double>(p_.max_bytes_per_second);
    allowance_ = std::min(rate / 5, allowance_ + rate * static_cast<double>(now - allowance_ms_) / 1000);
    allowance_ms_ = now;
    if (allowance_ < 0) {
      last_held_ms_ = now;
      return Action::kNone;
    }
  }
  if (throttle_ != nullptr && !throttle_->Admit(len)) {
    last_held_ms_ = clock_->NowMs();
    return Action::kNone;
  }
  if (p_.max_bytes_per_second > 0) allowance_ -= static_cast<double>(len);
  queue_.erase(queue_.begin(), queue_.begin() + count);
  // The run read ahead goes out as it is, referenced by the message.
  out_ = EncodeChunkRequest(idx, count > 1 ? count : 0, ready_data_);
  ready_data_ = grpc::Slice();
  ready_ = false;
  if (!queue_.empty()) RequestRead();
  for (uint32_t i = idx; i < idx + count; ++i) {
    const uint32_t chunk_len = chunks[static_cast<int>(i)].length();
    inflight_[i] = kSent;
    inflight_bytes_ += chunk_len;
    ++inflight_count_;
    unreported_sent_ += chunk_len;
    if (p_.metrics != nullptr) {
      bool again = false;
      if (p_.sent_before != nullptr && i < p_.sent_before->size()) {
        again = (*p_.sent_before)[i];
        (*p_.sent_before)[i] = true;
      }
      p_.metrics->ChunkSent(chunk_len, again);
    }
  }
  write_in_flight_ = true;
  return Action::kWrite;
}

void TransferCall::OnWriteDone(bool ok) {
  Action action = Action::kNone;
  bool release_hold;
  {
    absl::MutexLock l(&mu_);
    write_in_flight_ = false;
    release_hold = std::exchange(write_holds_call_, false);
    if (!ok) {
      // The stream is broken; the read side ends too.
    } else if (phase_ == Phase::kOffered) {
      // While the manifest goes out the agent owes no answer: the silence
      // bound (Tick) counts from the last write of it.
      last_heard_ms_ = clock_->NowMs();
      if (parts_left_ > 0 && failure_.ok() && !read_done_) {
        NextManifestPart();
        Stage();
        write_in_flight_ = true;
        action = Action::kWrite;
      }
    } else if (phase_ == Phase::kCommitted && !writes_done_) {
      writes_done_ = true;
      action = Action::kWritesDone;
    } else {
      action = Pump();
    }
  }
  Perform(action);
  if (release_hold) RemoveHold();  // May end the call: nothing after this line.
}

void TransferCall::Tick() {
  Action action = Action::kNone;
  {
    absl::MutexLock l(&mu_);
    if (read_done_) return;
    int64_t now = clock_->NowMs();
    // After Commit the agent seals the staged tree (sets every entry's
    // mode, creates symlinks, fsyncs every directory) and renames it into
    // place; on a slow disk with many files that takes longer than the gap
    // between chunks, so the bound is 4 x detect-seconds, at least 120 s.
    int64_t bound_ms = int64_t{p_.detect_seconds} * 1000;
    if (phase_ == Phase::kCommitted) bound_ms = std::max<int64_t>(bound_ms * 4, 120'000);
    bool owes_us = (phase_ == Phase::kOffered && !preparing_delta_) || phase_ == Phase::kCommitted ||
                   inflight_count_ > 0 || local_count_ > 0;
    const int64_t since_ms = std::max(last_heard_ms_, last_held_ms_);
    if (owes_us && now - since_ms > bound_ms) {
      action = Fail(absl::DeadlineExceededError(
          absl::StrCat("no answer from agent for ", (now - since_ms) / 1000, " s")));
    } else {
      action = Pump();
    }
    HoldForWrite(action);
  }
  PerformDetached(action);
}

bool TransferCall::Answered() {
  absl::MutexLock l(&mu_);
  return phase_ != Phase::kOffered && failure_.ok() && !read_done_;
}

void TransferCall::PerformDetached(Action a) {
  if (a == Action::kWrite && p_.before_detached_write) p_.before_detached_write();
  Perform(a);
}

void TransferCall::HoldForWrite(Action a) {
  if (a != Action::kWrite) return;
  // Outside a reaction: keep the call alive until OnWriteDone. Legal here
  // because the read side's hold (released only after read_done_ is set
  // under this lock, which the caller checked) is still in place.
  AddHold();
  write_holds_call_ = true;
}

uint32_t TransferCall::RunAtFront() const {
  const auto& chunks = p_.manifest->chunks();
  const uint32_t first = queue_.front();
  const uint32_t file = chunks[static_cast<int>(first)].file();
  uint64_t bytes = chunks[static_cast<int>(first)].length();
  uint32_t count = 1;
  while (count < queue_.size() && queue_[count] == first + count &&
         chunks[static_cast<int>(first + count)].file() == file &&
         bytes + chunks[static_cast<int>(first + count)].length() <=
             MaxRunBytes(p_.window_bytes)) {
    bytes += chunks[static_cast<int>(first + count)].length();
    ++count;
  }
  return count;
}

void TransferCall::RequestRead() {
  if (reading_) return;
  reading_ = true;
  ready_ = false;
  const uint32_t index = queue_.front();
  const uint32_t count = RunAtFront();
  ready_data_ = grpc::Slice();
  p_.read_pool->Submit([self = shared_from_this(), index, count] {
    absl::StatusOr<grpc::Slice> run;
    {
      absl::MutexLock rl(&self->read_mu_);
      run = self->reader_.ReadRun(index, count);
    }
    self->OnChunkRead(index, count, std::move(run));
  });
}

void TransferCall::OnChunkRead(uint32_t index, uint32_t count, absl::StatusOr<grpc::Slice> data) {
  Action action = Action::kNone;
  {
    absl::MutexLock l(&mu_);
    reading_ = false;
    if (read_done_ || !failure_.ok()) return;
    if (!data.ok()) {
      action = Fail(absl::InternalError(
          absl::StrCat("reading package content: ", data.status().message())));
    } else {
      ready_data_ = *std::move(data);
      ready_index_ = index;
      ready_count_ = count;
      ready_ = true;
      action = Pump();
    }
    HoldForWrite(action);
  }
  PerformDetached(action);
}

void TransferCall::Cancel(const std::string& why) {
  {
    absl::MutexLock l(&mu_);
    if (read_done_) return;
    Fail(absl::CancelledError(why));
  }
  ctx_.TryCancel();
}

void TransferCall::MaybeReportProgress(bool force) {
  absl::MutexLock pl(&progress_mu_);
  Progress p;
  int64_t now = clock_->NowMs();
  {
    absl::MutexLock l(&mu_);
    if (!force && now - last_report_ms_ < kProgressReportMs) return;
    if (unreported_sent_ == 0 && !unreported_ack_) return;
    p.bytes_acked = bytes_acked_;
    p.bytes_sent_delta = std::exchange(unreported_sent_, 0);
    p.bytes_reused_delta = std::exchange(unreported_reused_, 0);
    p.bytes_from_peer_delta = std::exchange(unreported_from_peer_, 0);
    p.source_failed = std::exchange(unreported_source_failed_, "");
    p.acked = std::exchange(unreported_ack_, false);
  }
  last_report_ms_ = now;
  on_progress_(p);
}

void TransferCall::OnDone(const grpc::Status& status) {
  MaybeReportProgress(true);
  TransferResult r;
  {
    absl::MutexLock l(&mu_);
    read_done_ = true;
    throttle_.reset();  // before on_done_: see throttle_
    r.published = phase_ == Phase::kPublished;
    if (!r.published) {
      if (!failure_.ok()) {
        r.status = failure_;
      } else if (!status.ok()) {
        r.status = FromGrpc(status);
      } else {
        r.status = absl::InternalError("agent ended the transfer without publishing");
      }
    }
  }
  on_done_(r);
  self_.reset();  // May delete this: nothing after this line.
}

}  // namespace pkgdist
