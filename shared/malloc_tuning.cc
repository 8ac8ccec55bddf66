#include "shared/malloc_tuning.h"

#include <malloc.h>

#include <cstdlib>

#include "absl/synchronization/mutex.h"

namespace pkgdist {

void TuneMallocForLargeMessages(int arenas) {
  const char* tunables = std::getenv("GLIBC_TUNABLES");
  if (tunables != nullptr && *tunables != '\0') return;  // the operator's choice
  mallopt(M_MMAP_THRESHOLD, 32 << 20);
  mallopt(M_TRIM_THRESHOLD, 1 << 30);
  if (arenas > 0) mallopt(M_ARENA_MAX, arenas);
}

void DisableMutexDeadlockDetection() {
#ifndef __SANITIZE_ADDRESS__
  absl::SetMutexDeadlockDetectionMode(absl::OnDeadlockCycle::kIgnore);
#endif
}

}  // namespace pkgdist
