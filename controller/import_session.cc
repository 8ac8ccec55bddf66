#include "controller/import_session.h"

#include <fcntl.h>
#include <linux/fs.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <deque>
#include <thread>

#include "absl/base/thread_annotations.h"
#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "shared/logging.h"
#include "shared/paths.h"
#include "shared/status_macros.h"

namespace pkgdist {
namespace {

// Writeback of a file's content is started every this many bytes
// (sync_file_range), so that its fsync at the end finds little left to do
// and the disk works while the next bytes arrive and are hashed.
constexpr uint64_t kWritebackBytes = 8 << 20;
// The most content queued for the writer thread.
constexpr size_t kMaxQueuedBytes = 16 << 20;
// Each queued file holds its descriptor: a package of 40,000 empty files
// would otherwise queue them all and run out of descriptors (EMFILE).
constexpr size_t kMaxQueuedFiles = 64;
// AddLocalFile copies and hashes a file in pieces of this size.
constexpr uint64_t kLocalPieceBytes = 8 << 20;
constexpr size_t kHashReadBytes = 1 << 20;

void StartWriteback(int fd, uint64_t from, uint64_t to) {
  // Only a hint: the fsync at the end is what makes the bytes durable.
  (void)::sync_file_range(fd, static_cast<off64_t>(from), static_cast<off64_t>(to - from),
                          SYNC_FILE_RANGE_WRITE);
}

absl::Status Shrank(const std::string& display) {
  return absl::FailedPreconditionError(
      absl::StrCat(display, " changed while being imported (it shrank); nothing kept"));
}

// Copies bytes [from, from + len) of `src` to `dst` in the kernel
// (copy_file_range), or through `buf` where it cannot (*method then
// becomes kReadWrite, for this and later pieces).
absl::Status CopyRange(int src, int dst, uint64_t from, uint64_t len, LocalCopyMethod* method,
                       const std::string& display, std::string& buf) {
  uint64_t end = from + len;
  while (from < end && *method == LocalCopyMethod::kCopyFileRange) {
    off64_t in = static_cast<off64_t>(from), out = static_cast<off64_t>(from);
    ssize_t n = ::copy_file_range(src, &in, dst, &out, end - from, 0);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && (errno == EXDEV || errno == EOPNOTSUPP || errno == ENOSYS || errno == EINVAL)) {
      *method = LocalCopyMethod::kReadWrite;  // no in-kernel copy between these files
      break;
    }
    if (n < 0) return ErrnoStatus(errno, "copy_file_range from", display);
    if (n == 0) return Shrank(display);
    from += static_cast<uint64_t>(n);
  }
  buf.resize(kHashReadBytes);
  while (from < end) {
    size_t n = static_cast<size_t>(std::min<uint64_t>(buf.size(), end - from));
    ssize_t got = ::pread(src, buf.data(), n, static_cast<off_t>(from));
    if (got < 0 && errno == EINTR) continue;
    if (got < 0) return ErrnoStatus(errno, "read", display);
    if (got == 0) return Shrank(display);
    RETURN_IF_ERROR(PwriteFull(dst, buf.data(), static_cast<size_t>(got), from, display));
    from += static_cast<uint64_t>(got);
  }
  return absl::OkStatus();
}

}  // namespace

// Writes the streamed files' content on its own thread, in order: Open a
// file, Write its bytes, Close it (fsync). For a local import it Copies
// pieces of a source file into the upload ahead of the caller, which
// hashes each piece of the copy once WaitCopied says it is there. The
// first failure is kept and returned by every later call; what is queued
// after it is dropped.
// Thread-safe between one producer and the writer thread.
class ContentWriter {
 public:
  ContentWriter() : thread_([this] { Run(); }) {}
  ~ContentWriter() {
    {
      absl::MutexLock l(&mu_);
      stop_ = true;
    }
    thread_.join();
  }
  ContentWriter(const ContentWriter&) = delete;
  ContentWriter& operator=(const ContentWriter&) = delete;

