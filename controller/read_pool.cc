#include "controller/read_pool.h"

#include <pthread.h>

namespace pkgdist {

ReadPool::ReadPool(int threads) {
  for (int i = 0; i < threads; ++i) threads_.emplace_back([this] { Run(); });
}

ReadPool::~ReadPool() {
  {
    absl::MutexLock l(&mu_);
    stop_ = true;
  }
  for (auto& t : threads_) t.join();
}

void ReadPool::Submit(std::function<void()> job) {
  absl::MutexLock l(&mu_);
  jobs_.push_back(std::move(job));
}

void ReadPool::Run() {
  ::pthread_setname_np(::pthread_self(), "pkgdist-read");
  for (;;) {
    std::function<void()> job;
    {
      absl::MutexLock l(&mu_);
      auto ready = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return stop_ || !jobs_.empty(); };
      mu_.Await(absl::Condition(&ready));
      if (jobs_.empty()) return;  // stopping, and nothing left to run
      job = std::move(jobs_.front());
      jobs_.pop_front();
    }
    job();
  }
}

}  // namespace pkgdist
