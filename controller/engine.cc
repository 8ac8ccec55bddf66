#include "controller/engine.h"

#include <algorithm>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/time/time.h"
#include "shared/grpc_options.h"
#include "shared/logging.h"
#include "shared/manifest.h"
#include "shared/manifest_delta.h"
#include "shared/metrics.h"
#include "shared/sha256.h"
#include "shared/status_macros.h"

namespace pkgdist {
namespace {

constexpr int64_t kPruneIntervalMs = 60'000;
constexpr int64_t kSentChunksIdleMs = 24 * 3'600'000;
constexpr int64_t kStoreErrorLogIntervalMs = 10'000;

// An outcome the store refuses for these reasons can never be written (the
// target was cancelled, its job deleted): it is dropped, not retried.
bool IsPermanent(const absl::Status& s) {
  return s.code() == absl::StatusCode::kFailedPrecondition ||
         s.code() == absl::StatusCode::kNotFound;
}

}  // namespace

std::string DescribeError(const absl::Status& s) {
  return absl::StrCat(absl::StatusCodeToString(s.code()), ": ", s.message());
}

Engine::Engine(Options options, StateStore* store, PackageStore* packages, AgentPool* pool,
               const Clock* clock)
    : options_(options),
      store_(store),
      packages_(packages),
      pool_(pool),
      clock_(clock),
      manifests_(options.manifest_cache_bytes),
      rng_(std::random_device{}()) {
  // Here, not in Start(): the admin service may change a limit as soon as
  // the server is up, and a load after that would undo the change.
  if (absl::Status s = LoadLimits(); !s.ok()) {
    spdlog::error("loading the bandwidth limits: {}; what could not be read is not limited", s);
  }
}

Engine::~Engine() { Stop(); }

void Engine::Start() {
  started_ms_ = stats_ms_ = clock_->NowMs();
  stats_transactions_ = store_->transactions();
  thread_ = std::thread([this] { Run(); });
}

void Engine::LogStats(bool force) {
  constexpr int64_t kStatsIntervalMs = 60'000;
  int64_t now = clock_->NowMs();
  if (!force && now - stats_ms_ < kStatsIntervalMs) return;
  uint64_t tx = store_->transactions();
  size_t active, waiting;
  {
    absl::MutexLock l(&mu_);
    active = active_.size();
    waiting = waiting_.size();
  }
  double seconds = std::max<double>(1e-3, static_cast<double>(now - stats_ms_) / 1000);
  spdlog::info("stats: {} state store transactions in {:.1f} s ({:.1f}/s; {} since start), "
               "{} attempts active, {} agents awaited",
               tx - stats_transactions_, seconds,
               static_cast<double>(tx - stats_transactions_) / seconds, tx, active, waiting);
  stats_ms_ = now;
  stats_transactions_ = tx;
}

void Engine::Stop() {
  {
    absl::MutexLock l(&mu_);
    if (stopped_) return;
    stop_ = true;
  }
  // After the join nothing starts a new attempt.
  if (thread_.joinable()) thread_.join();
  std::vector<std::shared_ptr<TransferCall>> transfers;
  std::vector<std::shared_ptr<grpc::ClientContext>> removals;
  {
    absl::MutexLock l(&mu_);
    for (auto& [agent, a] : active_) {
      if (a.ended) continue;
      a.stopping = true;
      if (a.transfer) transfers.push_back(a.transfer);
      if (a.removal) removals.push_back(a.removal);
    }
  }
  for (auto& t : transfers) t->Cancel("controller shutting down");
  for (auto& r : removals) r->TryCancel();
  {
    absl::MutexLock l(&mu_);
    auto all_ended = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
      return std::all_of(active_.begin(), active_.end(),
                         [](const auto& kv) { return kv.second.ended; });
    };
    // Cancelled calls end promptly; say who is late rather than give up on
    // them, since destroying the engine under a live callback is a crash.
    while (!mu_.AwaitWithTimeout(absl::Condition(&all_ended), absl::Seconds(10))) {
      std::vector<std::string> late;
      for (const auto& [agent, a] : active_) {
        if (!a.ended) late.push_back(agent);
      }
      spdlog::warn("shutdown: waiting for the attempts of {} to end", absl::StrJoin(late, ", "));
    }
  }
  // What ended for reasons of its own (published, say) is still recorded.
  FlushProgress(true);
  RecordOutcomes();
  if (started_ms_ != 0) LogStats(true);
  absl::MutexLock l(&mu_);
  stopped_ = true;
}

