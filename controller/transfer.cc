#include "controller/transfer.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "shared/grpc_options.h"
#include "shared/logging.h"

namespace pkgdist {
namespace {

constexpr int64_t kProgressReportMs = 250;

}  // namespace

std::shared_ptr<TransferCall> TransferCall::Start(pkgdist::v1::Agent::StubInterface* stub,
                                                  TransferParams params, const Clock* clock,
                                                  ProgressFn on_progress, DoneFn on_done) {
  std::shared_ptr<TransferCall> call(
      new TransferCall(std::move(params), clock, std::move(on_progress), std::move(on_done)));
  call->self_ = call;
  call->ctx_.AddMetadata(kJobIdMetadataKey, call->p_.job_id);
  stub->async()->Transfer(&call->ctx_, call.get());
  {
    absl::MutexLock l(&call->mu_);
    auto* offer = call->req_.mutable_offer();
    *offer->mutable_manifest() = *call->p_.manifest;
    offer->set_package_id(call->p_.package_id);
    offer->set_window_bytes(call->p_.window_bytes);
    if (call->p_.signature.ByteSizeLong() > 0) *offer->mutable_signature() = call->p_.signature;
    call->write_in_flight_ = true;
    call->last_heard_ms_ = clock->NowMs();
    call->allowance_ms_ = call->last_heard_ms_;
  }
  call->StartWrite(&call->req_);
  call->StartRead(&call->resp_);
  // Held until the read side ends, so that Tick() may start writes.
  call->AddHold();
  call->StartCall();
  return call;
}

TransferCall::TransferCall(TransferParams params, const Clock* clock, ProgressFn on_progress,
                           DoneFn on_done)
    : p_(std::move(params)),
      clock_(clock),
      on_progress_(std::move(on_progress)),
      on_done_(std::move(on_done)),
      reader_(p_.tree, p_.manifest),
      inflight_(static_cast<size_t>(p_.manifest->chunks_size()), 0) {}

TransferCall::Action TransferCall::Fail(absl::Status s) {
  if (failure_.ok()) failure_ = std::move(s);
  return Action::kCancel;
}

void TransferCall::Perform(Action a) {
  switch (a) {
    case Action::kWrite:
      StartWrite(&req_);
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

TransferCall::Action TransferCall::HandleResponse() {
  using R = pkgdist::v1::TransferResponse;
  const auto& chunks = p_.manifest->chunks();
  switch (resp_.msg_case()) {
    case R::kNeed: {
      if (phase_ == Phase::kOffered) {
        // The first Need: everything not listed is already durable there.
        uint64_t needed = 0;
        for (uint32_t i : resp_.need().indices()) {
          if (i >= static_cast<uint32_t>(chunks.size())) {
            return Fail(absl::InternalError(absl::StrCat("agent needs unknown chunk ", i)));
          }
          needed += chunks[static_cast<int>(i)].length();
          queue_.push_back(i);
        }
        bytes_acked_ = p_.manifest->total_size() - std::min(needed, p_.manifest->total_size());
        unreported_ack_ = true;
        phase_ = Phase::kSending;
      } else {
        // A re-request: the agent dropped these (hash mismatch); send again.
        for (uint32_t i : resp_.need().indices()) {
          if (i >= inflight_.size()) continue;
          if (inflight_[i]) {
            inflight_[i] = 0;
            inflight_bytes_ -= chunks[static_cast<int>(i)].length();
            --inflight_count_;
          }
          queue_.push_front(i);
        }
      }
      return Pump();
    }
    case R::kAck: {
      uint64_t acked_chunks = 0, acked_bytes = 0;
      for (uint32_t i : resp_.ack().indices()) {
        if (i >= inflight_.size() || !inflight_[i]) continue;
        inflight_[i] = 0;
        uint32_t len = chunks[static_cast<int>(i)].length();
        inflight_bytes_ -= len;
        --inflight_count_;
        bytes_acked_ += len;
        ++acked_chunks;
        acked_bytes += len;
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
    if (inflight_count_ > 0) return Action::kNone;
    req_.Clear();
    req_.mutable_commit();
    phase_ = Phase::kCommitted;
    write_in_flight_ = true;
    return Action::kWrite;
  }
  uint32_t idx = queue_.front();
  uint32_t len = chunks[static_cast<int>(idx)].length();
  if (!ready_ || ready_index_ != idx) {
    RequestRead(idx);  // OnChunkRead pumps again
    return Action::kNone;
  }
  if (inflight_count_ > 0 && inflight_bytes_ + len > p_.window_bytes) return Action::kNone;
  if (p_.max_bytes_per_second > 0) {
    int64_t now = clock_->NowMs();
    double rate = static_cast<double>(p_.max_bytes_per_second);
    allowance_ = std::min(rate / 5, allowance_ + rate * static_cast<double>(now - allowance_ms_) / 1000);
    allowance_ms_ = now;
    if (allowance_ < 0) return Action::kNone;  // Tick() comes back.
    allowance_ -= len;
  }
  queue_.pop_front();
  // The chunk read ahead becomes the message's data, and the previous
  // chunk's buffer (its write is done) the next read's: two 1 MiB buffers
  // per transfer, no allocation and no copy per chunk.
  auto* c = req_.mutable_chunk();
  c->set_index(idx);
  c->mutable_data()->swap(ready_data_);
  ready_ = false;
  if (!queue_.empty()) RequestRead(queue_.front());
  inflight_[idx] = 1;
  inflight_bytes_ += len;
  ++inflight_count_;
  unreported_sent_ += len;
  if (p_.metrics != nullptr) {
    bool again = false;
    if (p_.sent_before != nullptr && idx < p_.sent_before->size()) {
      again = (*p_.sent_before)[idx];
      (*p_.sent_before)[idx] = true;
    }
    p_.metrics->ChunkSent(len, again);
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
    bool owes_us = phase_ == Phase::kOffered || phase_ == Phase::kCommitted || inflight_count_ > 0;
    if (owes_us && now - last_heard_ms_ > bound_ms) {
      action = Fail(absl::DeadlineExceededError(
          absl::StrCat("no answer from agent for ", (now - last_heard_ms_) / 1000, " s")));
    } else {
      action = Pump();
    }
    HoldForWrite(action);
  }
  PerformDetached(action);
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

void TransferCall::RequestRead(uint32_t index) {
  if (reading_) return;
  reading_ = true;
  ready_ = false;
  std::string buf = std::move(ready_data_);
  p_.read_pool->Submit([self = shared_from_this(), index, buf = std::move(buf)]() mutable {
    absl::Status s;
    {
      absl::MutexLock rl(&self->read_mu_);
      s = self->reader_.Read(index, &buf);
    }
    self->OnChunkRead(index, std::move(buf), std::move(s));
  });
}

void TransferCall::OnChunkRead(uint32_t index, std::string data, absl::Status status) {
  Action action = Action::kNone;
  {
    absl::MutexLock l(&mu_);
    reading_ = false;
    if (read_done_ || !failure_.ok()) return;
    if (!status.ok()) {
      action = Fail(absl::InternalError(absl::StrCat("reading package content: ", status.message())));
    } else {
      ready_data_ = std::move(data);
      ready_index_ = index;
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
  uint64_t acked, sent;
  bool ack;
  int64_t now = clock_->NowMs();
  {
    absl::MutexLock l(&mu_);
    if (!force && now - last_report_ms_ < kProgressReportMs) return;
    if (unreported_sent_ == 0 && !unreported_ack_) return;
    acked = bytes_acked_;
    sent = std::exchange(unreported_sent_, 0);
    ack = std::exchange(unreported_ack_, false);
  }
  last_report_ms_ = now;
  on_progress_(acked, sent, ack);
}

void TransferCall::OnDone(const grpc::Status& status) {
  MaybeReportProgress(true);
  TransferResult r;
  {
    absl::MutexLock l(&mu_);
    read_done_ = true;
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
