#include "agent/chunk_index.h"

#include <algorithm>
#include <cstring>

#include "absl/strings/match.h"
#include "agent/disk_util.h"

namespace pkgdist {
namespace {

Digest ToDigest(const std::string& bytes) {
  Digest d{};
  std::memcpy(d.data(), bytes.data(), std::min(bytes.size(), d.size()));
  return d;
}

}  // namespace

void ChunkIndex::Add(const std::string& key, const std::string& tree,
                     const pkgdist::v1::Manifest& manifest) {
  {
    // A key names one package id, whose manifest never changes: re-adding
    // (every Offer of a staged package does) only moves its tree.
    absl::MutexLock l(&mu_);
    auto it = keys_.find(key);
    if (it != keys_.end()) {
      sources_[it->second]->tree = tree;
      return;
    }
  }
  auto source = std::make_unique<Source>();
  source->key = key;
  source->tree = tree;
  source->staged = absl::StartsWith(key, "staged:");
  source->paths.resize(static_cast<size_t>(manifest.files_size()));
  for (int i = 0; i < manifest.files_size(); ++i) {
    if (manifest.files(i).type() == pkgdist::v1::ENTRY_TYPE_FILE) {
      source->paths[static_cast<size_t>(i)] = manifest.files(i).path();
    }
  }
  absl::MutexLock l(&mu_);
  if (keys_.contains(key)) return;  // added meanwhile
  const uint32_t id = next_source_++;
  for (const auto& c : manifest.chunks()) {
    if (c.sha256().size() != 32) continue;
    auto& refs = chunks_[ToDigest(c.sha256())];
    // One place per source is enough: a package holding a chunk twice
    // holds the same bytes twice.
    if (!refs.empty() && refs.back().source == id) continue;
    refs.push_back(Ref{id, c.file(), c.offset(), c.length()});
  }
  sources_[id] = std::move(source);
  keys_[key] = id;
}

void ChunkIndex::Remove(const std::string& key) {
  absl::MutexLock l(&mu_);
  auto it = keys_.find(key);
  if (it == keys_.end()) return;
  const uint32_t id = it->second;
  keys_.erase(it);
  sources_.erase(id);
  // A scan of every chunk: removal is rare, and per-source lists of digests
  // would double the index's memory.
  for (auto c = chunks_.begin(); c != chunks_.end();) {
    auto& refs = c->second;
    refs.erase(std::remove_if(refs.begin(), refs.end(), [id](const Ref& r) { return r.source == id; }),
               refs.end());
    if (refs.empty()) {
      chunks_.erase(c++);
    } else {
      ++c;
    }
  }
}

std::vector<ChunkIndex::Location> ChunkIndex::Find(const std::string& sha256, uint32_t length,
                                                   const std::string& exclude) const {
  std::vector<Location> published, staged;
  if (sha256.size() != 32) return published;
  absl::MutexLock l(&mu_);
  auto it = chunks_.find(ToDigest(sha256));
  if (it == chunks_.end()) return published;
  for (const Ref& r : it->second) {
    if (r.length != length) continue;
    auto s = sources_.find(r.source);
    if (s == sources_.end() || r.file >= s->second->paths.size()) continue;
    if (s->second->key == exclude) continue;
    Location loc{JoinPath(s->second->tree, s->second->paths[r.file]), r.offset};
    (s->second->staged ? staged : published).push_back(std::move(loc));
  }
  published.insert(published.end(), std::make_move_iterator(staged.begin()),
                   std::make_move_iterator(staged.end()));
  return published;
}

size_t ChunkIndex::chunk_count() const {
  absl::MutexLock l(&mu_);
  return chunks_.size();
}

size_t ChunkIndex::source_count() const {
  absl::MutexLock l(&mu_);
  return sources_.size();
}

}  // namespace pkgdist