void Engine::Kick() {
  absl::MutexLock l(&mu_);
  kicked_ = true;
}

void Engine::CancelActive(const std::string& job_id, const std::string& agent,
                          const std::string& why) {
  std::vector<std::shared_ptr<TransferCall>> transfers;
  std::vector<std::shared_ptr<grpc::ClientContext>> removals;
  {
    absl::MutexLock l(&mu_);
    for (auto& [name, a] : active_) {
      if ((!job_id.empty() && a.job_id != job_id) || (!agent.empty() && name != agent)) continue;
      if (a.transfer) transfers.push_back(a.transfer);
      if (a.removal) removals.push_back(a.removal);
    }
    // Cancelled targets are final: nothing is sent to them again.
    absl::erase_if(sent_, [&](const auto& kv) {
      return (job_id.empty() || kv.first.first == job_id) &&
             (agent.empty() || kv.first.second == agent);
    });
    kicked_ = true;
  }
  for (auto& t : transfers) t->Cancel(why);
  for (auto& r : removals) r->TryCancel();
}

absl::Status Engine::LoadLimits() {
  // Agents first: their sites and own limits do not depend on the rest.
  std::string after;
  while (true) {
    ASSIGN_OR_RETURN(std::vector<AgentRow> agents, store_->ListAgents("", after, 1000));
    for (const AgentRow& a : agents) AgentChanged(a);
    if (agents.size() < 1000) break;
    after = agents.back().name;
  }
  ASSIGN_OR_RETURN(Rate egress, store_->GetEgressRate());
  bandwidth_.SetEgress(egress);
  std::vector<std::string> unreadable;
  ASSIGN_OR_RETURN(std::vector<SiteRow> sites, store_->ListSites(&unreadable));
  for (const std::string& why : unreadable) {
    spdlog::error("{}; that site is not limited until its policy is set again", why);
  }
  for (const SiteRow& site : sites) {
    absl::StatusOr<absl::TimeZone> zone = LoadZone(site.policy.timezone);
    if (!zone.ok()) {
      // The zone was valid when set; tzdata changed under us. UTC is a
      // guess, and the log says so.
      spdlog::error("site {}: {}; its windows are read in UTC", site.name, zone.status());
      zone = absl::UTCTimeZone();
    }
    bandwidth_.SetSite(site.name, site.policy, *zone);
  }
  return absl::OkStatus();
}

void Engine::AgentChanged(const AgentRow& row) {
  bandwidth_.SetAgent(row.name, row.rate, SiteOf(row.labels));
}

uint32_t Engine::ActiveTransfersAt(const std::string& site) {
  absl::MutexLock l(&mu_);
  uint32_t n = 0;
  for (const auto& [agent, a] : active_) {
    if (a.transfer != nullptr && !a.ended && a.site == site) ++n;
  }
  return n;
}

bool Engine::Admit(const TargetRow& t, JobKind kind,
                   absl::flat_hash_map<std::string, uint32_t>& site_active) {
  if (kind != JobKind::kDistribute) return true;  // a removal sends nothing
  const std::string site = bandwidth_.SiteOf(t.agent);
  if (site.empty()) return true;
  PeerPlan plan;
  std::string relay;
  {
    absl::MutexLock l(&mu_);
    SiteRelay* r = RelayOf(t.job_id, site);
    if (r == nullptr) {
      // Called while the store reads: its members are loaded after.
      relays_to_load_.insert(t.job_id);
      return false;
    }
    plan = PlanPeer(*r, t.job_id, t.agent);
    relay = r->relay;
  }
  if (plan == PeerPlan::kWait) return false;
  // A transfer from the relay counts too: max_transfers is the site's
  // transfers at once, and a paused site starts nothing.
  uint32_t& active = site_active[site];
  if (bandwidth_.SiteHolds(site, active)) return false;
  ++active;
  if (plan == PeerPlan::kFromRelay) planned_source_[t.agent] = relay;
  return true;
}

Engine::SiteRelay* Engine::RelayOf(const std::string& job_id, const std::string& site) {
  auto it = relays_.find(SiteKey{job_id, site});
  if (it == relays_.end()) return nullptr;
  it->second.used_ms = clock_->NowMs();
  return &it->second;
}

