#include "agent/transfer_locks.h"

#include "absl/strings/str_cat.h"

namespace pkgdist {

TransferLocks::Lease::~Lease() { locks_->Release(key_); }

absl::StatusOr<std::unique_ptr<TransferLocks::Lease>> TransferLocks::Acquire(
    absl::string_view key, std::function<void()> cancel, absl::Duration timeout) {
  std::string k(key);
  mu_.Lock();
  std::unique_ptr<Slot>& owned = slots_[k];
  if (owned == nullptr) owned = std::make_unique<Slot>();
  Slot* slot = owned.get();  // stable: slots are erased only when unused
  uint64_t claim = ++next_claim_;
  slot->newest_claim = claim;
  if (slot->held) {
    ++slot->waiters;
    // Called under mu_: the holder cannot release meanwhile, so whatever
    // its cancel function refers to (its call) is still alive.
    if (slot->cancel) slot->cancel();
    auto released_or_overtaken = [slot, claim] {
      return !slot->held || slot->newest_claim != claim;
    };
    mu_.AwaitWithTimeout(absl::Condition(&released_or_overtaken), timeout);
    --slot->waiters;
    if (slot->newest_claim != claim) {
      mu_.Unlock();
      return absl::AbortedError("superseded by a newer transfer of the same package");
    }
    if (slot->held) {
      mu_.Unlock();
      return absl::UnavailableError(absl::StrCat(
          "a previous transfer of this package did not stop within ",
          absl::FormatDuration(timeout)));
    }
  }
  slot->held = true;
  slot->cancel = std::move(cancel);
  mu_.Unlock();
  return std::unique_ptr<Lease>(new Lease(this, std::move(k)));
}

void TransferLocks::Release(const std::string& key) {
  absl::MutexLock l(&mu_);
  auto it = slots_.find(key);
  if (it == slots_.end()) return;
  it->second->held = false;
  it->second->cancel = nullptr;
  if (it->second->waiters == 0) slots_.erase(it);
}

bool TransferLocks::IsHeld(absl::string_view key) const {
  absl::MutexLock l(&mu_);
  auto it = slots_.find(key);
  return it != slots_.end() && it->second->held;
}

}  // namespace pkgdist
