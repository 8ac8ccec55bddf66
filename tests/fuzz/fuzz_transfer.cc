// libFuzzer target: the agent's handling of a sequence of Transfer messages.
//
// The input is decoded (transfer_program.h) into one or more Transfer
// streams: offers of small valid packages, mutated or raw manifests, chunks
// right, wrong or out of range, commits, empty messages, a full disk and
// agent restarts. Each stream runs through a TransferSession over a fresh
// temporary ROOT. Invariants: no crash; errors are the documented codes;
// OK means Published for the offered id; Need and Ack name chunks in range,
// and Ack only chunks the agent really holds, already in its journal when
// the Ack is sent; a package is published only
// after its stream ended OK, and then its tree matches its manifest, its
// symlinks resolve inside it and it stays intact; nothing is written
// outside ROOT.
#include <limits.h>
#include <stdlib.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <deque>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "agent/journal.h"
#include "agent/package_store.h"
#include "agent/transfer_session.h"
#include "shared/file_util.h"
#include "shared/manifest.h"
#include "shared/sha256.h"
#include "tests/fuzz/fuzz_util.h"
#include "tests/fuzz/transfer_program.h"

namespace pkgdist::fuzz {
namespace {

using pkgdist::v1::Manifest;
using pkgdist::v1::TransferRequest;
using pkgdist::v1::TransferResponse;

class FakeStream : public TransferStream {
 public:
  bool Read(TransferRequest* request) override {
    if (requests.empty()) return false;
    *request = std::move(requests.front());
    requests.pop_front();
    return true;
  }
  bool Write(const TransferResponse& response) override {
    if (on_write) on_write(response);
    responses.push_back(response);
    return true;
  }
  std::deque<TransferRequest> requests;
  std::vector<TransferResponse> responses;
  std::function<void(const TransferResponse&)> on_write;
};

// Operand bytes, read from the front; 0 once the input is exhausted.
class Reader {
 public:
  explicit Reader(absl::string_view in) : in_(in) {}
  bool done() const { return pos_ >= in_.size(); }
  uint8_t Byte() { return pos_ < in_.size() ? static_cast<uint8_t>(in_[pos_++]) : 0; }
  std::string Bytes(size_t n) {
    n = std::min(n, in_.size() - std::min(pos_, in_.size()));
    std::string out(in_.substr(pos_, n));
    pos_ += n;
    return out;
  }

 private:
  absl::string_view in_;
  size_t pos_ = 0;
};

struct Offered {
  Manifest manifest;
  std::string id;
  std::map<std::string, std::string> content;
};

void Mutate(Manifest& m, Reader& r) {
  uint8_t kind = r.Byte(), a = r.Byte(), b = r.Byte();
  std::string s = r.Bytes(r.Byte() % 48);
  int n = m.files_size();
  auto* f = n > 0 ? m.mutable_files(a % n) : nullptr;
  switch (kind % 8) {
    case 0: if (f) f->set_path(s); break;
    case 1: if (f) f->set_mode(uint32_t{a} << 8 | b); break;
    case 2:
      if (f) {
        f->set_type(pkgdist::v1::ENTRY_TYPE_SYMLINK);
        f->set_size(0);
        f->clear_sha256();
        f->set_link_target(s);
      }
      break;
    case 3: m.set_version(s); break;
    case 4: {
      auto* d = m.add_files();
      d->set_path(s);
      d->set_type(pkgdist::v1::ENTRY_TYPE_DIRECTORY);
      d->set_mode(0755);
      break;
    }
    case 5:
      if (m.chunks_size() > 0) {
        auto* c = m.mutable_chunks(a % m.chunks_size());
        if (b & 1) c->set_length(b >> 1); else c->set_offset(b >> 1);
      }
      break;
    case 6: if (n > 0) m.mutable_files()->SwapElements(a % n, b % n); break;
    case 7: if (f) f->set_type(static_cast<pkgdist::v1::EntryType>(b % 5)); break;
  }
}

class Harness {
 public:
  explicit Harness(std::string parent)
      : parent_(std::move(parent)), root_(parent_ + "/root") {
    Restart();
  }

  void Run(absl::string_view input) {
    Reader r(input);
    while (!r.done()) Step(r);
    Flush();
    Check(std::filesystem::exists(root_), "ROOT vanished");
    for (const auto& e : std::filesystem::directory_iterator(parent_)) {
      Check(e.path().filename() == "root",
            absl::StrCat("something was written outside ROOT: ", e.path().string()));
    }
    CheckPublished();
  }