  absl::Status Open(UniqueFd fd, std::string path) {
    return Push(Op{Op::kOpen, std::move(fd), std::move(path), {}});
  }
  // Waits while more than kMaxQueuedBytes are queued.
  absl::Status Write(std::string data) { return Push(Op{Op::kWrite, {}, {}, std::move(data)}); }
  absl::Status Close() { return Push(Op{Op::kClose, {}, {}, {}}); }
  // Copies [from, from + len) of `src` to `dst` (both stay the caller's and
  // must stay open until WaitCopied(from + len) returns).
  absl::Status Copy(int src, int dst, uint64_t from, uint64_t len, std::string display) {
    Op op{Op::kCopy, {}, std::move(display), {}};
    op.src = src;
    op.dst = dst;
    op.from = from;
    op.len = len;
    return Push(std::move(op));
  }
  // Starts a new file's copies at offset 0 with copy_file_range.
  void ResetCopies() {
    absl::MutexLock l(&mu_);
    copied_ = 0;
    method_ = LocalCopyMethod::kCopyFileRange;
  }
  // Waits until the bytes before `offset` are copied; returns how.
  absl::StatusOr<LocalCopyMethod> WaitCopied(uint64_t offset) {
    absl::MutexLock l(&mu_);
    wanted_ = offset;
    mu_.Await(absl::Condition(this, &ContentWriter::CopiedEnough));
    if (!error_.ok()) return error_;
    return method_;
  }
  // Drops what is queued (every later call fails with `why`) and waits for
  // the op in progress.
  void Abort(absl::Status why) {
    absl::MutexLock l(&mu_);
    if (error_.ok()) error_ = std::move(why);
    mu_.Await(absl::Condition(this, &ContentWriter::Idle));
  }
  // Waits until everything queued is written.
  absl::Status Drain() {
    absl::MutexLock l(&mu_);
    mu_.Await(absl::Condition(this, &ContentWriter::Idle));
    return error_;
  }

 private:
  struct Op {
    enum Kind { kOpen, kWrite, kClose, kCopy } kind;
    UniqueFd fd;
    std::string path;  // kOpen; kCopy: the source, for errors
    std::string data;
    int src = -1, dst = -1;  // kCopy
    uint64_t from = 0, len = 0;
  };

