// The controller's bandwidth limits, shared by every transfer: the total
// egress, each site's (its WAN link, docs/sites.md) and each agent's. A
// transfer asks its Throttle before each message; the message may go if no
// limit it counts against is paused or in debt, and then counts against all
// of them (token buckets that may go negative by one message and refill at
// their rate, holding at most 200 ms of it). A limit changed here applies to
// the next message of every running transfer; a site's windows are looked
// at every Update() (each engine pass, 100 ms).
//
// The policy itself is the state store's; the engine loads it at start and
// the admin service tells this class each change after storing it.
//
// Thread-safe: one mutex for every bucket (a message is at least one chunk,
// so at 1 GB/s that is about a thousand short critical sections a second).
#ifndef PKGDIST_CONTROLLER_BANDWIDTH_H_
#define PKGDIST_CONTROLLER_BANDWIDTH_H_

#include <cstdint>
#include <deque>
#include <set>
#include <memory>
#include <string>
#include <map>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "controller/bandwidth_policy.h"
#include "shared/clock.h"

namespace pkgdist {

class Bandwidth;
class Throttle;

// One limit's state, a token bucket; guarded by its Bandwidth's mutex.
struct BandwidthBucket {
  Rate rate;
  double allowance = 0;  // bytes; negative: in debt
  int64_t at_ms = 0;     // when allowance was last refilled
  uint64_t bytes = 0;    // counted since this process started
  std::deque<std::pair<int64_t, uint64_t>> samples;  // (ms, bytes), the last 3 s
  // Shared by several transfers (egress, a site): they take turns. The
  // transfers that the bucket alone holds back, oldest wait first; a
  // waiter that stopped asking is dropped when it reaches the front.
  bool shared = false;
  std::set<std::pair<std::pair<int64_t, uint64_t>, Throttle*>> waiters;
};

// What the transfers to one agent count against. Cheap to hold; made by
// Bandwidth::ThrottleFor, and must not outlive it.
//
// Fairness: where a shared limit has room, a transfer that has waited for
// it longer goes first, so one transfer cannot take a site's whole budget
// by asking first after each refill. Only waits for shared limits count;
// a transfer held by its own agent's limit or a pause waits on no one's
// turn.
class Throttle {
 public:
  ~Throttle();
  Throttle(const Throttle&) = delete;
  Throttle& operator=(const Throttle&) = delete;

  // True if a message of `bytes` may go now (it is then counted); false:
  // ask again later (the engine ticks every transfer each pass).
  bool Admit(uint64_t bytes);

 private:
  friend class Bandwidth;
  using Bucket = BandwidthBucket;
  Throttle(Bandwidth* owner, std::vector<std::shared_ptr<Bucket>> buckets, uint64_t id)
      : owner_(owner), buckets_(std::move(buckets)), id_(id) {}
  // Its place in a bucket's waiters: since when it waits, then its id.
  std::pair<std::pair<int64_t, uint64_t>, Throttle*> Key() { return {{waiting_since_ms_, id_}, this}; }

  Bandwidth* const owner_;
  const std::vector<std::shared_ptr<Bucket>> buckets_;
  const uint64_t id_;
  // Guarded by owner_->mu_.
  int64_t waiting_since_ms_ = 0;  // 0: not waiting
  int64_t last_ask_ms_ = 0;
};

class Bandwidth {
 public:
  // What one limit is doing now.
  struct Usage {
    Rate rate_now;                                  // in force now
    absl::Time until = absl::InfiniteFuture();      // when it may change (windows)
    uint64_t bytes_sent = 0;                        // since this process started
    uint64_t bytes_per_second = 0;                  // over the last few seconds
  };

  explicit Bandwidth(const Clock* clock) : clock_(clock) {}
  Bandwidth(const Bandwidth&) = delete;
  Bandwidth& operator=(const Bandwidth&) = delete;

  void SetEgress(Rate rate);
  // `zone` is policy.timezone, loaded (LoadZone) by the caller.
  void SetSite(const std::string& site, const SitePolicy& policy, const absl::TimeZone& zone);
  // The agent's own limit and its site ("" for none). A transfer already
  // running keeps the site it started with; its agent limit changes at once.
  void SetAgent(const std::string& agent, Rate rate, const std::string& site);
  void ForgetAgent(const std::string& agent);

  // Evaluates the sites' windows and samples the byte counters; once per
  // engine pass.
  void Update();

  std::shared_ptr<Throttle> ThrottleFor(const std::string& agent);
  // The agent's site, "" if it has none.
  std::string SiteOf(const std::string& agent);
  // Whether a new transfer to an agent of `site` must wait: its window
  // pauses it, or it runs `active` transfers of its max_transfers.
  bool SiteHolds(const std::string& site, uint32_t active);

  Usage EgressUsage();
  // Unknown site: unlimited, nothing sent.
  Usage SiteUsage(const std::string& site);
  // Every site known here (by a policy or an agent's label), by name.
  std::vector<std::pair<std::string, Usage>> AllSites();

 private:
  friend class Throttle;
  using Bucket = BandwidthBucket;
  struct Site {
    SitePolicy policy;
    absl::TimeZone zone;
    std::shared_ptr<Bucket> bucket;
    absl::Time until = absl::InfiniteFuture();
  };
  struct Agent {
    std::string site;
    std::shared_ptr<Bucket> bucket;
  };
  bool AdmitLocked(Throttle& t, uint64_t bytes) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Whether a transfer that waited longer than `t` waits for `b` (and still
  // asks); drops the waiters at the front that stopped asking.
  bool OlderWaiter(Bucket& b, const Throttle& t, int64_t now_ms) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void StopWaiting(Throttle& t) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  Site& SiteLocked(const std::string& site) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  Usage UsageLocked(const Bucket& b) const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void EvaluateLocked(Site& s, absl::Time now) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const Clock* clock_;
  absl::Mutex mu_;
  std::shared_ptr<Bucket> egress_ ABSL_GUARDED_BY(mu_);
  absl::flat_hash_map<std::string, Site> sites_ ABSL_GUARDED_BY(mu_);
  absl::flat_hash_map<std::string, Agent> agents_ ABSL_GUARDED_BY(mu_);
  uint64_t next_throttle_id_ ABSL_GUARDED_BY(mu_) = 1;
};


}  // namespace pkgdist

#endif  // PKGDIST_CONTROLLER_BANDWIDTH_H_
