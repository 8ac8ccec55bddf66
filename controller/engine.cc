#include "controller/engine.h"

#include <algorithm>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
#include "shared/logging.h"
#include "shared/grpc_options.h"
#include "shared/manifest.h"

namespace pkgdist {

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
      rng_(std::random_device{}()) {}

Engine::~Engine() { Stop(); }

void Engine::Start() { thread_ = std::thread([this] { Run(); }); }

void Engine::Stop() {
  std::vector<std::shared_ptr<TransferCall>> calls;
  {
    absl::MutexLock l(&mu_);
    if (stop_ && !thread_.joinable()) return;
    stop_ = true;
    for (auto& [agent, a] : active_) {
      if (a.transfer) calls.push_back(a.transfer);
    }
  }
  for (auto& c : calls) c->Cancel("controller shutting down");
  if (thread_.joinable()) thread_.join();
  // Wait (bounded) for the cancelled calls to report back.
  absl::MutexLock l(&mu_);
  auto none_active = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return active_.empty(); };
  mu_.AwaitWithTimeout(absl::Condition(&none_active), absl::Seconds(10));
}

void Engine::Kick() {
  absl::MutexLock l(&mu_);
  kicked_ = true;
}

void Engine::CancelActive(const std::string& job_id, const std::string& agent,
                          const std::string& why) {
  std::vector<std::shared_ptr<TransferCall>> calls;
  {
    absl::MutexLock l(&mu_);
    for (auto& [name, a] : active_) {
      if ((job_id.empty() || a.job_id == job_id) && (agent.empty() || name == agent) &&
          a.transfer) {
        calls.push_back(a.transfer);
      }
    }
    kicked_ = true;
  }
  for (auto& c : calls) c->Cancel(why);
}

size_t Engine::ActiveCount() {
  absl::MutexLock l(&mu_);
  return active_.size();
}

double Engine::Random() {
  absl::MutexLock l(&mu_);
  return std::uniform_real_distribution<double>(0.0, 1.0)(rng_);
}

void Engine::Run() {
  for (;;) {
    Pass();
    absl::Duration wait = absl::Milliseconds(options_.tick_ms);
    {
      absl::MutexLock l(&mu_);
      if (active_.empty() && waiting_.empty()) {
        // Nothing to pace or watch: sleep until the next retry is due.
        auto next = store_->NextWakeupMs();
        int64_t delay = 1000;
        if (next.ok() && next->has_value()) {
          delay = std::clamp<int64_t>(**next - clock_->NowMs(), 0, 1000);
        }
        wait = absl::Milliseconds(std::max<int64_t>(delay, options_.tick_ms));
      }
      auto woken = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return kicked_ || stop_; };
      mu_.AwaitWithTimeout(absl::Condition(&woken), wait);
      kicked_ = false;
      if (stop_) return;
    }
  }
}

void Engine::Pass() {
  if (auto n = store_->FailExpired(); n.ok() && *n > 0) {
    spdlog::info("{} target(s) failed: job deadline passed", *n);
  }
  WakeReturnedAgents();

  std::vector<std::string> busy;
  size_t room = 0;
  std::vector<std::shared_ptr<TransferCall>> calls;
  {
    absl::MutexLock l(&mu_);
    for (auto& [agent, a] : active_) {
      busy.push_back(agent);
      if (a.transfer) calls.push_back(a.transfer);
    }
    room = options_.max_concurrent > active_.size() ? options_.max_concurrent - active_.size() : 0;
  }
  for (auto& c : calls) c->Tick();
  if (room == 0) return;
  auto runnable = store_->RunnableTargets(room, busy);
  if (!runnable.ok()) {
    spdlog::error("reading runnable targets: {}", runnable.status());
    return;
  }
  for (const TargetRow& t : *runnable) StartTarget(t);
}

void Engine::WakeReturnedAgents() {
  std::vector<std::pair<std::string, std::string>> agents;
  {
    absl::MutexLock l(&mu_);
    for (auto& [name, w] : waiting_) agents.emplace_back(name, w.address);
  }
  for (auto& [name, address] : agents) {
    bool ready = pool_->ConnectAndCheckReady(name, address);
    bool wake = false;
    {
      absl::MutexLock l(&mu_);
      auto it = waiting_.find(name);
      if (it == waiting_.end()) continue;
      // Only a channel that was down and came back READY counts: an agent
      // that answers with an error keeps its backoff.
      if (!ready) {
        it->second.seen_not_ready = true;
      } else if (it->second.seen_not_ready) {
        wake = true;
        waiting_.erase(it);
      }
    }
    if (wake) {
      spdlog::info("agent {} is reachable again: retrying its targets now", name);
      (void)store_->WakeAgent(name);
    }
  }
}

absl::StatusOr<std::shared_ptr<const pkgdist::v1::Manifest>> Engine::ManifestFor(
    const std::string& id) {
  {
    absl::MutexLock l(&mu_);
    auto it = manifests_.find(id);
    if (it != manifests_.end()) return it->second;
  }
  auto bytes = store_->GetManifestBytes(id);
  if (!bytes.ok()) return bytes.status();
  auto m = std::make_shared<pkgdist::v1::Manifest>();
  if (!m->ParseFromString(*bytes)) return absl::DataLossError("stored manifest does not parse");
  absl::MutexLock l(&mu_);
  manifests_[id] = m;
  return std::shared_ptr<const pkgdist::v1::Manifest>(m);
}