Engine::PeerPlan Engine::PlanPeer(SiteRelay& r, const std::string& job_id,
                                  const std::string& agent) {
  // A relay that served a peer badly is not replaced: the peers that saw
  // it fail are already getting their chunks from us.
  if (r.members.size() < 2 || r.relay.empty() || agent == r.relay || r.relay_bad) {
    return PeerPlan::kDirect;
  }
  if (r.relay_done) return PeerPlan::kFromRelay;
  auto a = active_.find(r.relay);
  if (a != active_.end() && a->second.job_id == job_id && a->second.transfer != nullptr &&
      !a->second.ended) {
    // Its Offer grants the peers: once it has answered, they may ask.
    return a->second.transfer->Answered() ? PeerPlan::kFromRelay : PeerPlan::kWait;
  }
  // Not running. Its attempt failed (the agent is watched for its return),
  // or it has not started (this pass, or held by the site's limits) for
  // longer than a relay that will start takes: then this agent relays
  // instead, so that the package still crosses the site's link once.
  const int64_t now = clock_->NowMs();
  if (r.held_since_ms == 0) r.held_since_ms = now;
  const int64_t bound_ms = std::max<int64_t>(5'000, int64_t{options_.detect_seconds} * 1000);
  if (!waiting_.contains(r.relay) && now - r.held_since_ms <= bound_ms) return PeerPlan::kWait;
  LogWith({.job = job_id, .agent = agent}, spdlog::level::warn,
          "job {}: relay {} is not running ({}); {} relays instead", job_id, r.relay,
          waiting_.contains(r.relay) ? "its attempt failed" : "it has not started", agent);
  r.relay = agent;
  r.held_since_ms = 0;
  return PeerPlan::kDirect;
}

void Engine::LoadRelays() {
  for (const std::string& job_id : std::exchange(relays_to_load_, {})) {
    auto job = store_->GetJob(job_id);
    if (!job.ok()) {
      LogWith({.job = job_id}, spdlog::level::warn, "job {}: cannot load its sites: {}", job_id,
              job.status());
      continue;
    }
    absl::flat_hash_map<std::string, SiteRelay> sites;
    absl::flat_hash_set<std::string> done;
    for (const TargetRow& t : job->targets) {
      const std::string site = bandwidth_.SiteOf(t.agent);
      if (!site.empty()) sites[site].members.push_back(t.agent);  // ordered by name
      if (t.state == TargetState::kDone) done.insert(t.agent);
    }
    for (auto& [site, r] : sites) {
      auto row = store_->GetSite(site);
      const std::string configured = row.ok() ? row->relay : "";
      if (configured == kNoRelay) {
        r.relay.clear();  // every member direct (PlanPeer)
        continue;
      }
      // The configured relay; else a member that holds the package already
      // (a job resumed after a restart); else the first member that is not
      // waiting out a failed attempt; else the first. (A channel's state says
      // little here: the engine closes idle channels.) PlanPeer replaces a
      // relay that fails or does not start.
      const std::vector<std::string>& members = r.members;
      const bool configured_member =
          !configured.empty() &&
          std::find(members.begin(), members.end(), configured) != members.end();
      r.relay = configured_member ? configured : "";
      for (const std::string& m : members) {
        if (!r.relay.empty()) break;
        if (done.contains(m)) r.relay = m;
      }
      if (r.relay.empty()) {
        absl::MutexLock l(&mu_);
        for (const std::string& m : r.members) {
          if (waiting_.contains(m)) continue;
          r.relay = m;
          break;
        }
      }
      if (r.relay.empty()) r.relay = r.members.front();
      // Published before this process started (its grant may be gone with
      // an agent restart: a refused peer falls back to us).
      r.relay_done = done.contains(r.relay);
      if (r.members.size() > 1) {
        LogWith({.job = job_id, .package = job->job.package}, spdlog::level::info,
                "job {}: {} relays {} to the {} other agent(s) of site {}", job_id, r.relay,
                job->job.package, r.members.size() - 1, site);
      }
    }
    absl::MutexLock l(&mu_);
    for (auto& [site, r] : sites) {
      r.used_ms = clock_->NowMs();
      relays_.try_emplace(SiteKey{job_id, site}, std::move(r));
    }
  }
}

void Engine::ForgetAgent(const std::string& agent) {
  bandwidth_.ForgetAgent(agent);
  absl::MutexLock l(&mu_);
  waiting_.erase(agent);
  absl::erase_if(sent_, [&](const auto& kv) { return kv.first.second == agent; });
}

void Engine::ForgetSent(const std::string& job_id, const std::string& agent) {
  absl::MutexLock l(&mu_);
  sent_.erase(TargetKey{job_id, agent});
}

void Engine::PruneSent() {
  int64_t now = clock_->NowMs();
  if (now - last_sent_prune_ms_ < kPruneIntervalMs) return;
  last_sent_prune_ms_ = now;
  absl::MutexLock l(&mu_);
  for (auto it = sent_.begin(); it != sent_.end();) {
    auto a = active_.find(it->first.second);
    bool running = a != active_.end() && a->second.job_id == it->first.first;
    if (!running && now - it->second.used_ms > kSentChunksIdleMs) {
      sent_.erase(it++);
    } else {
      ++it;
    }
  }
  absl::erase_if(relays_, [&](const auto& kv) { return now - kv.second.used_ms > kSentChunksIdleMs; });
}

void Engine::CountOutcome(const Outcome& o, const std::string& failure_reason) {
  if (options_.metrics == nullptr) return;
  if (!o.result.ok()) options_.metrics->AttemptFailed(failure_reason);
  if (o.kind == JobKind::kDistribute && o.started_ms > 0) {
    options_.metrics->TransferEnded(o.result.ok(),
                                    absl::Milliseconds(clock_->NowMs() - o.started_ms));
  }
}

size_t Engine::ActiveCount() {
  absl::MutexLock l(&mu_);
  return active_.size();
}

size_t Engine::AwaitedCount() {
  absl::MutexLock l(&mu_);
  return waiting_.size();
}

Engine::StoreHealth Engine::store_health() {
  absl::MutexLock l(&mu_);
  StoreHealth h = health_;
  h.unrecorded = outcomes_.size();
  return h;
}

double Engine::Random() {
  absl::MutexLock l(&mu_);
  return std::uniform_real_distribution<double>(0.0, 1.0)(rng_);
}

void Engine::Run() {
  for (;;) {
    Pass();
    bool idle;
    {
      absl::MutexLock l(&mu_);
      idle = active_.empty() && waiting_.empty() && outcomes_.empty() && progress_.empty();
    }
    int64_t wait_ms = options_.tick_ms;
    if (idle) {
      // Nothing to pace or watch: sleep until the next retry is due.
      auto next = store_->NextWakeupMs();
      int64_t delay = 1000;
      if (next.ok() && next->has_value()) {
        delay = std::clamp<int64_t>(**next - clock_->NowMs(), 0, 1000);
      }
      wait_ms = std::max<int64_t>(delay, options_.tick_ms);
    }
    absl::MutexLock l(&mu_);
    auto woken = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return kicked_ || stop_; };
    mu_.AwaitWithTimeout(absl::Condition(&woken), absl::Milliseconds(wait_ms));
    kicked_ = false;
    if (stop_) return;
  }
}