 private:
  void Restart() {
    store_.reset();
    PackageStoreOptions options;
    options.reserve_bytes = 0;
    options.free_bytes = [this](const std::string&) -> absl::StatusOr<uint64_t> {
      return disk_full_ ? 0 : uint64_t{1} << 40;
    };
    auto store = PackageStore::Open(root_, options);
    Check(store.ok(), store.status().ToString());
    store_ = std::move(store).value();
  }

  void Step(Reader& r) {
    uint8_t op = r.Byte() % kOpCount;
    TransferRequest req;
    switch (op) {
      case kOffer:
      case kOfferMut:
      case kOfferRaw: {
        Offered o;
        if (op == kOfferRaw) {
          (void)o.manifest.ParseFromString(r.Bytes(r.Byte()));
        } else {
          const Package& p = Packages()[r.Byte() % Packages().size()];
          o.manifest = p.manifest;
          o.content = p.content;
        }
        uint8_t window = op == kOffer ? r.Byte() : 0;
        if (op == kOfferMut) Mutate(o.manifest, r);
        o.id = PackageId(o.manifest);
        *req.mutable_offer()->mutable_manifest() = o.manifest;
        req.mutable_offer()->set_package_id(o.id);
        req.mutable_offer()->set_window_bytes(uint64_t{window} * kFuzzChunkSize);
        if (stream_.requests.empty()) offer_ = o;
        current_ = std::move(o);
        break;
      }
      case kChunk:
      case kBadChunk:
      case kFlipChunk: {
        uint32_t count = static_cast<uint32_t>(current_.manifest.chunks_size());
        uint32_t index = r.Byte() % (count + 2);
        std::string data;
        if (op == kBadChunk) {
          data = r.Bytes(r.Byte());
        } else if (index < count) {
          data = ChunkBytes(current_.manifest, current_.content, index);
          uint8_t pos = op == kFlipChunk ? r.Byte() : 0;
          if (op == kFlipChunk && !data.empty()) data[pos % data.size()] ^= 1;
        }
        req.mutable_chunk()->set_index(index);
        req.mutable_chunk()->set_data(data);
        break;
      }
      case kCommit:
        req.mutable_commit();
        break;
      case kControl:
        switch (r.Byte() % 4) {
          case kEndStream: Flush(); return;
          case kEmptyMessage: break;
          case kToggleDiskFull: Flush(); disk_full_ = !disk_full_; return;
          case kRestart: Flush(); Restart(); return;
        }
        break;
    }
    if (stream_.requests.empty() && !req.has_offer()) offer_.reset();
    stream_.requests.push_back(std::move(req));
  }

  // Runs the stream built so far, then checks what it did.
  void Flush() {
    if (stream_.requests.empty()) return;
    std::vector<TransferRequest> sent(stream_.requests.begin(), stream_.requests.end());
    absl::Status s;
    {
      TransferOptions options;
      options.lock_wait = absl::Milliseconds(10);
      stream_.on_write = [this](const TransferResponse& r) { CheckAckJournaled(r); };
      TransferSession session(*store_, options, stream_, [] {}, "fuzz");
      s = session.Run();
    }
    size_t consumed = sent.size() - stream_.requests.size();
    stream_.requests.clear();
    CheckStream(s, sent, consumed);
    stream_.responses.clear();
    CheckPublished();
  }

  // Acknowledged means durable: when an Ack is sent (flushes run on another
  // thread), the staging journal already holds every chunk it names.
  void CheckAckJournaled(const TransferResponse& r) {
    if (!r.has_ack() || !offer_.has_value()) return;
    const Manifest& m = offer_->manifest;
    std::vector<Digest> hashes(static_cast<size_t>(m.chunks_size()));
    for (int i = 0; i < m.chunks_size(); ++i) {
      const std::string& h = m.chunks(i).sha256();
      if (h.size() == 32) std::memcpy(hashes[static_cast<size_t>(i)].data(), h.data(), 32);
    }
    auto journaled = ReadJournal(absl::StrCat(root_, "/staging/", ToHex(offer_->id), "/journal"),
                                 hashes);
    Check(journaled.ok(), absl::StrCat("reading the journal: ", journaled.status().ToString()));
    for (uint32_t i : r.ack().indices()) {
      Check(std::binary_search(journaled->begin(), journaled->end(), i),
            absl::StrCat("Ack of chunk ", i, " before the journal held it"));
    }
  }