void Engine::StartTarget(const TargetRow& t) {
  auto job = store_->GetJob(t.job_id);
  auto agent = store_->GetAgent(t.agent);
  if (!job.ok() || !agent.ok()) {
    spdlog::warn("cannot start {}/{}: {}", t.job_id, t.agent,
                 !job.ok() ? job.status() : agent.status());
    return;
  }
  if (absl::Status s = store_->StartAttempt(t.job_id, t.agent); !s.ok()) {
    spdlog::warn("cannot start {}/{}: {}", t.job_id, t.agent, s);
    return;
  }
  int64_t started = clock_->NowMs();
  {
    absl::MutexLock l(&mu_);
    active_[t.agent] = Active{t.job_id, nullptr, started};
    waiting_.erase(t.agent);
  }
  if (job->job.kind == JobKind::kRemove) {
    StartRemoval(t, *job, agent->address, started);
    return;
  }
  if (absl::Status s = StartTransfer(t, *job, agent->address, started); !s.ok()) {
    Finish(t.job_id, t.agent, started, s);
  }
}

absl::Status Engine::StartTransfer(const TargetRow& t, const JobView& job,
                                   const std::string& address, int64_t started_ms) {
  auto manifest = ManifestFor(job.job.package_id);
  if (!manifest.ok()) return manifest.status();
  TransferParams p;
  p.job_id = t.job_id;
  p.agent = t.agent;
  p.manifest = *manifest;
  p.package_id = PackageId(**manifest);
  p.tree = packages_->TreeOf(job.job.package_id);
  p.window_bytes = options_.window_bytes;
  p.max_bytes_per_second = options_.max_bytes_per_second;
  p.detect_seconds = options_.detect_seconds;
  std::string job_id = t.job_id, agent = t.agent;
  auto on_progress = [this, job_id, agent](uint64_t acked, uint64_t sent, bool ack) {
    if (ack) pool_->RecordContact(agent);
    if (absl::Status s = store_->RecordProgress(job_id, agent, acked, sent, ack); !s.ok()) {
      spdlog::warn("recording progress of {}/{}: {}", job_id, agent, s);
    }
  };
  auto on_done = [this, job_id, agent, started_ms](const TransferResult& r) {
    Finish(job_id, agent, started_ms, r.published ? absl::OkStatus() : r.status);
  };
  spdlog::info("job {}: sending {} to {} ({})", job_id, job.job.package, agent, address);
  auto call = TransferCall::Start(pool_->Stub(agent, address).get(), std::move(p), clock_,
                                  on_progress, on_done);
  absl::MutexLock l(&mu_);
  auto it = active_.find(agent);
  if (it != active_.end() && it->second.started_ms == started_ms) it->second.transfer = call;
  return absl::OkStatus();
}

void Engine::StartRemoval(const TargetRow& t, const JobView& job, const std::string& address,
                          int64_t started_ms) {
  struct Call {
    grpc::ClientContext ctx;
    pkgdist::v1::RemoveRequest req;
    pkgdist::v1::RemoveResponse resp;
  };
  auto call = std::make_shared<Call>();
  auto at = job.job.package.find('@');
  call->req.set_name(job.job.package.substr(0, at));
  call->req.set_version(at == std::string::npos ? "" : job.job.package.substr(at + 1));
  call->ctx.set_deadline(std::chrono::system_clock::now() +
                         std::chrono::seconds(std::max(30, options_.detect_seconds)));
  std::string job_id = t.job_id, agent = t.agent;
  pool_->Stub(agent, address)
      ->async()
      ->Remove(&call->ctx, &call->req, &call->resp,
               [this, call, job_id, agent, started_ms](grpc::Status s) {
                 if (s.ok()) pool_->RecordContact(agent);
                 Finish(job_id, agent, started_ms, FromGrpc(s));
               });
}

void Engine::Finish(const std::string& job_id, const std::string& agent, int64_t started_ms,
                    const absl::Status& result) {
  std::string address;
  if (auto a = store_->GetAgent(agent); a.ok()) address = a->address;
  if (result.ok()) {
    if (absl::Status s = store_->MarkDone(job_id, agent); !s.ok()) {
      spdlog::error("recording done for {}/{}: {}", job_id, agent, s);
    } else {
      spdlog::info("job {}: {} done", job_id, agent);
    }
    pool_->RecordContact(agent);
  } else {
    std::string error = DescribeError(result);
    // A refused certificate shows up as UNAVAILABLE; say what was refused.
    std::string identity = pool_->HandshakeErrorSince(agent, started_ms);
    if (!identity.empty() && result.code() != absl::StatusCode::kOk &&
        (result.code() == absl::StatusCode::kUnavailable ||
         result.code() == absl::StatusCode::kDeadlineExceeded)) {
      error = identity;
    }
    pool_->RecordError(agent, error);
    auto row = store_->MarkFailedAttempt(job_id, agent, error, options_.backoff, Random());
    if (!row.ok()) {
      spdlog::error("recording failure for {}/{}: {}", job_id, agent, row.status());
    } else {
      spdlog::warn("job {}: {} attempt {} failed: {} (next: {})", job_id, agent, row->attempts,
                   error, row->state == TargetState::kFailed ? "none, failed by policy"
                                                             : FormatRfc3339(row->next_attempt_ms));
    }
  }
  absl::MutexLock l(&mu_);
  auto it = active_.find(agent);
  if (it != active_.end() && it->second.started_ms == started_ms) active_.erase(it);
  if (!result.ok() && !address.empty()) waiting_[agent] = Waiting{address, false};
  kicked_ = true;
}

}  // namespace pkgdist