  bool CopiedEnough() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    return copied_ >= wanted_ || !error_.ok();
  }

  bool Idle() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return queue_.empty() && !busy_; }
  bool HasRoom() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    return (queued_bytes_ <= kMaxQueuedBytes && queued_files_ < kMaxQueuedFiles) ||
           !error_.ok();
  }
  bool HasWork() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return !queue_.empty() || stop_; }

  absl::Status Push(Op op) {
    absl::MutexLock l(&mu_);
    mu_.Await(absl::Condition(this, &ContentWriter::HasRoom));
    if (!error_.ok()) return error_;
    queued_bytes_ += op.data.size();
    if (op.kind == Op::kOpen) ++queued_files_;
    queue_.push_back(std::move(op));
    return absl::OkStatus();
  }

  void Run() {
    for (;;) {
      Op op;
      bool failed;
      {
        absl::MutexLock l(&mu_);
        mu_.Await(absl::Condition(this, &ContentWriter::HasWork));
        if (queue_.empty()) return;  // stopping
        op = std::move(queue_.front());
        queue_.pop_front();
        if (op.kind == Op::kOpen) --queued_files_;
        busy_ = true;
        failed = !error_.ok();
      }
      absl::Status s = failed ? absl::OkStatus() : Execute(op);
      absl::MutexLock l(&mu_);
      queued_bytes_ -= op.data.size();
      busy_ = false;
      if (!s.ok() && error_.ok()) error_ = s;
      if (op.kind == Op::kCopy && s.ok()) {
        copied_ = op.from + op.len;
        method_ = copy_method_;
      }
    }
  }

  // Only the writer thread uses file_, path_, written_, started_,
  // copy_method_ and copy_buf_.
  absl::Status Execute(Op& op) {
    switch (op.kind) {
      case Op::kOpen:
        file_ = std::move(op.fd);
        path_ = std::move(op.path);
        written_ = started_ = 0;
        return absl::OkStatus();
      case Op::kWrite:
        RETURN_IF_ERROR(WriteAll(file_.get(), op.data.data(), op.data.size(), path_));
        written_ += op.data.size();
        if (written_ - started_ >= kWritebackBytes) {
          StartWriteback(file_.get(), started_, written_);
          started_ = written_;
        }
        return absl::OkStatus();
      case Op::kClose: {
        absl::Status s = Fsync(file_.get(), path_);
        file_.Reset();
        return s;
      }
      case Op::kCopy:
        if (op.from == 0) copy_method_ = LocalCopyMethod::kCopyFileRange;
        RETURN_IF_ERROR(CopyRange(op.src, op.dst, op.from, op.len, &copy_method_, op.path,
                                  copy_buf_));
        StartWriteback(op.dst, op.from, op.from + op.len);
        return absl::OkStatus();
    }
    return absl::InternalError("unknown writer op");
  }

  UniqueFd file_;
  std::string path_;
  uint64_t written_ = 0, started_ = 0;
  LocalCopyMethod copy_method_ = LocalCopyMethod::kCopyFileRange;
  std::string copy_buf_;

  absl::Mutex mu_;
  std::deque<Op> queue_ ABSL_GUARDED_BY(mu_);
  size_t queued_bytes_ ABSL_GUARDED_BY(mu_) = 0;
  size_t queued_files_ ABSL_GUARDED_BY(mu_) = 0;  // kOpen ops queued (each holds a descriptor)
  bool busy_ ABSL_GUARDED_BY(mu_) = false;
  bool stop_ ABSL_GUARDED_BY(mu_) = false;
  uint64_t copied_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t wanted_ ABSL_GUARDED_BY(mu_) = 0;
  LocalCopyMethod method_ ABSL_GUARDED_BY(mu_) = LocalCopyMethod::kCopyFileRange;
  absl::Status error_ ABSL_GUARDED_BY(mu_);
  std::thread thread_;  // last: starts once the rest is constructed
};

const char* LocalCopyMethodName(LocalCopyMethod m) {
  switch (m) {
    case LocalCopyMethod::kReflink: return "reflink";
    case LocalCopyMethod::kCopyFileRange: return "copy_file_range";
    case LocalCopyMethod::kReadWrite: return "read/write";
  }
  return "?";
}

std::string LocalCopyStats::Summary() const {
  std::string out;
  for (int m = 0; m < 3; ++m) {
    if (files[m] == 0) continue;
    absl::StrAppend(&out, out.empty() ? "" : ", ", files[m], " file(s) (", bytes[m],
                    " bytes) by ", LocalCopyMethodName(static_cast<LocalCopyMethod>(m)));
  }
  return out.empty() ? "no file content" : out;
}

ImportSession::ImportSession(std::string dir, ManifestLimits limits, Chunking chunking)
    : dir_(std::move(dir)), tree_(dir_ + "/tree"), limits_(limits), chunking_(chunking) {}

ImportSession::~ImportSession() {
  writer_.reset();  // joins its thread and closes its file first
  file_.Reset();
  if (!committed_) (void)RemoveAll(dir_);
}

absl::Status ImportSession::CloseFile() {
  if (file_.valid()) {
    RETURN_IF_ERROR(Fsync(file_.get(), file_path_));
    file_.Reset();
  } else {
    RETURN_IF_ERROR(writer_->Close());
  }
  return builder_->EndFile();
}

