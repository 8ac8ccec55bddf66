// The agent side of one Agent.Transfer stream, below the gRPC layer.
//
//   Offer   -> (with manifest_parts: read that many ManifestParts first,
//              appending them to its manifest, refusing as soon as they
//              exceed the limits; with delta_bases: ManifestRequest{the
//              newest of them published here, or none}, then ManifestParts
//              until more = false, a delta of that base
//              (shared/manifest_delta.h) or the whole manifest) validate the manifest and its id; check its signature
//              (agent/signature_policy.h); Published at once if this
//              package is already published; else open (resume) staging,
//              check free space, Need{indices, local}: the chunks to send,
//              and those the chunk store holds (agent/chunk_index.h), which
//              are then copied, verified and acknowledged; a Need of more
//              than need_indices_per_message indices goes out in several
//              messages, more = true on all but the last
//   Chunk   -> verify and write; a hash mismatch re-requests the chunk
//              (Need{index}) without ending the stream, up to
//              kMaxMismatchesPerChunk times (then DATA_LOSS: the sender's
//              copy is damaged); Ack{indices} once
//              durable. A flush starts every half window, when the
//              sender's window may be full and when every chunk has been
//              received; it runs on the writer's task thread while this one
//              receives on, and that thread sends its Ack as soon as the
//              chunks are journaled, even while this one waits for data.
//              The session waits for a flush only when every chunk has
//              arrived and on the rare paths: a duplicate, a corrupt chunk,
//              a switch to another file.
//   Commit  -> only when every chunk is acknowledged; check the signature
//              again, verify, publish, Published
//
// Errors end the stream with the status Run() returns: INVALID_ARGUMENT or
// DATA_LOSS for protocol and manifest violations, ALREADY_EXISTS for another
// package published under the same name@version, FAILED_PRECONDITION for a
// package the signature policy refuses (its staging is deleted: nothing of
// it is kept), RESOURCE_EXHAUSTED when
// the disk is (or would be) full, INTERNAL for other local disk failures.
// Whatever was made durable stays in staging, so a later Transfer resumes.
#ifndef PKGDIST_AGENT_TRANSFER_SESSION_H_
#define PKGDIST_AGENT_TRANSFER_SESSION_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "agent/metrics.h"
#include "agent/package_store.h"
#include "agent/peer_fetch.h"
#include "agent/peer_serving.h"
#include "agent/signature_policy.h"
#include "agent/staging.h"
#include "agent/transfer_locks.h"
#include "pkgdist/v1/agent.pb.h"
#include "shared/chunk_wire.h"
#include "shared/logging.h"
#include "shared/manifest.h"

