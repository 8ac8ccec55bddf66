#include "agent/session_threads.h"

#include <pthread.h>

#include <system_error>
#include <utility>

#include "absl/strings/str_cat.h"

namespace pkgdist {

absl::Status SessionThreads::Start(const char* name, absl::AnyInvocable<void() &&> fn) {
  std::vector<std::thread> finished;
  absl::Status started;
  try {
    absl::MutexLock l(&mu_);
    finished = TakeFinished();  // even if no thread starts below
    const uint64_t id = ++started_;
    // The thread's last act, under mu_ (which this Start holds until its
    // std::thread is in running_): moving that std::thread to finished_.
    running_.emplace(id, std::thread([this, id, name, fn = std::move(fn)]() mutable {
      ::pthread_setname_np(::pthread_self(), name);  // for top -H and perf
      std::move(fn)();
      absl::MutexLock done(&mu_);
      auto it = running_.find(id);
      finished_.push_back(std::move(it->second));
      running_.erase(it);
    }));
  } catch (const std::system_error& e) {  // pthread_create's EAGAIN
    started = absl::ResourceExhaustedError(absl::StrCat("cannot start a thread: ", e.what()));
  }
  for (std::thread& t : finished) t.join();
  return started;
}

bool SessionThreads::Wait(absl::Duration timeout) {
  std::vector<std::thread> finished;
  bool all = false;
  {
    absl::MutexLock l(&mu_);
    auto none_running = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return running_.empty(); };
    all = mu_.AwaitWithTimeout(absl::Condition(&none_running), timeout);
    finished = TakeFinished();
  }
  for (std::thread& t : finished) t.join();
  return all;
}

size_t SessionThreads::running() {
  absl::MutexLock l(&mu_);
  return running_.size();
}

std::vector<std::thread> SessionThreads::TakeFinished() { return std::exchange(finished_, {}); }

}  // namespace pkgdist
