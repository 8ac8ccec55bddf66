// Writes file content in whole 4 KiB blocks with O_DIRECT, past the page
// cache.
//
// Why: the agent writes packages it does not read back soon, and on the VMs we measured growing
// the page cache with new pages cost about 2 CPU-seconds per GiB in
// first-touch faults on the host (docs/design-notes.md, "Memory allocation").
//
// Writes are asynchronous: a background thread issues them from a few
// aligned buffers, so the caller hashes and receives the next piece while the
// disk takes the last (a 1 MiB O_DIRECT write waits for the device, about
// 1.3 ms on the disks we measured). Pieces queued back to back at consecutive
// offsets go out as one write of up to 4 MiB.
//
// Pieces need not be aligned: content-defined chunks end anywhere. A piece
// that continues the previous one is appended to the buffer being filled,
// which is queued when full; so a run of unaligned chunks still goes out in
// whole 1 MiB blocks. Only the blocks where a run starts or is cut (a jump
// to another offset or file, a task, Drain) are written partly through the
// buffered descriptor: the head of a run up to its first block boundary,
// and the tail after its last one. A block is thus written either directly
// or buffered, never both. Drain() waits for them all and
// returns the first error; a failed write is also returned by every later
// call.
// Tasks queued with Then() run in order on a second thread, each once every
// write queued before it is done, while later writes go on: the agent's
// fsync + journal of a batch of chunks, which the caller does not wait for
// unless it chooses to (Wait()), and which the next batch's writes overlap.
//
// Durability: after Drain(), the caller fsyncs the file through any
// descriptor; fsync works on the inode, so it also commits the blocks and
// extents O_DIRECT allocated. Pieces that are not whole aligned blocks, and
// filesystems without O_DIRECT (the open fails with EINVAL: tmpfs before
// Linux 6.6), are written synchronously through the caller's buffered
// descriptor instead.
//
// One file at a time; the calls are not thread-safe.
#ifndef PKGDIST_SHARED_DIRECT_WRITER_H_
#define PKGDIST_SHARED_DIRECT_WRITER_H_

#include <cstdint>
#include <cstdlib>
#include <deque>
#include <functional>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "absl/types/span.h"
#include "shared/file_util.h"

namespace pkgdist {

class DirectWriter {
 public:
  static constexpr size_t kBlock = 4096;

  // Contiguous queued writes are issued as one of at most this many bytes.
  static constexpr size_t kMaxGather = size_t{4} << 20;

  // `capacity`: the size of each aligned buffer, a multiple of kBlock (a run
  // is queued in pieces of this size, gathered into writes of up to
  // kMaxGather); `buffers`: how many may be filling, queued or in flight
  // (allocated when first needed).
  static constexpr int kDefaultBuffers = 8;
  explicit DirectWriter(size_t capacity, int buffers = kDefaultBuffers);
  ~DirectWriter();  // waits for queued writes and tasks (errors are dropped)
  DirectWriter(const DirectWriter&) = delete;
  DirectWriter& operator=(const DirectWriter&) = delete;

  // Allocates and touches up to `buffers` buffers now (at most the
  // constructor's count), so that the writer's memory is the same whether or
  // not the disk ever falls behind; otherwise they are allocated on demand.
  absl::Status Reserve(int buffers);

  // Random access: writes `data` at `offset` of `path`, whose buffered
  // descriptor is `buffered_fd` (it must stay open until the next call of
  // any method: the tail of a run is written through it later). Whole
  // aligned blocks are queued for O_DIRECT from an aligned copy.
  absl::Status WriteAt(const std::string& path, int buffered_fd, absl::string_view data,
                       uint64_t offset);
  // The same for bytes in pieces (received slices), one after the other
  // from `offset`: the same writes as consecutive WriteAt calls of each
  // piece, so a piece continues the run the one before it fills. Every
  // byte is copied or written before this returns; no piece is kept.
  absl::Status WriteAt(const std::string& path, int buffered_fd,
                       absl::Span<const absl::string_view> pieces, uint64_t offset);

  // Makes `path` the file written next: if it is not the current one, waits
  // for every queued write and task first (Drain). Call it before anything
  // that may fsync or close the current file behind the writer's back; it
  // also means that no task still holds a file the caller then closes.
  absl::Status SwitchTo(const std::string& path);