  void CheckStream(const absl::Status& s, const std::vector<TransferRequest>& sent,
                   size_t consumed) {
    using absl::StatusCode;
    StatusCode code = s.code();
    Check(code == StatusCode::kOk || code == StatusCode::kInvalidArgument ||
              code == StatusCode::kDataLoss || code == StatusCode::kCancelled ||
              code == StatusCode::kAlreadyExists || code == StatusCode::kResourceExhausted,
          absl::StrCat("unexpected status from a Transfer: ", s.ToString()));
    const auto& out = stream_.responses;
    if (!offer_.has_value()) {
      Check(!s.ok() && out.empty(), "a stream without an offer first was answered");
      return;
    }
    const Offered& o = *offer_;
    uint32_t count = static_cast<uint32_t>(o.manifest.chunks_size());
    auto& good = good_[o.id];
    for (size_t i = 0; i < consumed; ++i) {
      const auto& c = sent[i].chunk();
      if (sent[i].has_chunk() && c.index() < count &&
          DigestBytes(Sha256Of(c.data())) == o.manifest.chunks(static_cast<int>(c.index())).sha256()) {
        good.insert(c.index());
      }
    }
    for (const auto& r : out) {
      for (uint32_t i : r.need().indices()) Check(i < count, "Need names a chunk out of range");
      for (uint32_t i : r.ack().indices()) {
        Check(i < count, "Ack names a chunk out of range");
        Check(good.count(i) || Reusable(o.manifest, i),
              absl::StrCat("Ack of chunk ", i, " whose bytes were never received"));
      }
    }
    if (s.ok()) {
      Check(!out.empty() && out.back().has_published() &&
                out.back().published().package_id() == o.id,
            "Run returned OK without Published for the offered package");
      published_[o.id] = o;
    }
  }

  bool Reusable(const Manifest& m, uint32_t index) const {
    const std::string& hash = m.chunks(static_cast<int>(index)).sha256();
    for (const auto& [id, p] : published_) {
      if (p.manifest.name() != m.name()) continue;
      for (const auto& c : p.manifest.chunks()) {
        if (c.sha256() == hash) return true;
      }
    }
    return false;
  }

  void CheckPublished() {
    for (const auto& [id, p] : published_) {
      const Manifest& m = p.manifest;
      auto current = store_->PublishedId(m.name(), m.version());
      Check(current.ok() && current->has_value() && **current == id,
            absl::StrCat(m.name(), "@", m.version(), " is no longer published as reported"));
      std::string dir = store_->PackageDir(m.name(), m.version());
      absl::Status v = VerifyTree(dir, m);
      Check(v.ok(), absl::StrCat("published tree does not verify: ", v.ToString()));
      CheckLinksStayInside(dir, m);
    }
    // Nothing published that no stream reported as published.
    std::error_code ec;
    for (const auto& e : std::filesystem::directory_iterator(root_ + "/index", ec)) {
      std::string nv = e.path().filename().string();
      bool known = false;
      for (const auto& [id, p] : published_) {
        known |= nv == absl::StrCat(p.manifest.name(), "@", p.manifest.version());
      }
      Check(known, absl::StrCat(nv, " is published but no Transfer returned Published"));
    }
  }

  static void CheckLinksStayInside(const std::string& dir, const Manifest& m) {
    char real_dir[PATH_MAX];
    Check(::realpath(dir.c_str(), real_dir) != nullptr, "package dir has no real path");
    for (const auto& f : m.files()) {
      if (f.type() != pkgdist::v1::ENTRY_TYPE_SYMLINK) continue;
      char real[PATH_MAX];
      if (::realpath((dir + "/" + f.path()).c_str(), real) == nullptr) continue;  // dangling
      std::string r(real), base(real_dir);
      Check(r == base || r.rfind(base + "/", 0) == 0,
            absl::StrCat("published symlink \"", f.path(), "\" -> \"", f.link_target(),
                         "\" resolves outside its package, to ", r));
    }
  }

  std::string parent_, root_;
  std::unique_ptr<PackageStore> store_;
  bool disk_full_ = false;
  FakeStream stream_;
  std::optional<Offered> offer_;  // the first message of the stream, if an offer
  Offered current_;               // the latest offer, for chunk operands
  std::map<std::string, std::set<uint32_t>> good_;  // id -> chunks sent intact
  std::map<std::string, Offered> published_;        // id -> package
};

}  // namespace
}  // namespace pkgdist::fuzz

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  pkgdist::fuzz::QuietLogs();
  (void)pkgdist::fuzz::Packages();
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  auto dir = pkgdist::TempDir::Create("pkgdist-fuzz-transfer");
  pkgdist::fuzz::Check(dir.ok(), dir.status().ToString());
  pkgdist::fuzz::Harness h(dir->path());
  h.Run(absl::string_view(reinterpret_cast<const char*>(data), size));
  return 0;
}