namespace pkgdist {

// The message stream of one Transfer call (the gRPC stream, or a fake).
class TransferStream {
 public:
  virtual ~TransferStream() = default;
  // Blocks for the next request and replaces *request with it, as
  // ParseTransferRequest (shared/chunk_wire.h) does: a chunk's bytes are
  // request->data, valid until the next Read. False once the peer
  // half-closed or the call was cancelled (or the request was unusable:
  // the stream then ends the call with its own status).
  virtual bool Read(ReceivedRequest* request) = 0;
  // False if the response could not be sent (the call is gone).
  virtual bool Write(const pkgdist::v1::TransferResponse& response) = 0;
  // Why Read returned false if the stream did not simply end: a request
  // that did not parse. The session's outcome (its return and its metric)
  // is then this. OK by default.
  virtual absl::Status read_error() { return absl::OkStatus(); }
};

// Makes *out hold `request` as ParseTransferRequest holds a message that
// protobuf parsed: a chunk's data viewed in out->request.chunk().data().
// For streams that have whole messages (fakes in tests).
void SetReceived(pkgdist::v1::TransferRequest request, ReceivedRequest* out);

// How often one chunk may fail its hash in one stream before the stream
// ends with DATA_LOSS.
inline constexpr int kMaxMismatchesPerChunk = 3;

// At most this many indices (indices and local together) per message of the
// first Need: 200,000 varints of at most 5 bytes is under 1 MB, well inside
// any --max-message-bytes (kMinMaxMessageBytes), for packages of millions of
// chunks.
inline constexpr size_t kNeedIndicesPerMessage = 200'000;

struct TransferOptions {
  ManifestLimits limits;
  // How long a new Transfer waits for a cancelled older one of the same
  // package to let go.
  absl::Duration lock_wait = absl::Seconds(10);
  // Used when an Offer says window_bytes = 0.
  uint64_t default_window_bytes = uint64_t{4} << 20;
  // Which signatures to require; null checks none. Must outlive sessions.
  SignaturePolicy* signatures = nullptr;
  // Counts what sessions receive, reuse and reject; null counts nothing.
  // Must outlive sessions.
  AgentMetrics* metrics = nullptr;
  // This agent's name, for the `agent` field of log lines ("": none).
  std::string agent_name;
  // Where the first Need is split (kNeedIndicesPerMessage; tests set less).
  size_t need_indices_per_message = kNeedIndicesPerMessage;
  // Relays (docs/sites.md): what this agent serves to its site's peers, and
  // how it fetches from a source an Offer names. Null: it serves nothing,
  // and fetches nothing from peers (every chunk comes from the controller).
  // Must outlive sessions.
  PeerServing* serving = nullptr;
  PeerFetcher* peers = nullptr;
};

// One Transfer call. Not thread-safe; used by the thread serving the call.
// While Run() runs, the writer's task thread also Writes to the stream
// (Acks), never concurrently with this thread's Writes; no call comes from
// it after Run() returns.
class TransferSession {
 public:
  // `cancel` stops this call from another thread (ServerContext::TryCancel);
  // a newer Transfer of the same package uses it. `store` must outlive this.
  // `job_id` (the controller's, if it said) is for log lines only.
  TransferSession(PackageStore& store, const TransferOptions& options, TransferStream& stream,
                  std::function<void()> cancel, std::string peer, std::string job_id = "");
  ~TransferSession();
  TransferSession(const TransferSession&) = delete;
  TransferSession& operator=(const TransferSession&) = delete;

  // Runs the protocol until the stream ends. OK once Published was sent.
  // Every line logged meanwhile on this thread carries log_fields().
  absl::Status Run();

  // Whether the call was cancelled (ServerContext::IsCancelled), polled
  // while chunks come from a peer and no controller message is read.
  void set_cancelled(std::function<bool()> cancelled) { cancelled_ = std::move(cancelled); }

  // The job, this agent and (once offered) the package, for log lines.
  LogFields log_fields() const { return LogFields{job_id_, options_.agent_name, label_}; }