void Engine::NoteStore(const absl::Status& s, const char* what) {
  pass_failed_ = true;
  std::string error = absl::StrCat(what, ": ", DescribeError(s));
  int64_t now = clock_->NowMs();
  bool log;
  {
    absl::MutexLock l(&mu_);
    if (health_.error.empty()) health_.since_ms = now;  // the run of failures starts
    log = health_.error != error || now - last_store_log_ms_ >= kStoreErrorLogIntervalMs;
    health_.error = error;
  }
  if (!log) return;
  last_store_log_ms_ = now;
  spdlog::error("state store failing since {}: {} (retrying every pass)",
                FormatRfc3339(store_health().since_ms), error);
}

void Engine::Pass() {
  pass_failed_ = false;
  FlushProgress(false);
  RecordOutcomes();
  if (auto n = store_->FailExpired(); !n.ok()) {
    NoteStore(n.status(), "failing expired targets");
  } else if (*n > 0) {
    spdlog::info("{} target(s) failed: job deadline passed", *n);
  }
  WakeReturnedAgents();
  PruneJobs();
  PruneSent();
  LogStats(false);

  bandwidth_.Update();

  std::vector<std::string> busy;
  size_t room = 0;
  std::vector<std::shared_ptr<TransferCall>> calls;
  absl::flat_hash_map<std::string, uint32_t> site_active;
  {
    absl::MutexLock l(&mu_);
    if (!pass_failed_ && !progress_unwritten_ && outcomes_.empty() && !health_.error.empty()) {
      spdlog::info("state store writes succeed again");
      health_ = StoreHealth{};
    }
    for (auto& [agent, a] : active_) {
      busy.push_back(agent);
      if (a.transfer && !a.ended) calls.push_back(a.transfer);
      if (a.kind == JobKind::kDistribute && !a.site.empty()) ++site_active[a.site];
    }
    room = options_.max_concurrent > active_.size() ? options_.max_concurrent - active_.size() : 0;
    if (stop_) room = 0;
  }
  for (auto& c : calls) c->Tick();
  if (room == 0) return;
  planned_source_.clear();
  auto runnable = store_->RunnableTargets(
      room, busy, [&](const TargetRow& t, JobKind kind) { return Admit(t, kind, site_active); });
  const bool relays_loaded = !relays_to_load_.empty();
  LoadRelays();
  if (!runnable.ok()) {
    spdlog::error("reading runnable targets: {}", runnable.status());
    return;
  }
  for (const TargetRow& t : *runnable) StartTarget(t);
  if (relays_loaded) Kick();  // their targets may start now
}

