#include "agent/peer_serving.h"

#include <fcntl.h>

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
#include "agent/disk_util.h"
#include "shared/file_util.h"
#include "shared/grpc_options.h"
#include "shared/manifest.h"
#include "shared/status_macros.h"

namespace pkgdist {

void PeerServing::Grant(const std::string& id, const pkgdist::v1::Manifest& manifest,
                        std::vector<std::string> peers, std::string staging_tree,
                        std::string published_tree, std::vector<bool> durable) {
  absl::MutexLock l(&mu_);
  std::shared_ptr<Entry> e = Find(id);
  if (e != nullptr) {
    // The staging was opened again and re-verified: its flags are the truth
    // (a chunk damaged meanwhile is missing again, and waited for).
    entries_.remove(e);
    e->durable = std::move(durable);
  } else {
    e = std::make_shared<Entry>();
    e->id = id;
    e->name = manifest.name();
    e->version = manifest.version();
    e->label = absl::StrCat(manifest.name(), "@", manifest.version());
    e->chunks.assign(manifest.chunks().begin(), manifest.chunks().end());
    for (auto& c : e->chunks) c.clear_sha256();  // the peer checks, not us
    e->paths.reserve(static_cast<size_t>(manifest.files_size()));
    for (const auto& f : manifest.files()) e->paths.push_back(f.path());
    e->durable = std::move(durable);
  }
  e->durable.resize(e->chunks.size(), false);
  e->peers = absl::flat_hash_set<std::string>(peers.begin(), peers.end());
  e->staging_tree = std::move(staging_tree);
  e->published_tree = std::move(published_tree);
  entries_.push_front(e);
  while (entries_.size() > kMaxServedPackages) {
    entries_.back()->ended = true;
    entries_.pop_back();
  }
  changed_.SignalAll();
}

void PeerServing::Durable(const std::string& id, const std::vector<uint32_t>& chunks) {
  absl::MutexLock l(&mu_);
  std::shared_ptr<Entry> e = Find(id);
  if (e == nullptr) return;
  for (uint32_t i : chunks) {
    if (i < e->durable.size()) e->durable[i] = true;
  }
  changed_.SignalAll();
}

void PeerServing::Published(const std::string& id) {
  absl::MutexLock l(&mu_);
  std::shared_ptr<Entry> e = Find(id);
  if (e == nullptr) return;
  e->published = true;
  changed_.SignalAll();
}

void PeerServing::Forget(const std::string& name, const std::string& version) {
  absl::MutexLock l(&mu_);
  entries_.remove_if([&](const std::shared_ptr<Entry>& e) {
    if (e->name != name || e->version != version) return false;
    e->ended = true;
    return true;
  });
  changed_.SignalAll();
}

bool PeerServing::Granted(const std::string& id) const {
  absl::ReaderMutexLock l(&mu_);
  return Find(id) != nullptr;
}

uint64_t PeerServing::served_bytes() const {
  absl::ReaderMutexLock l(&mu_);
  return served_bytes_;
}

std::shared_ptr<PeerServing::Entry> PeerServing::Find(const std::string& id) const {
  for (const auto& e : entries_) {
    if (e->id == id) return e;
  }
  return nullptr;
}

absl::Status PeerServing::ReadRun(const Entry& e, const Trees& trees, uint32_t first,
                                  uint32_t count, std::string* out) {
  const pkgdist::v1::ChunkRef& head = e.chunks[first];
  const pkgdist::v1::ChunkRef& last = e.chunks[first + count - 1];
  const uint64_t length = last.offset() + last.length() - head.offset();
  const std::string& rel = e.paths[head.file()];
  out->resize(length);
  // Published while we looked: the staged tree was renamed into place, so
  // a chunk missing from one tree is in the other.
  for (const std::string* tree : trees.published
                                     ? std::vector{&trees.published_tree}
                                     : std::vector{&trees.staging_tree, &trees.published_tree}) {
    const std::string path = JoinPath(*tree, rel);
    auto fd = OpenFile(path, O_RDONLY | O_CLOEXEC);
    if (absl::IsNotFound(fd.status())) continue;
    if (!fd.ok()) return fd.status();
    return PreadFull(fd->get(), out->data(), length, head.offset(), path);
  }
  // NOT_FOUND would read as "no longer served": this is a read failure here.
  return absl::InternalError(absl::StrCat(rel, " of ", e.label, " is in neither ",
                                          trees.staging_tree, " nor ", trees.published_tree));
}

absl::Status PeerServing::Serve(const std::string& peer,
                                const pkgdist::v1::FetchChunksRequest& request,
                                const WriteFn& write, const std::function<bool()>& cancelled) {
  std::shared_ptr<Entry> e;
  {
    absl::ReaderMutexLock l(&mu_);
    e = Find(request.package_id());
    if (e == nullptr || !e->peers.contains(peer)) {
      return absl::PermissionDeniedError(absl::StrCat(
          "agent ", peer, " is not named as a peer for package ", ToHex(request.package_id()),
          " here"));
    }
  }
  const auto& want = request.indices();
  for (int i = 0; i < want.size(); ++i) {
    if (want[i] >= e->chunks.size() || (i > 0 && want[i] <= want[i - 1])) {
      return absl::InvalidArgumentError(absl::StrCat(
          "chunk index ", want[i], " out of range (", e->chunks.size(),
          " chunks) or not ascending"));
    }
  }
  pkgdist::v1::FetchChunksResponse response;
  int next = 0;
  absl::Time last_write = absl::Now();
  while (next < want.size()) {
    // The run of consecutive, durable chunks of one file from `next` on, or
    // none yet (count 0): then a Waiting once a second has passed silent.
    uint32_t first = want[next], count = 0;
    Trees trees;
    bool ended = false;
    {
      absl::MutexLock l(&mu_);
      auto ready = [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
        return e->ended || e->published || e->durable[first];
      };
      if (!ready()) {
        changed_.WaitWithTimeout(&mu_, last_write + absl::Milliseconds(kWaitingEveryMs) -
                                           absl::Now());
      }
      ended = e->ended;
      if (!ended && ready()) {
        trees = Trees{e->published, e->staging_tree, e->published_tree};
        uint64_t bytes = 0;
        while (next + static_cast<int>(count) < want.size()) {
          const uint32_t i = want[next + static_cast<int>(count)];
          const auto& c = e->chunks[i];
          if (i != first + count || c.file() != e->chunks[first].file()) break;
          if (!trees.published && !e->durable[i]) break;
          if (count > 0 && bytes + c.length() > kMaxRunBytes) break;
          bytes += c.length();
          ++count;
        }
      }
    }
    if (ended) return absl::NotFoundError(absl::StrCat(e->label, " is no longer served here"));
    if (cancelled()) return absl::CancelledError("the peer went away");
    if (count == 0) {
      if (absl::Now() - last_write < absl::Milliseconds(kWaitingEveryMs)) continue;
      pkgdist::v1::FetchChunksResponse waiting;
      waiting.mutable_waiting();
      if (!write(waiting)) return absl::CancelledError("the peer went away");
      last_write = absl::Now();
      continue;
    }
    auto* chunk = response.mutable_chunk();
    chunk->set_index(first);
    chunk->set_count(count);
    RETURN_IF_ERROR(ReadRun(*e, trees, first, count, chunk->mutable_data()));
    if (!write(response)) return absl::CancelledError("the peer went away");
    last_write = absl::Now();
    {
      absl::MutexLock l(&mu_);
      served_bytes_ += chunk->data().size();
    }
    next += static_cast<int>(count);
  }
  return absl::OkStatus();
}

}  // namespace pkgdist