absl::Status ImportSession::BeginEntry(const pkgdist::v1::ImportEntry& e) {
  RETURN_IF_ERROR(ValidateRelativePath(e.path(), limits_.max_path_length));
  if (!paths_.insert(e.path()).second) {
    return absl::InvalidArgumentError(absl::StrCat("entry.path \"", e.path(), "\" appears twice"));
  }
  if (limits_.refuse_case_collisions &&
      !folded_paths_.insert(absl::AsciiStrToLower(e.path())).second) {
    return absl::InvalidArgumentError(absl::StrCat(
        "entry.path \"", e.path(), "\" collides with another path differing in case"));
  }
  std::string parent(ParentOf(e.path()));
  if (!parent.empty() && !dirs_.contains(parent)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "entry.path \"", e.path(), "\": its parent directory was not sent before it"));
  }
  std::string disk = tree_ + "/" + e.path();
  switch (e.type()) {
    case pkgdist::v1::ENTRY_TYPE_DIRECTORY:
      RETURN_IF_ERROR(builder_->AddDirectory(e.path(), e.mode()));
      if (::mkdir(disk.c_str(), 0755) != 0) return ErrnoStatus(errno, "mkdir", e.path());
      dirs_.insert(e.path());
      return absl::OkStatus();
    case pkgdist::v1::ENTRY_TYPE_SYMLINK:
      RETURN_IF_ERROR(builder_->AddSymlink(e.path(), e.link_target()));
      if (::symlink(e.link_target().c_str(), disk.c_str()) != 0) {
        return ErrnoStatus(errno, "symlink", e.path());
      }
      return absl::OkStatus();
    case pkgdist::v1::ENTRY_TYPE_FILE: {
      RETURN_IF_ERROR(builder_->BeginFile(e.path(), e.mode(), e.size()));
      int fd = ::open(disk.c_str(), O_RDWR | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0644);
      if (fd < 0) return ErrnoStatus(errno, "create", e.path());
      file_ = UniqueFd(fd);
      file_path_ = e.path();
      file_written_ = 0;
      file_size_ = e.size();
      return absl::OkStatus();
    }
    default:
      return absl::InvalidArgumentError(
          absl::StrCat("entry.type of \"", e.path(), "\": must be file, directory or symlink"));
  }
}

absl::Status ImportSession::Add(pkgdist::v1::ImportPackageRequest&& msg) {
  using R = pkgdist::v1::ImportPackageRequest;
  if (ended_) return absl::InvalidArgumentError("message after end");
  if (builder_ == nullptr && msg.msg_case() != R::kHeader) {
    return absl::InvalidArgumentError("header: the first message must be the header");
  }
  if (builder_ != nullptr && builder_->in_file() && msg.msg_case() != R::kData) {
    return absl::InvalidArgumentError(
        absl::StrCat("data: file ", file_path_, " got fewer bytes than its size"));
  }
  switch (msg.msg_case()) {
    case R::kHeader: {
      if (builder_ != nullptr) return absl::InvalidArgumentError("header: sent twice");
      RETURN_IF_ERROR(ValidateName(msg.header().name(), "header.name"));
      RETURN_IF_ERROR(ValidateName(msg.header().version(), "header.version"));
      builder_ = std::make_unique<ManifestBuilder>(msg.header().name(), msg.header().version(),
                                                   limits_, chunking_);
      return MakeDirs(tree_);
    }
    case R::kEntry: {
      RETURN_IF_ERROR(BeginEntry(msg.entry()));
      if (msg.entry().type() != pkgdist::v1::ENTRY_TYPE_FILE) return absl::OkStatus();
      if (file_size_ == 0) return CloseFile();
      // The writer owns the file from here until its Close.
      if (writer_ == nullptr) writer_ = std::make_unique<ContentWriter>();
      return writer_->Open(std::move(file_), file_path_);
    }
    case R::kData: {
      if (!builder_->in_file()) return absl::InvalidArgumentError("data: outside a file entry");
      std::string d = std::move(*msg.mutable_data()->mutable_data());
      RETURN_IF_ERROR(builder_->Append(d));  // refuses more than the declared size
      file_written_ += d.size();
      RETURN_IF_ERROR(writer_->Write(std::move(d)));
      if (file_written_ == file_size_) return CloseFile();
      return absl::OkStatus();
    }
    case R::kEnd:
      ended_ = true;
      return absl::OkStatus();
    default:
      return absl::InvalidArgumentError("empty message");
  }
}