  // Queues `task` to run on the task thread once every write queued (or
  // written) before it is done. It is skipped if an earlier write or task failed; its own
  // error becomes the writer's. Returns its ticket (1, 2, ...).
  uint64_t Then(std::function<absl::Status()> task);
  // Whether task `ticket` has run, without blocking; the writer's first
  // error instead, if it has one.
  absl::StatusOr<bool> Done(uint64_t ticket);
  // Waits until task `ticket` has run; the first error of the writer, if any.
  absl::Status Wait(uint64_t ticket);

  // Waits until every queued write and task is done; the first error, if any.
  absl::Status Drain();
  // The first error of a queued write or task so far, without waiting.
  absl::Status status();
  // Bytes written through the buffered descriptor so far (pieces' heads and
  // tails, or everything on a filesystem without O_DIRECT).
  uint64_t buffered_bytes() const { return buffered_bytes_; }
  // Drains and closes the O_DIRECT descriptor (before the file is renamed
  // or removed).
  absl::Status Close();

 private:
  struct AlignedFree {
    void operator()(char* p) const { std::free(p); }
  };
  using Buffer = std::unique_ptr<char, AlignedFree>;
  // A write of buf[0, len) at offset, or a task (buf empty).
  struct Job {
    Buffer buf;
    size_t len;
    uint64_t offset;
    std::function<absl::Status()> task;
  };

  // Opens `path` with O_DIRECT unless already open on it (draining the
  // previous file). False when the filesystem does not support it.
  absl::StatusOr<bool> Target(const std::string& path);
  // Appends `data` at `offset` to the run being filled (ending it first if
  // `data` does not continue it); the O_DIRECT descriptor is open on `path`.
  absl::Status AppendToRun(const std::string& path, int buffered_fd, absl::string_view data,
                           uint64_t offset);
  // Queues the whole blocks of the run being filled and writes its partial
  // last block through the buffered descriptor; the run is then empty.
  absl::Status EndRun();
  // A free aligned buffer, waiting for one if all are queued.
  absl::StatusOr<Buffer> TakeBuffer();
  // A new aligned buffer of capacity_ bytes, counted in allocated_.
  absl::StatusOr<Buffer> NewBuffer() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void Queue(Buffer buf, size_t len, uint64_t offset);
  void Run();       // the writer thread
  void RunTasks();  // the task thread

  const size_t capacity_;
  const int max_buffers_;
  // The owner's thread only.
  bool unsupported_ = false;
  // The run being filled: run_len_ bytes at run_offset_ (a block boundary)
  // of path_, whose buffered descriptor is run_fd_. Empty if run_len_ is 0.
  Buffer run_;
  size_t run_len_ = 0;
  uint64_t run_offset_ = 0;
  int run_fd_ = -1;
  uint64_t buffered_bytes_ = 0;

  absl::Mutex mu_;
  // Changed by the owner only while nothing is queued (Target drains
  // first); the writer thread reads them under mu_ before each write.
  std::string path_ ABSL_GUARDED_BY(mu_);  // what fd_ is open on
  UniqueFd fd_ ABSL_GUARDED_BY(mu_);
  std::deque<Job> queue_ ABSL_GUARDED_BY(mu_);
  std::vector<Buffer> free_ ABSL_GUARDED_BY(mu_);
  int allocated_ ABSL_GUARDED_BY(mu_) = 0;
  bool writing_ ABSL_GUARDED_BY(mu_) = false;
  bool stop_ ABSL_GUARDED_BY(mu_) = false;
  absl::Status error_ ABSL_GUARDED_BY(mu_);
  std::deque<std::function<absl::Status()>> tasks_ ABSL_GUARDED_BY(mu_);  // their writes done
  bool running_task_ ABSL_GUARDED_BY(mu_) = false;
  uint64_t tickets_ ABSL_GUARDED_BY(mu_) = 0;   // tasks queued
  uint64_t tasks_run_ ABSL_GUARDED_BY(mu_) = 0;  // tasks done or skipped, in order
  std::thread thread_;       // started by the first queued write or task
  std::thread task_thread_;  // started by the first task
};

}  // namespace pkgdist

#endif  // PKGDIST_SHARED_DIRECT_WRITER_H_
