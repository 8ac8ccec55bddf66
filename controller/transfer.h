// One transfer of one package to one agent: the controller's side of
// Agent.Transfer (see agent.proto), as a gRPC callback reactor so that no
// thread is held per agent.
//
//   Offer [-> ManifestPart...] -> Need... -> Chunk... (at most window_bytes
//   unacknowledged) -> Ack... -> Commit -> Published
//
// A manifest larger than kManifestPartBytes goes out as an Offer holding its
// first files and ManifestPart messages of about that size, each built from
// the shared manifest when the previous write is done (one part in memory
// at a time, never a second copy of the manifest). With delta bases, the
// Offer names them and carries no entries; the agent's ManifestRequest
// picks one it holds (the delta's parts are diffed on the read pool, once
// per pair for all transfers: controller/manifest_deltas.h) or none (the
// whole manifest, in parts). The agent may split its first Need
// (Need.more); the messages count as one.
//
// The agent's Need is the truth for resume: only chunks it lacks are sent,
// so a broken transfer re-sends at most one window. Chunks the Need lists as
// local the agent copies from its own chunk store; they are acknowledged
// like sent ones (Commit waits for them), or re-requested if the local copy
// failed its hash. A later Need re-requests a chunk that failed its hash on
// the agent.
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
#include "controller/bandwidth.h"
#include "controller/chunk_reader.h"
#include "controller/manifest_deltas.h"
#include "controller/metrics.h"
#include "controller/package_store.h"
#include "controller/read_pool.h"
#include "pkgdist/v1/agent.grpc.pb.h"
#include "shared/clock.h"
#include "shared/grpc_options.h"

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
  // The shared limits (egress, site, agent) each message must pass; null:
  // none.
  std::shared_ptr<Throttle> throttle;
  int detect_seconds = 15;
  ReadPool* read_pool = nullptr;  // required; must outlive the call
  // Packages (32 raw bytes each, newest first, at most kMaxDeltaBases) of
  // which the manifest can go out as a delta, diffed by `deltas` (which
  // must outlive the call). Empty, or no `deltas`: the Offer carries the
  // manifest itself.
  std::vector<std::string> delta_bases;
  ManifestDeltas* deltas = nullptr;
  // Counts the chunks sent and acknowledged; null counts nothing. Must
  // outlive the call.
  ControllerMetrics* metrics = nullptr;
  // One flag per chunk: sent to this target before (set here as chunks go
  // out; a chunk sent while its flag is set counts as re-sent). Shared with
  // the engine, which keeps it across attempts; used by one call at a time.
  // Null: nothing counts as re-sent.
  std::shared_ptr<std::vector<bool>> sent_before;
  // Relays (docs/sites.md): the agents of this target's site that may fetch
  // the package from it (Offer.serve_peers), and the agent of its site it
  // fetches its chunks from instead of from us (empty: none).
  std::vector<std::string> serve_peers;
  std::string source_agent;
  std::string source_address;
  // Tests only: runs between deciding a write outside a reaction (Tick, a
  // finished read) and starting it, the gap the reactor hold covers.
  std::function<void()> before_detached_write;
};

struct TransferResult {
  bool published = false;
  absl::Status status;  // why it did not publish
};