void Engine::OnProgress(const std::string& job_id, const std::string& agent,
                        const TransferCall::Progress& p) {
  if (p.acked) pool_->RecordContact(agent);
  absl::MutexLock l(&mu_);
  auto [it, fresh] = progress_.try_emplace(TargetKey{job_id, agent});
  ProgressUpdate& u = it->second;
  if (fresh) {
    u.job_id = job_id;
    u.agent = agent;
  }
  u.bytes_acked = p.bytes_acked;
  u.bytes_sent_delta += p.bytes_sent_delta;
  u.bytes_reused_delta += p.bytes_reused_delta;
  u.bytes_from_peer_delta += p.bytes_from_peer_delta;
  u.made_progress = u.made_progress || p.acked;
  if (!p.source_failed.empty()) {
    // Other peers of this relay go directly for the rest of the job.
    // The relay of the site this transfer started with (one lookup, not a
    // scan of every job's relays).
    auto a = active_.find(agent);
    SiteRelay* r = a != active_.end() && a->second.job_id == job_id
                       ? RelayOf(job_id, a->second.site)
                       : nullptr;
    if (r != nullptr && !r->relay_bad) {
      LogWith({.job = job_id, .agent = agent}, spdlog::level::warn,
              "job {}: {} could not fetch from relay {} ({}); the site's agents get the rest "
              "from the controller",
              job_id, agent, r->relay, p.source_failed);
      r->relay_bad = true;
    }
  }
}

bool Engine::FlushProgress(bool force) {
  int64_t now = clock_->NowMs();
  if (!force && now - last_progress_flush_ms_ < options_.progress_interval_ms) return true;
  last_progress_flush_ms_ = now;
  std::vector<ProgressUpdate> batch;
  {
    absl::MutexLock l(&mu_);
    batch.reserve(progress_.size());
    for (auto& [key, u] : progress_) batch.push_back(std::move(u));
    progress_.clear();
  }
  if (batch.empty()) return true;
  auto applied = store_->RecordProgressBatch(batch);
  progress_unwritten_ = !applied.ok();
  if (applied.ok()) return true;
  NoteStore(applied.status(), "recording progress");
  // Keep it for the next pass, under whatever arrived meanwhile.
  absl::MutexLock l(&mu_);
  for (ProgressUpdate& u : batch) {
    auto [it, fresh] = progress_.try_emplace(TargetKey{u.job_id, u.agent});
    if (fresh) {
      it->second = std::move(u);
    } else {
      it->second.bytes_sent_delta += u.bytes_sent_delta;
      it->second.bytes_reused_delta += u.bytes_reused_delta;
      it->second.bytes_from_peer_delta += u.bytes_from_peer_delta;
      it->second.made_progress = it->second.made_progress || u.made_progress;
    }
  }
  return false;
}

void Engine::RecordOutcomes() {
  std::deque<Outcome> todo;
  {
    absl::MutexLock l(&mu_);
    todo.swap(outcomes_);
  }
  if (todo.empty()) return;
  // An attempt's last progress goes first: once the target has left
  // `transferring` the store skips it as stale. If it cannot be written,
  // neither are the ends: both wait for the next pass.
  std::deque<Outcome> unwritten;
  if (!FlushProgress(true)) todo.swap(unwritten);
  for (Outcome& o : todo) {
    bool wait_for_agent = false;
    if (absl::Status s = Record(o, &wait_for_agent); !s.ok()) {
      NoteStore(s, "recording the end of an attempt");
      unwritten.push_back(std::move(o));
      continue;
    }
    absl::MutexLock l(&mu_);
    auto it = active_.find(o.agent);
    if (it == active_.end() || it->second.seq != o.seq) continue;
    if (wait_for_agent) waiting_[o.agent] = Waiting{it->second.address, false};
    active_.erase(it);
  }
  absl::MutexLock l(&mu_);
  outcomes_.insert(outcomes_.begin(), std::make_move_iterator(unwritten.begin()),
                   std::make_move_iterator(unwritten.end()));
}

