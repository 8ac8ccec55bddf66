#include "controller/bandwidth.h"

#include <algorithm>
#include <map>

namespace pkgdist {
namespace {

// A bucket holds at most this much of its rate: a transfer that waited
// cannot then burst above the limit for longer.
constexpr double kBurstSeconds = 0.2;
// The measured rate is over this span.
constexpr int64_t kSampleSpanMs = 3000;
// A waiter that has not asked for this long lost its turn (the engine asks
// every 100 ms).
constexpr int64_t kWaiterSilenceMs = 500;

std::shared_ptr<BandwidthBucket> NewBucket(Rate rate, int64_t now_ms, bool shared) {
  auto b = std::make_shared<BandwidthBucket>();
  b->rate = rate;
  b->at_ms = now_ms;
  b->shared = shared;
  return b;
}

// Sets a bucket's rate; a limit that starts (or changes) starts from an
// empty allowance, not from what an unlimited bucket had.
void SetRate(BandwidthBucket& b, Rate rate, int64_t now_ms) {
  if (b.rate == rate) return;
  b.rate = rate;
  // A debt is kept from one limit to the next, forgotten without a limit.
  b.allowance = rate.kind == Rate::Kind::kLimited ? std::min(b.allowance, 0.0) : 0.0;
  b.at_ms = now_ms;
}

void Refill(BandwidthBucket& b, int64_t now_ms) {
  if (b.rate.kind != Rate::Kind::kLimited) {
    b.at_ms = now_ms;
    return;
  }
  const double rate = static_cast<double>(b.rate.bytes_per_second);
  const double elapsed = static_cast<double>(std::max<int64_t>(0, now_ms - b.at_ms)) / 1000;
  b.allowance = std::min(rate * kBurstSeconds, b.allowance + rate * elapsed);
  b.at_ms = now_ms;
}

void Sample(BandwidthBucket& b, int64_t now_ms) {
  b.samples.emplace_back(now_ms, b.bytes);
  while (b.samples.size() > 2 && now_ms - b.samples[1].first >= kSampleSpanMs) {
    b.samples.pop_front();
  }
}

}  // namespace

Throttle::~Throttle() {
  absl::MutexLock l(&owner_->mu_);
  owner_->StopWaiting(*this);
}

bool Throttle::Admit(uint64_t bytes) {
  absl::MutexLock l(&owner_->mu_);
  return owner_->AdmitLocked(*this, bytes);
}

void Bandwidth::StopWaiting(Throttle& t) {
  if (t.waiting_since_ms_ == 0) return;
  for (const auto& b : t.buckets_) b->waiters.erase(t.Key());
  t.waiting_since_ms_ = 0;
}

bool Bandwidth::OlderWaiter(Bucket& b, const Throttle& t, int64_t now_ms) {
  while (!b.waiters.empty()) {
    Throttle* front = b.waiters.begin()->second;
    if (now_ms - front->last_ask_ms_ <= kWaiterSilenceMs) break;
    StopWaiting(*front);  // it stopped asking: its call ended, say
  }
  if (b.waiters.empty()) return false;
  const Throttle* front = b.waiters.begin()->second;
  if (front == &t) return false;
  // t, not waiting yet, comes after every waiter.
  return t.waiting_since_ms_ == 0 || b.waiters.begin()->first < std::make_pair(t.waiting_since_ms_, t.id_);
}

bool Bandwidth::AdmitLocked(Throttle& t, uint64_t bytes) {
  const int64_t now = clock_->NowMs();
  t.last_ask_ms_ = now;
  bool held_alone_by_shared = false;  // only shared limits hold it back
  bool held_otherwise = false;        // a pause, or its own agent's limit
  std::vector<Bucket*> holding;
  for (const auto& b : t.buckets_) {
    if (b->rate.paused()) {
      held_otherwise = true;
      continue;
    }
    if (b->rate.unlimited()) continue;
    Refill(*b, now);
    const bool held = b->allowance < 0 || (b->shared && OlderWaiter(*b, t, now));
    if (!held) continue;
    if (b->shared) {
      held_alone_by_shared = true;
      holding.push_back(b.get());
    } else {
      held_otherwise = true;
    }
  }
  if (held_otherwise) {
    StopWaiting(t);  // it must not hold anyone's turn while it cannot go
    return false;
  }
  if (held_alone_by_shared) {
    // It waits its turn where it is held, and nowhere else (where it would
    // keep others from a budget it cannot use).
    if (t.waiting_since_ms_ == 0) t.waiting_since_ms_ = now;
    for (const auto& b : t.buckets_) {
      if (std::find(holding.begin(), holding.end(), b.get()) != holding.end()) {
        b->waiters.insert(t.Key());
      } else {
        b->waiters.erase(t.Key());
      }
    }
    return false;
  }
  StopWaiting(t);
  for (const auto& b : t.buckets_) {
    if (b->rate.kind == Rate::Kind::kLimited) b->allowance -= static_cast<double>(bytes);
    b->bytes += bytes;
  }
  return true;
}

void Bandwidth::SetEgress(Rate rate) {
  absl::MutexLock l(&mu_);
  const int64_t now = clock_->NowMs();
  if (egress_ == nullptr) egress_ = NewBucket(rate, now, true);
  SetRate(*egress_, rate, now);
}

Bandwidth::Site& Bandwidth::SiteLocked(const std::string& site) {
  auto [it, fresh] = sites_.try_emplace(site);
  if (fresh) {
    it->second.zone = absl::UTCTimeZone();
    it->second.bucket = NewBucket(Rate::Unlimited(), clock_->NowMs(), true);
  }
  return it->second;
}

void Bandwidth::EvaluateLocked(Site& s, absl::Time now) {
  if (s.policy.windows.empty()) {
    SetRate(*s.bucket, s.policy.rate, clock_->NowMs());
    s.until = absl::InfiniteFuture();
    return;
  }
  if (now < s.until) return;  // no boundary passed since the last look
  SetRate(*s.bucket, RateAt(s.policy, s.zone, now), clock_->NowMs());
  s.until = NextChange(s.policy, s.zone, now);
}

void Bandwidth::SetSite(const std::string& site, const SitePolicy& policy,
                        const absl::TimeZone& zone) {
  absl::MutexLock l(&mu_);
  Site& s = SiteLocked(site);
  s.policy = policy;
  s.zone = zone;
  s.until = absl::InfinitePast();  // evaluate now
  EvaluateLocked(s, absl::FromUnixMillis(clock_->NowMs()));
}

void Bandwidth::SetAgent(const std::string& agent, Rate rate, const std::string& site) {
  absl::MutexLock l(&mu_);
  const int64_t now = clock_->NowMs();
  Agent& a = agents_[agent];
  if (a.bucket == nullptr) a.bucket = NewBucket(rate, now, false);
  SetRate(*a.bucket, rate, now);
  a.site = site;
  if (!site.empty()) SiteLocked(site);
}

void Bandwidth::ForgetAgent(const std::string& agent) {
  absl::MutexLock l(&mu_);
  agents_.erase(agent);
}

void Bandwidth::Update() {
  absl::MutexLock l(&mu_);
  const int64_t now_ms = clock_->NowMs();
  const absl::Time now = absl::FromUnixMillis(now_ms);
  if (egress_ == nullptr) egress_ = NewBucket(Rate::Unlimited(), now_ms, true);
  Sample(*egress_, now_ms);
  for (auto& [name, s] : sites_) {
    EvaluateLocked(s, now);
    Sample(*s.bucket, now_ms);
  }
}

std::shared_ptr<Throttle> Bandwidth::ThrottleFor(const std::string& agent) {
  absl::MutexLock l(&mu_);
  const int64_t now = clock_->NowMs();
  if (egress_ == nullptr) egress_ = NewBucket(Rate::Unlimited(), now, true);
  std::vector<std::shared_ptr<Bucket>> buckets{egress_};
  auto it = agents_.find(agent);
  if (it != agents_.end()) {
    if (!it->second.site.empty()) buckets.push_back(SiteLocked(it->second.site).bucket);
    buckets.push_back(it->second.bucket);
  }
  return std::shared_ptr<Throttle>(new Throttle(this, std::move(buckets), next_throttle_id_++));
}

std::string Bandwidth::SiteOf(const std::string& agent) {
  absl::MutexLock l(&mu_);
  auto it = agents_.find(agent);
  return it == agents_.end() ? "" : it->second.site;
}

bool Bandwidth::SiteHolds(const std::string& site, uint32_t active) {
  absl::MutexLock l(&mu_);
  auto it = sites_.find(site);
  if (it == sites_.end()) return false;
  const Site& s = it->second;
  if (s.bucket->rate.paused()) return true;
  return s.policy.max_transfers > 0 && active >= s.policy.max_transfers;
}

Bandwidth::Usage Bandwidth::UsageLocked(const Bucket& b) const {
  Usage u;
  u.rate_now = b.rate;
  u.bytes_sent = b.bytes;
  if (b.samples.size() >= 2) {
    const auto& [first_ms, first_bytes] = b.samples.front();
    const auto& [last_ms, last_bytes] = b.samples.back();
    if (last_ms > first_ms) {
      u.bytes_per_second = (last_bytes - first_bytes) * 1000 / static_cast<uint64_t>(last_ms - first_ms);
    }
  }
  return u;
}

Bandwidth::Usage Bandwidth::EgressUsage() {
  absl::MutexLock l(&mu_);
  if (egress_ == nullptr) return Usage{};
  return UsageLocked(*egress_);
}

Bandwidth::Usage Bandwidth::SiteUsage(const std::string& site) {
  absl::MutexLock l(&mu_);
  auto it = sites_.find(site);
  if (it == sites_.end()) return Usage{};
  Usage u = UsageLocked(*it->second.bucket);
  u.until = it->second.until;
  return u;
}

std::vector<std::pair<std::string, Bandwidth::Usage>> Bandwidth::AllSites() {
  absl::MutexLock l(&mu_);
  std::map<std::string, Usage> sorted;
  for (const auto& [name, site] : sites_) {
    Usage u = UsageLocked(*site.bucket);
    u.until = site.until;
    sorted.emplace(name, u);
  }
  return {sorted.begin(), sorted.end()};
}

}  // namespace pkgdist