// The requests go out as ByteBuffers: a chunk's bytes as read from disk, not
// copied into a serialized message (shared/chunk_wire.h).
class TransferCall final
    : public grpc::ClientBidiReactor<grpc::ByteBuffer, pkgdist::v1::TransferResponse>,
      public std::enable_shared_from_this<TransferCall> {
 public:
  // What changed since the last report.
  struct Progress {
    uint64_t bytes_acked = 0;         // absolute
    uint64_t bytes_sent_delta = 0;    // chunk bytes sent since the last report
    uint64_t bytes_reused_delta = 0;  // bytes the agent filled from its chunk store, acknowledged
    uint64_t bytes_from_peer_delta = 0;  // bytes it fetched from its source, acknowledged
    bool acked = false;               // an acknowledgement arrived
    // The agent could not take its chunks from the source: why (once).
    std::string source_failed;
  };
  using ProgressFn = std::function<void(const Progress&)>;
  using DoneFn = std::function<void(const TransferResult&)>;

  // Calls Agent.Transfer on `channel` (the agent's, AgentPool::Channel).
  static std::shared_ptr<TransferCall> Start(const std::shared_ptr<grpc::Channel>& channel,
                                             TransferParams params, const Clock* clock,
                                             ProgressFn on_progress, DoneFn on_done);

  // Periodic housekeeping from the owner's thread: refills the bandwidth
  // allowance, sends what it allows, and cancels the call if the agent has
  // sent nothing for `detect_seconds` while it owes us an answer.
  void Tick();
  // Ends the call (the result will be CANCELLED with `why`).
  void Cancel(const std::string& why);
  // The agent has answered the Offer (a Need, or Published): it holds the
  // grant of serve_peers, so its peers may be pointed at it.
  bool Answered();

  void OnReadDone(bool ok) override;
  void OnWriteDone(bool ok) override;
  void OnDone(const grpc::Status& status) override;

 private:
  TransferCall(TransferParams params, const Clock* clock, ProgressFn on_progress, DoneFn on_done);
  enum class Phase { kOffered, kSending, kCommitted, kPublished };
  // What to do once mu_ is released.
  enum class Action { kNone, kWrite, kWritesDone, kCancel };

  Action HandleResponse() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // One message of the agent's first Need (the last one has more = false).
  Action HandleFirstNeed() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Marks chunk `index` listed by the first Need; false if out of range or
  // listed already.
  bool ListOnce(uint32_t index) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Fills the Offer's manifest (in req_) with the first part of it; sets
  // parts_left_ to the number of ManifestPart messages to follow.
  void FillOffer() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Puts the next ManifestPart into req_.
  void NextManifestPart() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // The agent's ManifestRequest: the whole manifest, or the delta it names.
  Action HandleManifestRequest() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Sends the requested manifest: every part, or the whole manifest in
  // parts if `delta` is null.
  Action SendRequestedManifest(std::shared_ptr<const ManifestDeltas::Parts> delta)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // The read pool's answer to a delta.
  void OnDeltaReady(absl::StatusOr<std::shared_ptr<const ManifestDeltas::Parts>> parts)
      ABSL_LOCKS_EXCLUDED(mu_);
  Action Pump() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  Action Fail(absl::Status s) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void Perform(Action a) ABSL_LOCKS_EXCLUDED(mu_);
  // Perform() for an action decided outside a reaction (after HoldForWrite).
  void PerformDetached(Action a) ABSL_LOCKS_EXCLUDED(mu_);
  // Before a write that starts outside a reaction (see the file comment).
  void HoldForWrite(Action a) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // How many chunks from the queue's front go in one message: consecutive
  // indices of one file, at most kMaxRunBytes in all (always at least one).
  uint32_t RunAtFront() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Asks the read pool for the run at the queue's front unless a read is
  // running.
  void RequestRead() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // The read pool's answer.
  void OnChunkRead(uint32_t index, uint32_t count, absl::StatusOr<grpc::Slice> data)
      ABSL_LOCKS_EXCLUDED(mu_);
  // Serializes req_ into out_, the message the next write sends.
  void Stage() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void MaybeReportProgress(bool force);

  std::shared_ptr<TransferCall> self_;  // Set by Start, dropped in OnDone.

  // TransferParams.throttle, taken out of p_: a Throttle must not outlive
  // its Bandwidth (the engine's), and gRPC may drop the last reference to
  // this call after the engine's Stop() has returned, so OnDone releases it
  // before it reports the end.
  std::shared_ptr<Throttle> throttle_ ABSL_GUARDED_BY(mu_);
  const TransferParams p_;
  const Clock* clock_;
  ProgressFn on_progress_;
  DoneFn on_done_;
  grpc::ClientContext ctx_;
  absl::Mutex read_mu_;  // held by the read in flight (at most one)
  ChunkReader reader_ ABSL_GUARDED_BY(read_mu_);

  absl::Mutex mu_;
  // The next message other than a chunk is built in req_; out_ is what the
  // write in flight sends.
  pkgdist::v1::TransferRequest req_ ABSL_GUARDED_BY(mu_);
  grpc::ByteBuffer out_ ABSL_GUARDED_BY(mu_);
  pkgdist::v1::TransferResponse resp_ ABSL_GUARDED_BY(mu_);
  Phase phase_ ABSL_GUARDED_BY(mu_) = Phase::kOffered;
  // ManifestPart messages not yet started, and where the next one begins in
  // the manifest (every file goes out before the first chunk).
  uint32_t parts_left_ ABSL_GUARDED_BY(mu_) = 0;
  int part_file_ ABSL_GUARDED_BY(mu_) = 0;
  int part_chunk_ ABSL_GUARDED_BY(mu_) = 0;
  // The Offer named delta bases and the agent has not asked yet; a delta
  // is being diffed; the parts answer a request (they carry `more`); the
  // delta's parts, the next one to send.
  bool awaiting_request_ ABSL_GUARDED_BY(mu_) = false;
  bool preparing_delta_ ABSL_GUARDED_BY(mu_) = false;
  bool requested_ ABSL_GUARDED_BY(mu_) = false;
  std::shared_ptr<const ManifestDeltas::Parts> delta_ ABSL_GUARDED_BY(mu_);
  size_t delta_next_ ABSL_GUARDED_BY(mu_) = 0;
  // Bytes the messages of the first Need so far list as needed or local.
  uint64_t first_need_bytes_ ABSL_GUARDED_BY(mu_) = 0;
  std::vector<bool> first_need_listed_ ABSL_GUARDED_BY(mu_);  // until the Need's last message
  std::deque<uint32_t> queue_ ABSL_GUARDED_BY(mu_);
  // Per chunk: kSent if sent and not acknowledged, kLocal if the agent said
  // it fills the chunk from its own chunk store and has not acknowledged it,
  // kPeer likewise for a chunk it fetches from its source.
  enum Pending : uint8_t { kNotPending = 0, kSent = 1, kLocal = 2, kPeer = 3 };
  std::vector<uint8_t> inflight_ ABSL_GUARDED_BY(mu_);
  size_t local_count_ ABSL_GUARDED_BY(mu_) = 0;  // chunks kLocal or kPeer
  uint64_t unreported_reused_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t unreported_from_peer_ ABSL_GUARDED_BY(mu_) = 0;
  std::string unreported_source_failed_ ABSL_GUARDED_BY(mu_);
  uint64_t inflight_bytes_ ABSL_GUARDED_BY(mu_) = 0;
  size_t inflight_count_ ABSL_GUARDED_BY(mu_) = 0;
  bool write_in_flight_ ABSL_GUARDED_BY(mu_) = false;
  bool write_holds_call_ ABSL_GUARDED_BY(mu_) = false;  // started outside a reaction
  bool reading_ ABSL_GUARDED_BY(mu_) = false;           // a read is in the pool
  bool ready_ ABSL_GUARDED_BY(mu_) = false;             // ready_data_ holds ready_index_
  uint32_t ready_index_ ABSL_GUARDED_BY(mu_) = 0;
  uint32_t ready_count_ ABSL_GUARDED_BY(mu_) = 0;
  // The run read ahead, in a buffer of its own that the message references
  // until gRPC has sent it.
  grpc::Slice ready_data_ ABSL_GUARDED_BY(mu_);
  bool writes_done_ ABSL_GUARDED_BY(mu_) = false;
  bool read_done_ ABSL_GUARDED_BY(mu_) = false;
  double allowance_ ABSL_GUARDED_BY(mu_) = 0;
  int64_t allowance_ms_ ABSL_GUARDED_BY(mu_) = 0;
  int64_t last_heard_ms_ ABSL_GUARDED_BY(mu_) = 0;
  // When a limit last held a message back. The agent acknowledges every
  // half window, so while the controller holds chunks back the agent owes
  // no answer: the silence bound counts from the later of the two. (A
  // dead or frozen agent is still found by the channel's keepalive.)
  int64_t last_held_ms_ ABSL_GUARDED_BY(mu_) = 0;
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