absl::Status Engine::Record(const Outcome& o, bool* wait_for_agent) {
  if (o.by_stop && !o.result.ok()) {
    // Not a failed attempt: the target stays `transferring` and is
    // recovered at the next start.
    return absl::OkStatus();
  }
  const LogFields fields{o.job_id, o.agent, o.package};
  if (o.result.ok()) {
    // Nothing runs on the connection now; the agent's next attempt dials
    // again (one TLS handshake) instead of every agent ever served keeping
    // a connection open.
    pool_->Disconnect(o.agent);
    absl::Status s = store_->MarkDone(o.job_id, o.agent);
    if (!s.ok() && !IsPermanent(s)) return s;
    if (s.ok()) {
      LogWith(fields, spdlog::level::info, "job {}: {} done", o.job_id, o.agent);
    } else {
      LogWith(fields, spdlog::level::info,
              "job {}: {} published, but the target is no longer running: {}", o.job_id, o.agent,
              s.message());
    }
    pool_->RecordContact(o.agent);
    ForgetSent(o.job_id, o.agent);
    CountOutcome(o, "");
    return absl::OkStatus();
  }
  std::string error = DescribeError(o.result);
  // A refused certificate shows up as UNAVAILABLE; say what was refused.
  std::string identity = pool_->HandshakeErrorSince(o.agent, o.started_ms);
  std::string reason = StatusCodeLabel(o.result.code());
  if (!identity.empty() && (o.result.code() == absl::StatusCode::kUnavailable ||
                            o.result.code() == absl::StatusCode::kDeadlineExceeded)) {
    error = identity;
    reason = kIdentityMismatchReason;
  }
  pool_->RecordError(o.agent, error);
  auto row = store_->MarkFailedAttempt(o.job_id, o.agent, error, options_.backoff, Random());
  if (!row.ok()) {
    if (!IsPermanent(row.status())) return row.status();
    // Cancelled, or its agent removed, while the attempt ran.
    LogWith(fields, spdlog::level::info,
            "job {}: {} attempt ended ({}); the target is no longer running: {}", o.job_id,
            o.agent, error, row.status().message());
    ForgetSent(o.job_id, o.agent);
    CountOutcome(o, reason);
    return absl::OkStatus();
  }
  *wait_for_agent = true;
  LogWith(fields, spdlog::level::warn, "job {}: {} attempt {} failed: {} (next: {})", o.job_id,
          o.agent, row->attempts, error,
          row->state == TargetState::kFailed ? "none, failed by policy"
                                             : FormatRfc3339(row->next_attempt_ms));
  if (row->state == TargetState::kFailed) ForgetSent(o.job_id, o.agent);
  CountOutcome(o, reason);
  return absl::OkStatus();
}

void Engine::WakeReturnedAgents() {
  std::vector<std::pair<std::string, std::string>> agents;
  {
    absl::MutexLock l(&mu_);
    for (auto& [name, w] : waiting_) agents.emplace_back(name, w.address);
  }
  for (auto& [name, address] : agents) {
    bool ready = pool_->ConnectAndCheckReady(name, address);
    {
      absl::MutexLock l(&mu_);
      auto it = waiting_.find(name);
      if (it == waiting_.end()) continue;
      // Only a channel that was down and came back READY counts: an agent
      // that answers with an error keeps its backoff.
      if (!ready) {
        it->second.seen_not_ready = true;
        continue;
      }
      if (!it->second.seen_not_ready) continue;
    }
    if (absl::Status s = store_->WakeAgent(name); !s.ok()) {
      NoteStore(s, "waking a returned agent's targets");
      continue;  // still waiting: tried again next pass
    }
    LogWith({.agent = name}, spdlog::level::info,
            "agent {} is reachable again: retrying its targets now", name);
    absl::MutexLock l(&mu_);
    waiting_.erase(name);
  }
}

void Engine::PruneJobs() {
  if (options_.job_retention_ms <= 0) return;
  int64_t now = clock_->NowMs();
  if (now - last_prune_ms_ < kPruneIntervalMs) return;
  last_prune_ms_ = now;
  auto n = store_->PruneFinishedJobs(now - options_.job_retention_ms);
  if (!n.ok()) {
    NoteStore(n.status(), "pruning finished jobs");
  } else if (*n > 0) {
    spdlog::info("deleted {} finished job(s) older than the retention", *n);
  }
}

