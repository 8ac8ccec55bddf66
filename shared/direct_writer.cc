#include "shared/direct_writer.h"

#include <fcntl.h>
#include <pthread.h>
#include <sys/uio.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <vector>

#include "absl/strings/str_cat.h"
#include "shared/status_macros.h"

namespace pkgdist {
namespace {

// Writes every byte of `iov` at `offset`, resuming after short writes.
absl::Status PwritevFull(int fd, std::vector<iovec> iov, uint64_t offset, const std::string& path) {
  size_t first = 0;
  while (first < iov.size()) {
    ssize_t n = ::pwritev(fd, iov.data() + first, static_cast<int>(iov.size() - first),
                          static_cast<off_t>(offset));
    if (n < 0) {
      if (errno == EINTR) continue;
      return ErrnoStatus(errno, "write", path);
    }
    if (n == 0) return ErrnoStatus(EIO, "write (no progress)", path);
    offset += static_cast<uint64_t>(n);
    for (auto left = static_cast<size_t>(n); left > 0 && first < iov.size();) {
      size_t step = std::min(left, iov[first].iov_len);
      iov[first].iov_base = static_cast<char*>(iov[first].iov_base) + step;
      iov[first].iov_len -= step;
      left -= step;
      if (iov[first].iov_len == 0) ++first;
    }
  }
  return absl::OkStatus();
}

}  // namespace

DirectWriter::DirectWriter(size_t capacity, int buffers)
    : capacity_(capacity), max_buffers_(std::max(buffers, 1)) {}

DirectWriter::~DirectWriter() {
  (void)Drain();
  {
    absl::MutexLock l(&mu_);
    stop_ = true;
  }
  if (thread_.joinable()) thread_.join();
  if (task_thread_.joinable()) task_thread_.join();
}

absl::Status DirectWriter::Drain() {
  absl::Status ended = EndRun();
  absl::MutexLock l(&mu_);
  if (error_.ok()) error_ = ended;
  auto idle = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    return queue_.empty() && !writing_ && tasks_.empty() && !running_task_;
  };
  mu_.Await(absl::Condition(&idle));
  return error_;
}

absl::Status DirectWriter::Close() {
  absl::Status s = Drain();
  absl::MutexLock l(&mu_);
  fd_ = UniqueFd();
  path_.clear();
  return s;
}

absl::StatusOr<bool> DirectWriter::Target(const std::string& path) {
  {
    absl::MutexLock l(&mu_);
    if (path_ == path) return fd_.valid();
  }
  RETURN_IF_ERROR(Close());
  UniqueFd fd;
  if (!unsupported_) {
    int raw = ::open(path.c_str(), O_WRONLY | O_DIRECT | O_NOFOLLOW | O_CLOEXEC);
    if (raw < 0 && errno != EINVAL) return ErrnoStatus(errno, "open", path);
    if (raw < 0) unsupported_ = true;  // e.g. tmpfs before Linux 6.6
    fd = UniqueFd(raw);
  }
  absl::MutexLock l(&mu_);
  fd_ = std::move(fd);
  path_ = path;
  return fd_.valid();
}

absl::Status DirectWriter::SwitchTo(const std::string& path) { return Target(path).status(); }

absl::Status DirectWriter::status() {
  absl::MutexLock l(&mu_);
  return error_;
}

absl::StatusOr<DirectWriter::Buffer> DirectWriter::TakeBuffer() {
  absl::MutexLock l(&mu_);
  auto available = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    return !free_.empty() || allocated_ < max_buffers_ || !error_.ok();
  };
  mu_.Await(absl::Condition(&available));
  RETURN_IF_ERROR(error_);
  if (!free_.empty()) {
    Buffer b = std::move(free_.back());
    free_.pop_back();
    return b;
  }
  return NewBuffer();
}

