// One transfer of one package to one agent: the controller's side of
// Agent.Transfer (see agent.proto), as a gRPC callback reactor so that no
// thread is held per agent.
//
//   Offer -> Need -> Chunk... (at most window_bytes unacknowledged) -> Ack...
//   -> Commit -> Published
//
// The agent's Need is the truth for resume: only chunks it lacks are sent,
// so a broken transfer re-sends at most one window. A later Need re-requests
// a chunk that failed its hash on the agent.
//
// Package content is read on a ReadPool thread, one chunk ahead of the one
// being sent, never on a gRPC callback thread: a reaction only swaps a chunk
// that is already in memory into the outgoing message.
//
// Lifetime: Start() returns a shared_ptr; the call also holds itself until
// OnDone, which calls `on_done` exactly once. Tick() and Cancel() are safe at
// any time (they do nothing once the call has ended): a write that Tick()
// starts from outside a reaction takes a hold on the reactor (AddHold) while
// it still has one, under the lock, and releases it in OnWriteDone, so gRPC
// cannot finish the call between the decision to write and the write. No
// gRPC operation is started while a lock is held, so a reaction that gRPC
// runs inline can never deadlock.
#ifndef PKGDIST_CONTROLLER_TRANSFER_H_
#define PKGDIST_CONTROLLER_TRANSFER_H_

#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include <grpcpp/grpcpp.h>

#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "controller/chunk_reader.h"
#include "controller/metrics.h"
#include "controller/package_store.h"
#include "controller/read_pool.h"
#include "pkgdist/v1/agent.grpc.pb.h"
#include "shared/clock.h"

