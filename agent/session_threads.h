// A thread per running call whose handler blocks (a Transfer's session,
// agent/transfer_reactor.h), as the synchronous server gave each call one
// of its pool's, and the wait for them all before what they use goes away.
#ifndef PKGDIST_AGENT_SESSION_THREADS_H_
#define PKGDIST_AGENT_SESSION_THREADS_H_

#include <cstdint>
#include <thread>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/functional/any_invocable.h"
#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"

namespace pkgdist {

// Thread-safe. Every thread started is joined: by a later Start (once it
// has returned), by Wait, or by the destructor, which waits for them all.
class SessionThreads {
 public:
  SessionThreads() = default;
  ~SessionThreads() { (void)Wait(absl::InfiniteDuration()); }
  SessionThreads(const SessionThreads&) = delete;
  SessionThreads& operator=(const SessionThreads&) = delete;

  // Runs `fn` on a new thread named `name` (at most 15 characters).
  // RESOURCE_EXHAUSTED if the system has no thread to give (fn is then
  // dropped without running).
  absl::Status Start(const char* name, absl::AnyInvocable<void() &&> fn)
      ABSL_LOCKS_EXCLUDED(mu_);
  // Waits up to `timeout` for every thread started so far to return, and
  // joins those that did. False if some still run.
  bool Wait(absl::Duration timeout) ABSL_LOCKS_EXCLUDED(mu_);
  // Threads started that have not returned yet.
  size_t running() ABSL_LOCKS_EXCLUDED(mu_);

 private:
  // Takes the threads that have returned, to be joined outside mu_.
  std::vector<std::thread> TakeFinished() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  absl::Mutex mu_;
  uint64_t started_ ABSL_GUARDED_BY(mu_) = 0;
  absl::flat_hash_map<uint64_t, std::thread> running_ ABSL_GUARDED_BY(mu_);
  std::vector<std::thread> finished_ ABSL_GUARDED_BY(mu_);  // returned, not joined
};

}  // namespace pkgdist

#endif  // PKGDIST_AGENT_SESSION_THREADS_H_