absl::StatusOr<DirectWriter::Buffer> DirectWriter::NewBuffer() {
  Buffer b(static_cast<char*>(std::aligned_alloc(kBlock, capacity_)));
  if (b == nullptr) {
    return absl::ResourceExhaustedError(absl::StrCat("cannot allocate ", capacity_, " bytes"));
  }
  ++allocated_;
  return b;
}

absl::Status DirectWriter::Reserve(int buffers) {
  absl::MutexLock l(&mu_);
  while (allocated_ < std::min(buffers, max_buffers_)) {
    ASSIGN_OR_RETURN(Buffer b, NewBuffer());
    std::memset(b.get(), 0, capacity_);  // resident now, not when the disk falls behind
    free_.push_back(std::move(b));
  }
  return absl::OkStatus();
}

void DirectWriter::Queue(Buffer buf, size_t len, uint64_t offset) {
  absl::MutexLock l(&mu_);
  queue_.push_back(Job{std::move(buf), len, offset, nullptr});
  if (!thread_.joinable()) thread_ = std::thread([this] { Run(); });
}

uint64_t DirectWriter::Then(std::function<absl::Status()> task) {
  absl::Status ended = EndRun();  // the task covers every byte written before it
  absl::MutexLock l(&mu_);
  if (error_.ok()) error_ = ended;
  queue_.push_back(Job{nullptr, 0, 0, std::move(task)});
  if (!thread_.joinable()) thread_ = std::thread([this] { Run(); });
  return ++tickets_;
}

absl::StatusOr<bool> DirectWriter::Done(uint64_t ticket) {
  absl::MutexLock l(&mu_);
  RETURN_IF_ERROR(error_);
  return tasks_run_ >= ticket;
}

absl::Status DirectWriter::Wait(uint64_t ticket) {
  absl::MutexLock l(&mu_);
  auto done = [this, ticket]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    return tasks_run_ >= ticket || !error_.ok();
  };
  mu_.Await(absl::Condition(&done));
  return error_;
}

void DirectWriter::Run() {
  ::pthread_setname_np(::pthread_self(), "pkgdist-writer");  // for top -H and perf
  absl::MutexLock l(&mu_);
  auto work = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return !queue_.empty() || stop_; };
  while (true) {
    mu_.Await(absl::Condition(&work));
    if (queue_.empty()) return;  // stop_
    Job job = std::move(queue_.front());
    queue_.pop_front();
    if (job.task) {
      // Every write queued before it is done: its turn on the task thread,
      // while this one goes on with the next writes.
      tasks_.push_back(std::move(job.task));
      if (!task_thread_.joinable()) task_thread_ = std::thread([this] { RunTasks(); });
      continue;
    }
    // Writes queued right behind it that continue it go out with it: the
    // disks we measured take 4 MiB writes 1.6x as fast as 1 MiB ones.
    std::vector<Job> gathered;
    uint64_t end = job.offset + job.len;
    gathered.push_back(std::move(job));
    while (!queue_.empty() && !queue_.front().task && queue_.front().offset == end &&
           end - gathered.front().offset + queue_.front().len <= kMaxGather) {
      end += queue_.front().len;
      gathered.push_back(std::move(queue_.front()));
      queue_.pop_front();
    }
    writing_ = true;
    absl::Status s;
    if (error_.ok()) {
      std::vector<iovec> iov;
      for (const Job& j : gathered) iov.push_back(iovec{j.buf.get(), j.len});
      // fd_ and path_ do not change while writes are queued (Target
      // drains), so the descriptor stays open through the write.
      const int fd = fd_.get();
      const std::string path = path_;
      mu_.Unlock();
      s = PwritevFull(fd, std::move(iov), gathered.front().offset, path);
      mu_.Lock();
    }
    if (error_.ok()) error_ = s;
    for (Job& j : gathered) free_.push_back(std::move(j.buf));
    writing_ = false;
  }
}