 private:
  absl::Status Serve();
  // Reads the offer's ManifestParts and appends them to its manifest.
  absl::Status ReceiveManifestParts(pkgdist::v1::Offer& offer);
  // For an offer with delta_bases: asks for the manifest as a delta of the
  // newest base published here (or whole), and builds it from the parts.
  absl::Status ReceiveRequestedManifest(pkgdist::v1::Offer& offer);
  absl::Status CheckManifestHead(const pkgdist::v1::Manifest& m) const;
  // The next request, which must be a ManifestPart (`where` names it).
  absl::Status ReadManifestPart(const std::string& where, ReceivedRequest* received);
  // Applies `part` to `m` (a delta of `base`, or entries as they are),
  // refusing a part that breaks the limits or adds nothing.
  absl::Status AppendManifestPart(const pkgdist::v1::Manifest& base,
                                  const pkgdist::v1::ManifestPart& part, const std::string& where,
                                  pkgdist::v1::Manifest* m);
  // Moves the offer's manifest into the staging it opens.
  absl::Status AcceptOffer(pkgdist::v1::Offer& offer);
  // Sends the first Need, then copies the chunks it listed as local from the
  // chunk store, acknowledging them as they become durable; requests those
  // no local copy could fill.
  absl::Status NeedAndCopyLocal();
  // Copies the first Need's local chunks from the chunk store.
  absl::Status CopyLocal(const std::vector<uint32_t>& local, uint64_t local_bytes);
  // Grants the Offer's serve_peers this package (PeerServing).
  void GrantPeers(const pkgdist::v1::Offer& offer, const pkgdist::v1::Manifest& m, bool published);
  // Fetches `peer` (the first Need's peer list) from the Offer's source,
  // verifying and acknowledging as for sent chunks; whatever the source
  // did not deliver is asked of the controller with a later Need.
  absl::Status FetchFromSource(const std::vector<uint32_t>& peer);
  absl::Status ReceiveChunks();
  // A Chunk message (its index and count, and `data_bytes` of data) within
  // the manifest: its run in range, in one file, of the manifest's length.
  // INVALID_ARGUMENT naming what is wrong.
  absl::Status CheckRun(const pkgdist::v1::Chunk& chunk, uint64_t data_bytes) const;
  // `data`: the chunk's bytes (the message's own, or received slices).
  absl::Status OnChunk(const pkgdist::v1::Chunk& chunk, Pieces data);
  // Verifies and writes one chunk of a Chunk message; a hash mismatch asks
  // for it again (Need), a duplicate is acknowledged again.
  absl::Status WriteOne(uint32_t index, const Pieces& data);
  absl::Status OnCommit();
  absl::Status OnDuplicate(uint32_t index);
  // Deletes this package's staging after the signature policy refused it.
  void DropStaging();
  // Starts a flush whose Ack the writer's task thread sends once durable.
  absl::Status StartFlush();
  // Marks finished flushes durable; `await` as in Staging::Collect.
  absl::Status Collect(Staging::Await await);
  // The sender may have to wait for an Ack before its next chunk (counting
  // flushes not yet collected, whose Acks may already be out).
  bool WindowFull() const {
    return staging_->unflushed_bytes() + staging_->flushing_bytes() + max_chunk_bytes_ >
           window_bytes_;
  }
  absl::Status SendNeed(std::vector<uint32_t> indices);
  // The first Need, split as need_indices_per_message says.
  absl::Status SendFirstNeed(const std::vector<uint32_t>& need, const std::vector<uint32_t>& local,
                             const std::vector<uint32_t>& peer);
  absl::Status SendPublished();
  absl::Status Send(const pkgdist::v1::TransferResponse& response) ABSL_LOCKS_EXCLUDED(send_mu_);
  absl::Duration SinceLastSend() ABSL_LOCKS_EXCLUDED(send_mu_);

  PackageStore& store_;
  const TransferOptions options_;
  TransferStream& stream_;
  std::function<void()> cancel_;
  std::function<bool()> cancelled_ = [] { return false; };
  const std::string peer_;
  const std::string job_id_;
  ScopedLogFields* log_scope_ = nullptr;  // Run()'s, while it runs
  // Serializes Write: Acks go out from the writer's task thread. Declared
  // before staging_, whose flushes use it.
  absl::Mutex send_mu_;
  absl::Time last_send_ ABSL_GUARDED_BY(send_mu_) = absl::Now();

  std::string package_id_;  // raw 32 bytes
  std::string label_;       // name@version, for logs
  // The Offer: Run()'s first request, or assembled_offer_ if the manifest
  // came in parts; either lives until Run() returns. Its manifest has been
  // moved into staging_ (AcceptOffer): use staging_->manifest().
  const pkgdist::v1::Offer* offer_ = nullptr;
  std::unique_ptr<pkgdist::v1::Offer> assembled_offer_;
  std::unique_ptr<TransferLocks::Lease> lease_;
  std::unique_ptr<Staging> staging_;
  bool published_ = false;
  bool serving_peers_ = false;  // GrantPeers granted this package
  // The sender's window: bytes it sends before it waits for an Ack.
  uint64_t window_bytes_ = 1;
  uint64_t flush_threshold_ = 1;
  uint64_t max_chunk_bytes_ = 0;
  absl::flat_hash_map<uint32_t, int> mismatches_;  // chunk index -> hash failures
};

}  // namespace pkgdist

#endif  // PKGDIST_AGENT_TRANSFER_SESSION_H_
