// A few threads that read package content for the transfers, so that no
// gRPC callback thread waits for the controller's disk: a TransferCall asks
// for its next chunk here and sends it when the read is done.
//
// Thread-safe. The destructor runs every job already submitted, then joins.
#ifndef PKGDIST_CONTROLLER_READ_POOL_H_
#define PKGDIST_CONTROLLER_READ_POOL_H_

#include <deque>
#include <functional>
#include <thread>
#include <vector>

#include "absl/synchronization/mutex.h"

namespace pkgdist {

class ReadPool {
 public:
  explicit ReadPool(int threads);
  ~ReadPool();
  ReadPool(const ReadPool&) = delete;
  ReadPool& operator=(const ReadPool&) = delete;

  // Runs `job` on one of the pool's threads. Never runs it inline, so it is
  // safe to call with any lock held that `job` itself does not take.
  void Submit(std::function<void()> job);

 private:
  void Run();

  absl::Mutex mu_;
  std::deque<std::function<void()>> jobs_ ABSL_GUARDED_BY(mu_);
  bool stop_ ABSL_GUARDED_BY(mu_) = false;
  std::vector<std::thread> threads_;
};

}  // namespace pkgdist

#endif  // PKGDIST_CONTROLLER_READ_POOL_H_