absl::StatusOr<std::shared_ptr<const pkgdist::v1::Manifest>> Engine::ManifestFor(
    const std::string& id) {
  if (auto cached = manifests_.Get(id)) return cached;
  auto bytes = store_->GetManifestBytes(id);
  if (!bytes.ok()) return bytes.status();
  auto m = std::make_shared<pkgdist::v1::Manifest>();
  if (!m->ParseFromString(*bytes)) return absl::DataLossError("stored manifest does not parse");
  manifests_.Put(id, m);
  return std::shared_ptr<const pkgdist::v1::Manifest>(std::move(m));
}

std::vector<std::string> Engine::DeltaBasesFor(const pkgdist::v1::Manifest& m,
                                               const std::string& id) {
  std::vector<std::string> bases;
  if (m.ByteSizeLong() < kMinDeltaManifestBytes) return bases;
  auto versions = store_->ListPackages(m.name());
  if (!versions.ok()) return bases;  // the whole manifest still works
  std::sort(versions->begin(), versions->end(), [](const PackageRow& a, const PackageRow& b) {
    return a.created_ms > b.created_ms;
  });
  for (const PackageRow& p : *versions) {
    if (p.id == id) continue;
    if (auto raw = FromHex(p.id)) bases.push_back(*std::move(raw));
    if (bases.size() == kMaxDeltaBases) break;
  }
  return bases;
}

void Engine::StartTarget(const TargetRow& t) {
  // The job's row only: at 10,000 targets, loading every target per start
  // made starting a job quadratic.
  auto job = store_->GetJobRow(t.job_id);
  auto agent = store_->GetAgent(t.agent);
  if (!job.ok() || !agent.ok()) {
    LogWith({.job = t.job_id, .agent = t.agent}, spdlog::level::warn, "cannot start {}/{}: {}",
            t.job_id, t.agent, !job.ok() ? job.status() : agent.status());
    return;
  }
  if (absl::Status s = store_->StartAttempt(t.job_id, t.agent); !s.ok()) {
    if (!IsPermanent(s)) NoteStore(s, "starting an attempt");
    LogWith({t.job_id, t.agent, job->package}, spdlog::level::warn, "cannot start {}/{}: {}",
            t.job_id, t.agent, s);
    return;
  }
  if (options_.metrics != nullptr) options_.metrics->AttemptStarted(job->kind);
  uint64_t seq;
  {
    absl::MutexLock l(&mu_);
    seq = next_seq_++;
    active_[t.agent] = Active{t.job_id,     agent->address, seq,
                              clock_->NowMs(), job->kind,     job->package,
                              bandwidth_.SiteOf(t.agent)};
    waiting_.erase(t.agent);
  }
  if (job->kind == JobKind::kRemove) {
    StartRemoval(t, *job, agent->address, seq);
    return;
  }
  if (absl::Status s = StartTransfer(t, *job, agent->address, seq); !s.ok()) {
    Finish(t.job_id, t.agent, seq, s);
  }
}

