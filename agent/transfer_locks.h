// Per-package locks, so that two Transfers of one package (or a Transfer
// and a Remove) never interleave on its staging directory.
//
// The newest claimant wins: acquiring a held lock asks the holder to stop
// (its cancel function, e.g. ServerContext::TryCancel, which makes its
// stream's Read() fail) and waits, bounded, for it to release. A controller
// that reconnects after a network cut thus replaces its own stale stream at
// once instead of waiting for keepalive to reap it. A waiter overtaken by a
// newer claimant gives up with ABORTED. Thread-safe.
#ifndef PKGDIST_AGENT_TRANSFER_LOCKS_H_
#define PKGDIST_AGENT_TRANSFER_LOCKS_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"

namespace pkgdist {

class TransferLocks {
 public:
  // Held lock on one key; released on destruction. Must not outlive the
  // TransferLocks that issued it.
  class Lease {
   public:
    ~Lease();
    Lease(const Lease&) = delete;
    Lease& operator=(const Lease&) = delete;

   private:
    friend class TransferLocks;
    Lease(TransferLocks* locks, std::string key) : locks_(locks), key_(std::move(key)) {}
    TransferLocks* locks_;
    std::string key_;
  };

  TransferLocks() = default;
  TransferLocks(const TransferLocks&) = delete;
  TransferLocks& operator=(const TransferLocks&) = delete;

  // Takes the lock on `key`. If it is held, calls the holder's `cancel` and
  // waits up to `timeout`; UNAVAILABLE if the holder did not release in
  // time, ABORTED if a newer claimant came meanwhile. `cancel` (may be
  // empty) is how a later claimant stops this one: it runs under this
  // object's lock while this claim still holds the key, so it must be quick
  // and must not call back into TransferLocks.
  absl::StatusOr<std::unique_ptr<Lease>> Acquire(absl::string_view key,
                                                 std::function<void()> cancel,
                                                 absl::Duration timeout);

  // True if `key` is held (for tests and inventory).
  bool IsHeld(absl::string_view key) const;

 private:
  struct Slot {
    bool held = false;
    std::function<void()> cancel;  // the holder's
    uint64_t newest_claim = 0;
    int waiters = 0;
  };
  void Release(const std::string& key);

  mutable absl::Mutex mu_;
  absl::flat_hash_map<std::string, std::unique_ptr<Slot>> slots_ ABSL_GUARDED_BY(mu_);
  uint64_t next_claim_ ABSL_GUARDED_BY(mu_) = 0;
};

}  // namespace pkgdist

#endif  // PKGDIST_AGENT_TRANSFER_LOCKS_H_