namespace pkgdist {

// Unacknowledged bytes per transfer (--window-bytes). The agent flushes and
// acknowledges every half window; 32 MiB rather than 8 made 1 GiB to four
// agents about 10 % faster side by side (fewer fsyncs and acks), and costs
// at most 32 MiB re-sent per interruption.
inline constexpr uint64_t kDefaultWindowBytes = uint64_t{32} << 20;

struct TransferParams {
  std::string job_id;
  std::string agent;
  std::shared_ptr<const pkgdist::v1::Manifest> manifest;
  std::string package_id;  // raw 32 bytes
  // The release owner's signature, sent in the Offer (empty if unsigned).
  pkgdist::v1::PackageSignature signature;
  std::string tree;        // where the content is read from
  uint64_t window_bytes = kDefaultWindowBytes;
  uint64_t max_bytes_per_second = 0;  // 0: unlimited
  int detect_seconds = 15;
  ReadPool* read_pool = nullptr;  // required; must outlive the call
  // Counts the chunks sent and acknowledged; null counts nothing. Must
  // outlive the call.
  ControllerMetrics* metrics = nullptr;
  // One flag per chunk: sent to this target before (set here as chunks go
  // out; a chunk sent while its flag is set counts as re-sent). Shared with
  // the engine, which keeps it across attempts; used by one call at a time.
  // Null: nothing counts as re-sent.
  std::shared_ptr<std::vector<bool>> sent_before;
  // Tests only: runs between deciding a write outside a reaction (Tick, a
  // finished read) and starting it, the gap the reactor hold covers.
  std::function<void()> before_detached_write;
};

struct TransferResult {
  bool published = false;
  absl::Status status;  // why it did not publish
};

class TransferCall final
    : public grpc::ClientBidiReactor<pkgdist::v1::TransferRequest, pkgdist::v1::TransferResponse>,
      public std::enable_shared_from_this<TransferCall> {
 public:
  // bytes_acked (absolute), bytes_sent since the last call, whether an
  // acknowledgement arrived since the last call.
  using ProgressFn = std::function<void(uint64_t, uint64_t, bool)>;
  using DoneFn = std::function<void(const TransferResult&)>;

  static std::shared_ptr<TransferCall> Start(pkgdist::v1::Agent::StubInterface* stub, TransferParams params,
                             const Clock* clock, ProgressFn on_progress, DoneFn on_done);

  // Periodic housekeeping from the owner's thread: refills the bandwidth
  // allowance, sends what it allows, and cancels the call if the agent has
  // sent nothing for `detect_seconds` while it owes us an answer.
  void Tick();
  // Ends the call (the result will be CANCELLED with `why`).
  void Cancel(const std::string& why);

  void OnReadDone(bool ok) override;
  void OnWriteDone(bool ok) override;
  void OnDone(const grpc::Status& status) override;

 private:
  TransferCall(TransferParams params, const Clock* clock, ProgressFn on_progress, DoneFn on_done);
  enum class Phase { kOffered, kSending, kCommitted, kPublished };
  // What to do once mu_ is released.
  enum class Action { kNone, kWrite, kWritesDone, kCancel };

  Action HandleResponse() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  Action Pump() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  Action Fail(absl::Status s) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void Perform(Action a) ABSL_LOCKS_EXCLUDED(mu_);
  // Perform() for an action decided outside a reaction (after HoldForWrite).
  void PerformDetached(Action a) ABSL_LOCKS_EXCLUDED(mu_);
  // Before a write that starts outside a reaction (see the file comment).
  void HoldForWrite(Action a) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Asks the read pool for chunk `index` unless a read is running.
  void RequestRead(uint32_t index) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // The read pool's answer.
  void OnChunkRead(uint32_t index, std::string data, absl::Status status) ABSL_LOCKS_EXCLUDED(mu_);
  void MaybeReportProgress(bool force);

  std::shared_ptr<TransferCall> self_;  // Set by Start, dropped in OnDone.

  const TransferParams p_;
  const Clock* clock_;
  ProgressFn on_progress_;
  DoneFn on_done_;
  grpc::ClientContext ctx_;
  absl::Mutex read_mu_;  // held by the read in flight (at most one)
  ChunkReader reader_ ABSL_GUARDED_BY(read_mu_);

  absl::Mutex mu_;
  pkgdist::v1::TransferRequest req_ ABSL_GUARDED_BY(mu_);
  pkgdist::v1::TransferResponse resp_ ABSL_GUARDED_BY(mu_);
  Phase phase_ ABSL_GUARDED_BY(mu_) = Phase::kOffered;
  std::deque<uint32_t> queue_ ABSL_GUARDED_BY(mu_);
  std::vector<uint8_t> inflight_ ABSL_GUARDED_BY(mu_);  // per chunk: 1 if sent, unacked
  uint64_t inflight_bytes_ ABSL_GUARDED_BY(mu_) = 0;
  size_t inflight_count_ ABSL_GUARDED_BY(mu_) = 0;
  bool write_in_flight_ ABSL_GUARDED_BY(mu_) = false;
  bool write_holds_call_ ABSL_GUARDED_BY(mu_) = false;  // started outside a reaction
  bool reading_ ABSL_GUARDED_BY(mu_) = false;           // a read is in the pool
  bool ready_ ABSL_GUARDED_BY(mu_) = false;             // ready_data_ holds ready_index_
  uint32_t ready_index_ ABSL_GUARDED_BY(mu_) = 0;
  // The chunk read ahead; when not ready, a spare buffer for the next read.
  std::string ready_data_ ABSL_GUARDED_BY(mu_);
  bool writes_done_ ABSL_GUARDED_BY(mu_) = false;
  bool read_done_ ABSL_GUARDED_BY(mu_) = false;
  double allowance_ ABSL_GUARDED_BY(mu_) = 0;
  int64_t allowance_ms_ ABSL_GUARDED_BY(mu_) = 0;
  int64_t last_heard_ms_ ABSL_GUARDED_BY(mu_) = 0;
  absl::Status failure_ ABSL_GUARDED_BY(mu_);
  uint64_t bytes_acked_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t unreported_sent_ ABSL_GUARDED_BY(mu_) = 0;
  bool unreported_ack_ ABSL_GUARDED_BY(mu_) = false;

  // Serializes progress reports so they reach the owner in order; taken
  // before mu_, never while holding it.
  absl::Mutex progress_mu_ ABSL_ACQUIRED_BEFORE(mu_);
  int64_t last_report_ms_ ABSL_GUARDED_BY(progress_mu_) = 0;
};

}  // namespace pkgdist

#endif  // PKGDIST_CONTROLLER_TRANSFER_H_