absl::Status Engine::StartTransfer(const TargetRow& t, const JobRow& job,
                                   const std::string& address, uint64_t seq) {
  auto manifest = ManifestFor(job.package_id);
  if (!manifest.ok()) return manifest.status();
  // Read for every attempt, not cached with the manifest: a package signed
  // (again) after the job started is sent with its new signature.
  auto package = store_->GetPackageById(job.package_id);
  if (!package.ok()) return package.status();
  TransferParams p;
  if (!package->signature.empty() && !p.signature.ParseFromString(package->signature)) {
    return absl::DataLossError("the stored signature does not parse");
  }
  p.job_id = t.job_id;
  p.agent = t.agent;
  p.manifest = *manifest;
  p.package_id = PackageId(**manifest);
  p.tree = packages_->TreeOf(job.package_id);
  p.window_bytes = options_.window_bytes;
  p.max_bytes_per_second = options_.max_bytes_per_second;
  p.throttle = bandwidth_.ThrottleFor(t.agent);
  p.detect_seconds = options_.detect_seconds;
  p.read_pool = &read_pool_;
  p.delta_bases = DeltaBasesFor(**manifest, job.package_id);
  p.deltas = &deltas_;
  p.metrics = options_.metrics;
  if (auto it = planned_source_.find(t.agent); it != planned_source_.end()) {
    auto source = store_->GetAgent(it->second);
    if (source.ok()) {
      p.source_agent = source->name;
      p.source_address = source->address;
    }
  }
  {
    absl::MutexLock l(&mu_);
    if (SiteRelay* r = RelayOf(t.job_id, bandwidth_.SiteOf(t.agent));
        r != nullptr && r->members.size() > 1 && !r->relay.empty()) {
      for (const std::string& m : r->members) {
        if (m != t.agent) p.serve_peers.push_back(m);
      }
    }
  }
  if (p.metrics != nullptr) {
    absl::MutexLock l(&mu_);
    SentChunks& sent = sent_[TargetKey{t.job_id, t.agent}];
    size_t chunks = static_cast<size_t>((*manifest)->chunks_size());
    if (sent.chunks == nullptr || sent.chunks->size() != chunks) {
      sent.chunks = std::make_shared<std::vector<bool>>(chunks, false);
    }
    sent.used_ms = clock_->NowMs();
    p.sent_before = sent.chunks;
  }
  std::string job_id = t.job_id, agent = t.agent;
  auto on_progress = [this, job_id, agent](const TransferCall::Progress& p) {
    OnProgress(job_id, agent, p);
  };
  auto on_done = [this, job_id, agent, seq](const TransferResult& r) {
    Finish(job_id, agent, seq, r.published ? absl::OkStatus() : r.status);
  };
  if (p.source_agent.empty()) {
    LogWith({job_id, agent, job.package}, spdlog::level::info, "job {}: sending {} to {} ({})",
            job_id, job.package, agent, address);
  } else {
    LogWith({job_id, agent, job.package}, spdlog::level::info,
            "job {}: sending {} to {} ({}), its chunks from relay {}", job_id, job.package, agent,
            address, p.source_agent);
  }
  auto call = TransferCall::Start(pool_->Channel(agent, address), std::move(p), clock_,
                                  on_progress, on_done);
  absl::MutexLock l(&mu_);
  auto it = active_.find(agent);
  if (it != active_.end() && it->second.seq == seq) it->second.transfer = call;
  return absl::OkStatus();
}

void Engine::StartRemoval(const TargetRow& t, const JobRow& job, const std::string& address,
                          uint64_t seq) {
  struct Call {
    grpc::ClientContext ctx;
    pkgdist::v1::RemoveRequest req;
    pkgdist::v1::RemoveResponse resp;
  };
  auto call = std::make_shared<Call>();
  auto at = job.package.find('@');
  call->req.set_name(job.package.substr(0, at));
  call->req.set_version(at == std::string::npos ? "" : job.package.substr(at + 1));
  call->ctx.set_deadline(std::chrono::system_clock::now() +
                         std::chrono::seconds(std::max(30, options_.detect_seconds)));
  call->ctx.AddMetadata(kJobIdMetadataKey, t.job_id);
  {
    // Registered before the call starts, so that Stop() and CancelActive()
    // can always reach it.
    absl::MutexLock l(&mu_);
    auto it = active_.find(t.agent);
    if (it != active_.end() && it->second.seq == seq) {
      it->second.removal = std::shared_ptr<grpc::ClientContext>(call, &call->ctx);
    }
  }
  std::string job_id = t.job_id, agent = t.agent;
  pool_->Stub(agent, address)
      ->async()
      ->Remove(&call->ctx, &call->req, &call->resp,
               [this, call, job_id, agent, seq](grpc::Status s) {
                 if (s.ok()) pool_->RecordContact(agent);
                 Finish(job_id, agent, seq, FromGrpc(s));
               });
}

void Engine::Finish(const std::string& job_id, const std::string& agent, uint64_t seq,
                    absl::Status result) {
  absl::MutexLock l(&mu_);
  Outcome o{job_id, agent, seq, 0, std::move(result)};
  auto it = active_.find(agent);
  if (it != active_.end() && it->second.seq == seq) {
    it->second.ended = true;
    o.by_stop = it->second.stopping;
    o.started_ms = it->second.started_ms;
    o.kind = it->second.kind;
    o.package = it->second.package;
  }
  if (o.result.ok() && o.kind == JobKind::kDistribute && it != active_.end() &&
      it->second.seq == seq) {
    SiteRelay* r = RelayOf(job_id, it->second.site);
    if (r != nullptr && r->relay == agent) r->relay_done = true;
  }
  outcomes_.push_back(std::move(o));
  kicked_ = true;
}

}  // namespace pkgdist
