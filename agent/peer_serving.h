// The relay side of FetchChunks (agent.proto, docs/sites.md "Relays"): what
// this agent may serve to the other agents of its site, and the serving.
//
// The controller names, in each Offer, the agents that may fetch that
// package from this one (serve_peers). The grant lives in memory only: it
// ends when the agent restarts, when a later Offer of the package replaces
// it, when the package is removed, or when kMaxServedPackages newer grants
// push it out. A peer refused here falls back to the controller, so losing
// a grant costs bytes over the WAN, never correctness: every peer verifies
// every chunk against the controller's manifest.
//
// A chunk is served once it is durable in staging (the transfer session
// says so as its flushes finish) or once the package is published; a peer
// asking for a chunk not yet here waits, with a Waiting message every
// kWaitingEveryMs, for as long as it keeps its call. Thread-safe: sessions
// report from their threads, gRPC serves from its own.
#ifndef PKGDIST_AGENT_PEER_SERVING_H_
#define PKGDIST_AGENT_PEER_SERVING_H_

#include <cstdint>
#include <functional>
#include <list>
#include <memory>
#include <string>
#include <vector>

#include "absl/container/flat_hash_set.h"
#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "pkgdist/v1/agent.pb.h"
#include "pkgdist/v1/manifest.pb.h"

namespace pkgdist {

inline constexpr size_t kMaxServedPackages = 16;
inline constexpr int kWaitingEveryMs = 1000;

class PeerServing {
 public:
  // Package `id` (32 raw bytes) may be served to `peers` (agent names):
  // chunks flagged in `durable` are read from `staging_tree`, and once
  // Published() from `published_tree`. A grant of `id` already here takes
  // the new peers and flags (its staging was opened and checked again), and
  // calls being served go on: a chunk no longer durable is waited for.
  void Grant(const std::string& id, const pkgdist::v1::Manifest& manifest,
             std::vector<std::string> peers, std::string staging_tree, std::string published_tree,
             std::vector<bool> durable);
  // These chunks of `id` are durable in staging now (no grant: nothing).
  void Durable(const std::string& id, const std::vector<uint32_t>& chunks);
  // `id` is published: every chunk is in its published tree.
  void Published(const std::string& id);
  // name@version was removed here: its grants end.
  void Forget(const std::string& name, const std::string& version);
  bool Granted(const std::string& id) const;

  // Serves `request` to agent `peer`: writes each chunk asked for, in order,
  // runs of consecutive chunks of one file of at most kMaxRunBytes per
  // message. PERMISSION_DENIED if `peer` is not granted the package,
  // INVALID_ARGUMENT for indices out of range or not ascending, CANCELLED
  // once `cancelled` says so or `write` fails, NOT_FOUND if the grant ends
  // meanwhile, INTERNAL for a read that fails here.
  using WriteFn = std::function<bool(const pkgdist::v1::FetchChunksResponse&)>;
  absl::Status Serve(const std::string& peer, const pkgdist::v1::FetchChunksRequest& request,
                     const WriteFn& write, const std::function<bool()>& cancelled);

  // Bytes of chunks served since start, for the metrics.
  uint64_t served_bytes() const;

 private:
  struct Entry {
    std::string id;
    std::string label;  // name@version
    std::string name, version;
    // The chunk list only: where each chunk lives and how long it is.
    std::vector<pkgdist::v1::ChunkRef> chunks;
    std::vector<std::string> paths;  // per file, relative
    absl::flat_hash_set<std::string> peers;
    std::string staging_tree, published_tree;
    std::vector<bool> durable;
    bool published = false;
    bool ended = false;  // forgotten or pushed out
  };
  // The grant of `id`, or null.
  std::shared_ptr<Entry> Find(const std::string& id) const ABSL_SHARED_LOCKS_REQUIRED(mu_);
  // Where an entry's chunks are, copied under mu_ for a read without it.
  struct Trees {
    bool published = false;
    std::string staging_tree, published_tree;
  };
  // Reads chunks [first, first + count) of `e` (one file) into `out`. The
  // chunk list and paths of an entry never change; the rest is in `trees`.
  static absl::Status ReadRun(const Entry& e, const Trees& trees, uint32_t first, uint32_t count,
                              std::string* out);

  mutable absl::Mutex mu_;
  // Newest first; at most kMaxServedPackages.
  std::list<std::shared_ptr<Entry>> entries_ ABSL_GUARDED_BY(mu_);
  // Signalled when chunks become durable and when grants end.
  absl::CondVar changed_;
  uint64_t served_bytes_ ABSL_GUARDED_BY(mu_) = 0;
};

}  // namespace pkgdist

#endif  // PKGDIST_AGENT_PEER_SERVING_H_
