// Process-wide settings for moving large messages; call them first thing
// in main().
//
// TuneMallocForLargeMessages keeps glibc's allocator from handing memory
// back to the kernel between messages.
//
// The controller reads every chunk run into a fresh buffer of up to 1 MiB,
// and gRPC allocates its slices per read. By default glibc serves such blocks with mmap, or trims
// them off the top of the heap when freed, so the next message faults its
// pages in again and the heap is grown with mprotect. On the virtual
// machines we measured (shadow page tables), each of those page faults and
// protection changes is expensive: an agent receiving 1 GiB took 86,000
// page faults and 9.2 CPU-seconds; with the settings below, 5,000 faults and
// 5.2 CPU-seconds (bench/run.sh, docs/performance.md). The price is that
// freed memory stays in the process: peak RSS is kept, and that peak is
// bounded by the transfer windows.
#ifndef PKGDIST_SHARED_MALLOC_TUNING_H_
#define PKGDIST_SHARED_MALLOC_TUNING_H_

namespace pkgdist {

// mallopt: blocks up to 32 MiB come from the heap, and the heap is trimmed
// only when 1 GiB at its top is free. `arenas` > 0 caps glibc's malloc
// arenas (M_ARENA_MAX; by default up to 8 per core). Skipped when
// GLIBC_TUNABLES is set: then the operator's malloc settings apply.
//
// The agent passes 1. Its messages are allocated by gRPC's threads and freed
// by the session's, and each thread's arena kept the holes: after a 4 GiB
// package its three arenas held 6 MiB more than after 256 MiB (x1.13 peak
// RSS). With one arena: 29-31 MiB peak instead of 34-36, growth x1.06, and
// no difference in speed beyond the noise (docs/design-notes.md).
void TuneMallocForLargeMessages(int arenas = 0);

// Turns off abseil's lock-order checking for the process. Debian builds
// abseil without NDEBUG, so every absl::Mutex (gRPC's included) records the
// order in which locks are taken, and a cycle in that history aborts the
// process: with it off, 1 GiB to four agents took x0.95 the wall time and
// x0.91 the controller's CPU side by side (bench/analysis.md), and no
// potential deadlock that never happened can crash a server. Unit tests, which do not call
// this, and the sanitized build (ASan, where this does nothing) keep it.
void DisableMutexDeadlockDetection();

}  // namespace pkgdist

#endif  // PKGDIST_SHARED_MALLOC_TUNING_H_