absl::Status ImportSession::HashCopy(uint64_t from, uint64_t to) {
  // Mapped, not read: the chunker and the hash read the page cache's pages
  // of the copy in place (from is a multiple of kLocalPieceBytes).
  if (to == from) return absl::OkStatus();
  size_t len = static_cast<size_t>(to - from);
  void* p = ::mmap(nullptr, len, PROT_READ, MAP_SHARED | MAP_POPULATE, file_.get(),
                   static_cast<off_t>(from));
  if (p == MAP_FAILED) return ErrnoStatus(errno, "mmap", file_path_);
  absl::Status s = builder_->Append(absl::string_view(static_cast<const char*>(p), len));
  ::munmap(p, len);
  return s;
}

absl::Status ImportSession::AddLocalFile(const pkgdist::v1::ImportEntry& entry, int src,
                                         const std::string& display) {
  if (builder_ == nullptr) return absl::FailedPreconditionError("no header");
  struct stat before;
  if (::fstat(src, &before) != 0) return ErrnoStatus(errno, "stat", display);
  if (!S_ISREG(before.st_mode) || static_cast<uint64_t>(before.st_size) != entry.size()) {
    return absl::FailedPreconditionError(
        absl::StrCat(display, " changed while being imported; nothing kept"));
  }
  RETURN_IF_ERROR(BeginEntry(entry));
  const uint64_t size = entry.size();
  LocalCopyMethod method = LocalCopyMethod::kCopyFileRange;
  // Clone or copy first, then hash the copy: what is stored is exactly what
  // was hashed, even if the source is being written meanwhile.
  if (size > 0 && ::ioctl(file_.get(), FICLONE, src) == 0) {
    method = LocalCopyMethod::kReflink;
    RETURN_IF_ERROR(HashCopy(0, size));
  } else if (size > 0) {
    // The writer thread copies each piece while this one hashes the one
    // before it (queued at most kMaxQueuedBytes ahead: pieces carry no data).
    if (writer_ == nullptr) writer_ = std::make_unique<ContentWriter>();
    RETURN_IF_ERROR(writer_->Drain());
    writer_->ResetCopies();
    absl::Status s;
    for (uint64_t at = 0; at < size && s.ok(); at += kLocalPieceBytes) {
      s = writer_->Copy(src, file_.get(), at, std::min(kLocalPieceBytes, size - at), display);
    }
    for (uint64_t at = 0; at < size && s.ok(); at += kLocalPieceBytes) {
      uint64_t end = std::min(at + kLocalPieceBytes, size);
      absl::StatusOr<LocalCopyMethod> copied = writer_->WaitCopied(end);
      s = copied.ok() ? HashCopy(at, end) : copied.status();
      if (copied.ok()) method = *copied;
    }
    if (!s.ok()) {
      // No copy may run on after `src` is closed: the session is done.
      writer_->Abort(absl::CancelledError("local import failed"));
      return s;
    }
  }
  struct stat after;
  if (::fstat(src, &after) != 0) return ErrnoStatus(errno, "stat", display);
  if (after.st_size != before.st_size || after.st_mtim.tv_sec != before.st_mtim.tv_sec ||
      after.st_mtim.tv_nsec != before.st_mtim.tv_nsec) {
    return absl::FailedPreconditionError(absl::StrCat(
        display, " changed while being imported (its size or mtime moved); nothing kept"));
  }
  spdlog::debug("local import: {} stored by {}", display, LocalCopyMethodName(method));
  local_stats_.files[static_cast<int>(method)] += 1;
  local_stats_.bytes[static_cast<int>(method)] += size;
  return CloseFile();
}

absl::StatusOr<pkgdist::v1::Manifest> ImportSession::Finish() {
  if (!ended_) return absl::InvalidArgumentError("upload ended without its end message");
  if (builder_ == nullptr) return absl::InvalidArgumentError("header: missing");
  if (writer_ != nullptr) RETURN_IF_ERROR(writer_->Drain());
  return builder_->Finish();
}

}  // namespace pkgdist