void DirectWriter::RunTasks() {
  ::pthread_setname_np(::pthread_self(), "pkgdist-sync");
  absl::MutexLock l(&mu_);
  auto work = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return !tasks_.empty() || stop_; };
  while (true) {
    mu_.Await(absl::Condition(&work));
    if (tasks_.empty()) return;  // stop_
    std::function<absl::Status()> task = std::move(tasks_.front());
    tasks_.pop_front();
    running_task_ = true;
    absl::Status s;
    bool run = error_.ok();
    mu_.Unlock();
    if (run) s = task();
    task = nullptr;  // its captures (descriptors) are released outside the lock
    mu_.Lock();
    if (error_.ok()) error_ = s;
    ++tasks_run_;
    running_task_ = false;
  }
}

absl::Status DirectWriter::EndRun() {
  if (run_len_ == 0) return absl::OkStatus();
  const size_t whole = run_len_ - run_len_ % kBlock;
  const size_t tail = run_len_ - whole;
  absl::Status s;
  if (tail > 0) {
    std::string path;
    {
      absl::MutexLock l(&mu_);
      path = path_;
    }
    buffered_bytes_ += tail;
    s = PwriteFull(run_fd_, run_.get() + whole, tail, run_offset_ + whole, path);
  }
  if (whole > 0) {
    Queue(std::move(run_), whole, run_offset_);
  } else {
    absl::MutexLock l(&mu_);
    free_.push_back(std::move(run_));
  }
  run_len_ = 0;
  return s;
}

absl::Status DirectWriter::WriteAt(const std::string& path, int buffered_fd,
                                   absl::string_view data, uint64_t offset) {
  return WriteAt(path, buffered_fd, absl::MakeConstSpan(&data, 1), offset);
}

absl::Status DirectWriter::WriteAt(const std::string& path, int buffered_fd,
                                   absl::Span<const absl::string_view> pieces, uint64_t offset) {
  if (std::all_of(pieces.begin(), pieces.end(), [](absl::string_view p) { return p.empty(); })) {
    return absl::OkStatus();
  }
  RETURN_IF_ERROR(status());
  ASSIGN_OR_RETURN(bool direct, Target(path));  // a new file ends the run first
  for (absl::string_view piece : pieces) {
    if (piece.empty()) continue;
    if (direct) {
      RETURN_IF_ERROR(AppendToRun(path, buffered_fd, piece, offset));
    } else {
      buffered_bytes_ += piece.size();
      RETURN_IF_ERROR(PwriteFull(buffered_fd, piece.data(), piece.size(), offset, path));
    }
    offset += piece.size();
  }
  return absl::OkStatus();
}

absl::Status DirectWriter::AppendToRun(const std::string& path, int buffered_fd,
                                       absl::string_view data, uint64_t offset) {
  if (run_len_ > 0 && offset != run_offset_ + run_len_) RETURN_IF_ERROR(EndRun());
  if (run_len_ == 0) {
    // A run starts on a block boundary; the bytes before the first one
    // share their block with the end of another run (or a hole).
    const size_t head = std::min<size_t>((kBlock - offset % kBlock) % kBlock, data.size());
    if (head > 0) {
      buffered_bytes_ += head;
      RETURN_IF_ERROR(PwriteFull(buffered_fd, data.data(), head, offset, path));
      data.remove_prefix(head);
      offset += head;
    }
    run_offset_ = offset;
  }
  run_fd_ = buffered_fd;
  while (!data.empty()) {
    if (run_ == nullptr) {
      ASSIGN_OR_RETURN(run_, TakeBuffer());
    }
    const size_t n = std::min(capacity_ - run_len_, data.size());
    std::memcpy(run_.get() + run_len_, data.data(), n);
    run_len_ += n;
    data.remove_prefix(n);
    if (run_len_ == capacity_) {
      Queue(std::move(run_), run_len_, run_offset_);
      run_offset_ += run_len_;
      run_len_ = 0;
    }
  }
  return absl::OkStatus();
}

}  // namespace pkgdist
