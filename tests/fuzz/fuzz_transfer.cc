// libFuzzer target: the agent's handling of a sequence of Transfer messages.
//
// The input is decoded (transfer_program.h) into one or more Transfer
// streams: offers of small valid packages, mutated or raw manifests,
// manifests in ManifestParts (counted right or wrong, parts sliced from a
// manifest or raw, where they belong or not), chunks
// right, wrong or out of range, commits, empty messages, a full disk,
// agent restarts, signature policies, signatures right, wrong and raw, and a
// clock that moves. Each stream runs through a TransferSession over a fresh
// temporary ROOT. Invariants: no crash; errors are the documented codes;
// OK means Published for the offered id (never for an offer whose parts
// were miscounted); Need and Ack name chunks in range, the first Need's
// messages hold at most need_indices_per_message indices each, with more
// on all but the last, and no later Need has more;
// and Ack only chunks the agent really holds, already in its journal when
// the Ack is sent; a package is published only
// after its stream ended OK, and then its tree matches its manifest, its
// symlinks resolve inside it and it stays intact; nothing is written
// outside ROOT, and a stream removes no other package's staging.
// Under a signature policy (agent/signature_policy.h; the input switches
// them between streams) its decisions are checked against a model, Judge:
// a package is newly published only with a signature that verifies under
// the trusted key, names it, is unexpired at the offer and at the commit,
// and has a sequence no lower than the highest this run published for the
// name (nor equal, for other content). A valid offer the model refuses ends
// FAILED_PRECONDITION before any response, and every FAILED_PRECONDITION
// has the model's reason; after one, no ROOT/staging/<id-hex> remains and
// nothing was newly published. ROOT/signed-sequences changes only to the
// terms of a package accepted at its commit, upwards, and never falls below
// what was published.
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
#include <optional>
#include <set>
#include <string>
#include <vector>

#include <openssl/evp.h>
#include <openssl/pem.h>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/string_view.h"
#include "agent/journal.h"
#include "agent/package_store.h"
#include "agent/signature_policy.h"
#include "agent/transfer_session.h"
#include "shared/file_util.h"
#include "shared/manifest.h"
#include "shared/manifest_delta.h"
#include "shared/sha256.h"
#include "shared/signing.h"
#include "tests/fuzz/fuzz_util.h"
#include "tests/fuzz/transfer_program.h"

namespace pkgdist::fuzz {
namespace {

using pkgdist::v1::Manifest;
using pkgdist::v1::PackageSignature;
using pkgdist::v1::SignatureBody;
using pkgdist::v1::TransferRequest;
using pkgdist::v1::TransferResponse;

class FakeStream : public TransferStream {
 public:
  bool Read(ReceivedRequest* request) override {
    if (requests.empty()) return false;
    if (on_read) on_read(reads);
    ++reads;
    SetReceived(std::move(requests.front()), request);
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
  std::function<void(size_t)> on_read;  // with the index of the message read
  size_t reads = 0;
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
  PackageSignature signature;
  // False when the offer's parts do not assemble to `manifest` (miscounted).
  bool intact = true;
};

// The Offer of `m` in parts as kOfferParts describes (transfer_program.h):
// the Offer first, then its ManifestParts.
std::vector<TransferRequest> OfferInParts(const Manifest& m, uint8_t split, uint8_t miscount) {
  const int per_file = split % 4 + 1, per_chunk = split / 4 % 4 + 1;
  std::vector<TransferRequest> out(1);
  Manifest* head = out[0].mutable_offer()->mutable_manifest();
  head->set_name(m.name());
  head->set_version(m.version());
  head->set_total_size(m.total_size());
  int f = 0;
  for (; f < std::min(per_file, m.files_size()); ++f) *head->add_files() = m.files(f);
  while (f < m.files_size()) {
    auto* part = out.emplace_back().mutable_manifest_part();
    for (int n = 0; n < per_file && f < m.files_size(); ++n) *part->add_files() = m.files(f++);
  }
  for (int c = 0; c < m.chunks_size();) {
    auto* part = out.emplace_back().mutable_manifest_part();
    for (int n = 0; n < per_chunk && c < m.chunks_size(); ++n) *part->add_chunks() = m.chunks(c++);
  }
  uint32_t parts = static_cast<uint32_t>(out.size() - 1);
  switch (miscount % kPartCountCount) {
    case kPartsOneFewer: parts = parts > 0 ? parts - 1 : 0; break;
    case kPartsOneMore: ++parts; break;
    case kPartsNone: parts = 0; break;
  }
  out[0].mutable_offer()->set_manifest_parts(parts);
  return out;
}

// Entries [from, from + count) of `m`'s files then chunks, as one sequence
// (from modulo its length), as a ManifestPart.
pkgdist::v1::ManifestPart SliceOf(const Manifest& m, uint8_t from, uint8_t count) {
  pkgdist::v1::ManifestPart part;
  const int n = m.files_size() + m.chunks_size();
  if (n == 0) return part;
  for (int i = from % n, end = std::min(n, from % n + count % 8); i < end; ++i) {
    if (i < m.files_size()) {
      *part.add_files() = m.files(i);
    } else {
      *part.add_chunks() = m.chunks(i - m.files_size());
    }
  }
  return part;
}

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

// The keys of the signature policies, made once per process: the trusted
// key's PEM public key in a directory of its own, next to a .pub file that
// is no key and the other key's under a name the policy must ignore.
struct SigningKeys {
  SigningKey trusted;
  SigningKey untrusted;
  TempDir dir;
};

std::string PublicKeyPem(absl::string_view raw) {
  EVP_PKEY* key = EVP_PKEY_new_raw_public_key(
      EVP_PKEY_ED25519, nullptr, reinterpret_cast<const unsigned char*>(raw.data()), raw.size());
  BIO* bio = BIO_new(BIO_s_mem());
  Check(key != nullptr && bio != nullptr && PEM_write_bio_PUBKEY(bio, key) == 1,
        "writing a PEM public key");
  char* data = nullptr;
  long n = BIO_get_mem_data(bio, &data);
  std::string pem(data, static_cast<size_t>(n));
  BIO_free(bio);
  EVP_PKEY_free(key);
  return pem;
}

SigningKey KeyFromSeed(absl::string_view seed) {
  auto key = SigningKey::FromSeed(seed.substr(0, kEd25519KeyBytes));
  Check(key.ok(), key.status().ToString());
  return *std::move(key);
}

const SigningKeys& Keys() {
  static const SigningKeys keys = [] {
    auto dir = TempDir::Create("pkgdist-fuzz-keys");
    Check(dir.ok(), dir.status().ToString());
    SigningKeys k{KeyFromSeed(kTrustedSeed), KeyFromSeed(kUntrustedSeed), *std::move(dir)};
    auto write = [&k](const std::string& name, const std::string& data) {
      Check(WriteFileAtomic(k.dir.path() + "/" + name, data).ok(), "writing key file " + name);
    };
    std::string pem = PublicKeyPem(k.trusted.public_key().raw);
    auto parsed = ParsePublicKeyPem(pem, "fuzz");
    Check(parsed.ok() && parsed->id == k.trusted.public_key().id, "the trusted key's PEM");
    write("release.pub", pem);
    write("broken.pub", "not a key\n");
    write("other.pub.revoked", PublicKeyPem(k.untrusted.public_key().raw));
    return k;
  }();
  return keys;
}

// The signature a kSign operation asks for (transfer_program.h) for the
// offer `o`; none while nothing was offered.
PackageSignature MakeSignature(Reader& r, const Offered& o) {
  const SigningKeys& keys = Keys();
  auto terms = [&r] {
    SignTerms t;
    t.sequence = r.Byte();
    t.expires = absl::FromUnixSeconds(kFuzzNow + 4 * (int64_t{r.Byte()} - kExpiresNow));
    t.now = absl::FromUnixSeconds(kFuzzNow);
    return t;
  };
  auto sign = [](const SigningKey& key, const std::string& id, const std::string& name,
                 const std::string& version, const SignTerms& t) {
    if (id.size() != 32) return PackageSignature();
    auto sig = SignPackage(key, id, name, version, t);
    Check(sig.ok(), sig.status().ToString());
    return *std::move(sig);
  };
  const std::string& name = o.manifest.name();
  const std::string& version = o.manifest.version();
  PackageSignature sig;
  switch (r.Byte() % kSignKindCount) {
    case kSignNone: break;
    case kSignTrusted: sig = sign(keys.trusted, o.id, name, version, terms()); break;
    case kSignUntrusted: sig = sign(keys.untrusted, o.id, name, version, terms()); break;
    case kSignFlipped: {
      sig = sign(keys.trusted, o.id, name, version, terms());
      uint8_t field = r.Byte(), pos = r.Byte(), bit = r.Byte();
      std::string* f = field % 3 == 0   ? sig.mutable_body()
                       : field % 3 == 1 ? sig.mutable_signature()
                                        : sig.mutable_key_id();
      if (!f->empty()) (*f)[pos % f->size()] ^= static_cast<char>(1 << (bit % 8));
      break;
    }
    case kSignRaw:
      sig.set_body(r.Bytes(r.Byte()));
      sig.set_key_id(r.Bytes(r.Byte() % 32));
      sig.set_signature(r.Bytes(r.Byte()));
      break;
    case kSignOther: {
      uint8_t which = r.Byte();
      const Package& p = Packages()[r.Byte() % Packages().size()];
      sig = sign(keys.trusted, which & 1 ? p.id : o.id, which & 2 ? p.manifest.name() : name,
                 which & 4 ? p.manifest.version() : version, terms());
      break;
    }
    case kSignForgedKeyId:
      sig = sign(keys.untrusted, o.id, name, version, terms());
      sig.set_key_id(keys.trusted.public_key().id);
      break;
    case kSignBody: {
      sig.set_body(r.Bytes(r.Byte()));
      sig.set_key_id(keys.trusted.public_key().id);
      auto s = keys.trusted.Sign(SignedMessage(sig.body()));
      Check(s.ok(), s.status().ToString());
      sig.set_signature(*s);
      break;
    }
  }
  return sig;
}

// A line of ROOT/signed-sequences: the highest sequence recorded for a
// name, with the package that has it.
struct SeqRecord {
  uint64_t sequence = 0;
  std::string id_hex;
  std::string version;
  bool operator==(const SeqRecord&) const = default;
};
using SeqRecords = std::map<std::string, SeqRecord>;  // by package name

SeqRecords ReadRecords(const std::string& path) {
  SeqRecords out;
  auto text = ReadFileToString(path);
  if (absl::IsNotFound(text.status())) return out;
  Check(text.ok(), text.status().ToString());
  for (absl::string_view line : absl::StrSplit(*text, '\n', absl::SkipEmpty())) {
    if (absl::StartsWith(line, "#")) continue;
    std::vector<std::string> f = absl::StrSplit(line, ' ');
    SeqRecord rec;
    Check(f.size() == 4 && absl::SimpleAtoi(f[1], &rec.sequence),
          absl::StrCat("damaged line in ", path, ": ", line));
    rec.id_hex = f[2];
    rec.version = f[3];
    Check(out.emplace(f[0], rec).second, absl::StrCat(f[0], " is recorded twice in ", path));
  }
  return out;
}

// What the policy must decide for the offer `o`, modelled without it: with
// `terms`, the expiry at `now` and the sequence against `highest` too.
struct Verdict {
  bool accepted = false;
  std::optional<SignatureBody> body;  // once the signature verifies
};

Verdict Judge(const Offered& o, bool required, bool terms, int64_t now,
              const SeqRecords& highest) {
  const PackageSignature& sig = o.signature;
  if (sig.body().empty() && sig.key_id().empty() && sig.signature().empty()) {
    return {!required, std::nullopt};
  }
  const PublicKey& key = Keys().trusted.public_key();
  std::string message = std::string("pkgdist package signature v1") + '\0' + sig.body();
  SignatureBody body;
  if (sig.key_id() != key.id || !Ed25519Verify(key.raw, message, sig.signature()) ||
      !body.ParseFromString(sig.body()) || body.package_id() != o.id ||
      body.name() != o.manifest.name() || body.version() != o.manifest.version()) {
    return {};
  }
  if (terms) {
    if (now >= body.expires_unix_seconds()) return {};
    auto it = highest.find(body.name());
    if (it != highest.end() &&
        (body.sequence() < it->second.sequence ||
         (body.sequence() == it->second.sequence && it->second.id_hex != ToHex(o.id)))) {
      return {};
    }
  }
  return {true, std::move(body)};
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
  enum class Policy { kOff, kRequired, kOptional };

  void Restart() {
    policy_.reset();
    store_.reset();
    PackageStoreOptions options;
    options.reserve_bytes = 0;
    options.free_bytes = [this](const std::string&) -> absl::StatusOr<uint64_t> {
      return disk_full_ ? 0 : uint64_t{1} << 40;
    };
    auto store = PackageStore::Open(root_, options);
    Check(store.ok(), store.status().ToString());
    store_ = std::move(store).value();
    OpenPolicy();
  }

  // A policy reopened reads its sequences back from ROOT/signed-sequences.
  void OpenPolicy() {
    policy_.reset();
    if (mode_ == Policy::kOff) return;
    SignaturePolicyOptions options;
    options.trusted_keys_dir = Keys().dir.path();
    options.require_signatures = mode_ == Policy::kRequired;
    options.now = [this] { return absl::FromUnixSeconds(now_); };
    auto policy = SignaturePolicy::Open(root_, std::move(options));
    Check(policy.ok(), policy.status().ToString());
    policy_ = std::move(policy).value();
  }

  void SetPolicy(Policy mode) {
    Flush();
    mode_ = mode;
    OpenPolicy();
  }

  // Signs the latest offer of the stream being built, if there is one.
  void Sign(Reader& r) {
    PackageSignature sig = MakeSignature(r, current_);
    for (size_t i = stream_.requests.size(); i-- > 0;) {
      if (!stream_.requests[i].has_offer()) continue;
      *stream_.requests[i].mutable_offer()->mutable_signature() = sig;
      current_.signature = sig;
      if (i == 0 && offer_.has_value()) offer_->signature = sig;
      return;
    }
  }

  void Step(Reader& r) {
    uint8_t op = r.Byte() % kOpCount;
    TransferRequest req;
    std::vector<TransferRequest> parts;  // after req, for kOfferParts and kOfferDelta
    switch (op) {
      case kOfferParts: {
        const Package& p = Packages()[r.Byte() % Packages().size()];
        uint8_t split = r.Byte(), miscount = r.Byte();
        Offered o;
        o.manifest = p.manifest;
        o.content = p.content;
        o.id = p.id;
        parts = OfferInParts(o.manifest, split, miscount);
        // (A miscount of a manifest that fits in the Offer may be no miscount.)
        o.intact = parts.front().offer().manifest_parts() == parts.size() - 1;
        req = std::move(parts.front());
        parts.erase(parts.begin());
        req.mutable_offer()->set_package_id(o.id);
        if (stream_.requests.empty()) offer_ = o;
        current_ = std::move(o);
        break;
      }
      case kOfferDelta: {
        const Package& p = Packages()[r.Byte() % Packages().size()];
        const Package& base = Packages()[r.Byte() % Packages().size()];
        const size_t part_bytes = size_t{16} << (r.Byte() % 8);
        Offered o;
        o.manifest = p.manifest;
        o.content = p.content;
        o.id = p.id;
        auto* offer = req.mutable_offer();
        offer->mutable_manifest()->set_name(p.manifest.name());
        offer->mutable_manifest()->set_version(p.manifest.version());
        offer->mutable_manifest()->set_total_size(p.manifest.total_size());
        offer->set_package_id(o.id);
        offer->add_delta_bases(base.id);
        // The agent applies the parts to the base if it holds it (the store
        // stays as it is until this stream runs), else to nothing.
        const bool held = store_->PublishedManifest(base.id).has_value();
        Manifest rebuilt = *offer->mutable_manifest();
        bool applies = true;
        for (auto& part : DiffManifest(base.manifest, p.manifest, part_bytes)) {
          applies = applies && ApplyManifestPart(held ? base.manifest : Manifest(), part,
                                                 uint64_t{1} << 40, uint64_t{1} << 40, &rebuilt)
                                   .ok();
          *parts.emplace_back().mutable_manifest_part() = std::move(part);
        }
        o.intact = applies && PackageId(rebuilt) == o.id;
        if (stream_.requests.empty()) offer_ = o;
        current_ = std::move(o);
        break;
      }
      case kPartSlice: {
        uint8_t from = r.Byte(), count = r.Byte();
        *req.mutable_manifest_part() = SliceOf(current_.manifest, from, count);
        break;
      }
      case kPartRaw:
        (void)req.mutable_manifest_part()->ParseFromString(r.Bytes(r.Byte()));
        break;
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
      case kChunkRun: {
        uint32_t count = static_cast<uint32_t>(current_.manifest.chunks_size());
        uint32_t index = r.Byte() % (count + 2);
        uint32_t run = r.Byte() % 4 + 2;
        uint8_t how = r.Byte() % 3;
        std::string data;
        for (uint32_t i = index; i < index + run && i < count; ++i) {
          data += ChunkBytes(current_.manifest, current_.content, i);
        }
        if (how == 1) data.push_back('+');
        if (how == 2 && !data.empty()) data.back() ^= 1;
        req.mutable_chunk()->set_index(index);
        req.mutable_chunk()->set_count(run);
        req.mutable_chunk()->set_data(data);
        break;
      }
      case kCommit:
        req.mutable_commit();
        break;
      case kControl:
        switch (r.Byte() % kControlCount) {
          case kEndStream: Flush(); return;
          case kEmptyMessage: break;
          case kToggleDiskFull: Flush(); disk_full_ = !disk_full_; return;
          case kRestart: Flush(); Restart(); return;
          case kPolicyOff: SetPolicy(Policy::kOff); return;
          case kPolicyRequired: SetPolicy(Policy::kRequired); return;
          case kPolicyOptional: SetPolicy(Policy::kOptional); return;
          case kAdvanceClock: pending_advance_ += kClockStepSeconds; return;
          case kToggleSplitNeed: Flush(); split_need_ = !split_need_; return;
        }
        break;
      case kSign:
        Sign(r);
        return;
    }
    if (stream_.requests.empty() && !req.has_offer()) offer_.reset();
    stream_.requests.push_back(std::move(req));
    advance_.push_back(pending_advance_);
    pending_advance_ = 0;
    for (auto& part : parts) {
      stream_.requests.push_back(std::move(part));
      advance_.push_back(0);
    }
  }

  size_t NeedIndicesPerMessage() const {
    return split_need_ ? kFuzzNeedIndicesPerMessage : kNeedIndicesPerMessage;
  }

  // Runs the stream built so far, then checks what it did.
  void Flush() {
    if (stream_.requests.empty()) return;
    std::vector<TransferRequest> sent(stream_.requests.begin(), stream_.requests.end());
    std::vector<int64_t> clock;  // when each message is read
    for (int64_t t = now_; int64_t a : advance_) clock.push_back(t += a);
    advance_.clear();
    const SeqRecords before = ReadRecords(records_path_);
    const std::set<std::string> staged = Staged();
    const std::optional<std::string> prior =
        offer_.has_value() ? PublishedAs(offer_->manifest) : std::nullopt;
    absl::Status s;
    {
      TransferOptions options;
      options.lock_wait = absl::Milliseconds(10);
      options.signatures = policy_.get();
      options.need_indices_per_message = NeedIndicesPerMessage();
      stream_.on_write = [this](const TransferResponse& r) { CheckAckJournaled(r); };
      stream_.on_read = [this, &clock](size_t i) { now_ = clock[i]; };
      TransferSession session(*store_, options, stream_, [] {}, "fuzz");
      s = session.Run();
    }
    stream_.on_read = nullptr;
    stream_.reads = 0;
    now_ = clock.back();
    size_t consumed = sent.size() - stream_.requests.size();
    stream_.requests.clear();
    CheckSignatures(s, sent, consumed, clock, before, prior);
    CheckOtherStagingKept(staged);
    CheckStream(s, sent, consumed);
    // A refusal deleted the staging: what it held may not be acknowledged again.
    if (absl::IsFailedPrecondition(s)) good_.erase(offer_->id);
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
              code == StatusCode::kAlreadyExists || code == StatusCode::kResourceExhausted ||
              (code == StatusCode::kFailedPrecondition && policy_ != nullptr),
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
      if (!sent[i].has_chunk()) continue;
      // A message carries one chunk or a run of them: each chunk of it whose
      // bytes (at its place in the run) hash right was received.
      const auto& c = sent[i].chunk();
      const uint32_t run = std::max<uint32_t>(c.count(), 1);
      uint64_t at = 0;
      for (uint32_t k = 0; k < run && c.index() + k < count; ++k) {
        const auto& ref = o.manifest.chunks(static_cast<int>(c.index() + k));
        if (at + ref.length() > c.data().size()) break;
        if (DigestBytes(Sha256Of(absl::string_view(c.data()).substr(at, ref.length()))) ==
            ref.sha256()) {
          good.insert(c.index() + k);
          received_hashes_.insert(ref.sha256());
        }
        at += ref.length();
      }
    }
    bool first_need = true;  // until its message without more
    for (const auto& r : out) {
      if (r.has_need()) {
        Check(first_need || !r.need().more(), "more on a Need after the first");
        if (first_need) {
          Check(static_cast<size_t>(r.need().indices_size() + r.need().local_size()) <=
                    NeedIndicesPerMessage(),
                "a message of the first Need holds more indices than need_indices_per_message");
        }
        first_need = first_need && r.need().more();
      }
      for (uint32_t i : r.need().local()) Check(i < count, "Need lists a local chunk out of range");
      for (uint32_t i : r.need().indices()) Check(i < count, "Need names a chunk out of range");
      for (uint32_t i : r.ack().indices()) {
        Check(i < count, "Ack names a chunk out of range");
        Check(good.count(i) || Reusable(o.manifest, i),
              absl::StrCat("Ack of chunk ", i, " whose bytes were never received"));
      }
    }
    if (s.ok()) {
      Check(o.intact, "an offer whose manifest parts were miscounted ended OK");
      Check(!out.empty() && out.back().has_published() &&
                out.back().published().package_id() == o.id,
            "Run returned OK without Published for the offered package");
      published_[o.id] = o;
    }
  }

  // The entries of ROOT/staging (id hex).
  std::set<std::string> Staged() const {
    std::set<std::string> out;
    std::error_code ec;
    for (const auto& e : std::filesystem::directory_iterator(root_ + "/staging", ec)) {
      out.insert(e.path().filename().string());
    }
    return out;
  }

  // A stream touches no staging but its own package's.
  void CheckOtherStagingKept(const std::set<std::string>& before) {
    Check(std::filesystem::is_directory(root_ + "/staging"), "ROOT/staging vanished");
    const std::string own = offer_.has_value() ? ToHex(offer_->id) : "";
    std::set<std::string> after = Staged();
    for (const std::string& hex : before) {
      Check(hex == own || after.count(hex) > 0,
            absl::StrCat("the staging of ", hex, " vanished in a stream of another package"));
    }
  }

  // The id name@version of `m` was reported published with, if any.
  std::optional<std::string> PublishedAs(const Manifest& m) const {
    for (const auto& [id, p] : published_) {
      if (p.manifest.name() == m.name() && p.manifest.version() == m.version()) return id;
    }
    return std::nullopt;
  }

  // The policy's decisions for the stream against Judge, what a refusal
  // leaves behind, and how ROOT/signed-sequences changed (`before` the
  // stream; `prior` the id the offer's name@version was published with).
  void CheckSignatures(const absl::Status& s, const std::vector<TransferRequest>& sent,
                       size_t consumed, const std::vector<int64_t>& clock,
                       const SeqRecords& before, const std::optional<std::string>& prior) {
    const SeqRecords after = ReadRecords(records_path_);
    if (!offer_.has_value() || policy_ == nullptr) {
      Check(after == before, "signed-sequences changed by a stream no policy checked");
      return;
    }
    const Offered& o = *offer_;
    const bool required = mode_ == Policy::kRequired;
    const bool again = prior == o.id;  // checked as published: no terms
    std::optional<size_t> commit;
    for (size_t i = 0; i < consumed && !commit.has_value(); ++i) {
      if (sent[i].has_commit()) commit = i;
    }
    const int64_t commit_time = clock[commit.value_or(0)];
    const Verdict at_offer = Judge(o, required, !again, clock[0], before);
    const Verdict at_commit = Judge(o, required, true, commit_time, before);
    const std::string label = absl::StrCat(o.manifest.name(), "@", o.manifest.version());
    const bool refused = absl::IsFailedPrecondition(s);
    if (!at_offer.accepted && (!prior.has_value() || again) && o.intact &&
        ValidateManifest(o.manifest, TransferOptions().limits).ok()) {
      // Nothing answered but a ManifestRequest (an offer of delta bases
      // has no manifest to judge before its parts).
      const bool answered = std::any_of(
          stream_.responses.begin(), stream_.responses.end(),
          [](const TransferResponse& r) { return !r.has_manifest_request(); });
      Check(refused && !answered,
            absl::StrCat("an offer of ", label, " the policy must refuse ended ", s.ToString(),
                         " after ", stream_.responses.size(), " responses"));
    }
    if (refused) {
      Check(!at_offer.accepted || (commit.has_value() && !at_commit.accepted),
            absl::StrCat(label, " refused though its signature passes: ", s.ToString()));
      Check(!std::filesystem::exists(absl::StrCat(root_, "/staging/", ToHex(o.id))),
            absl::StrCat("staging of ", label, " left after ", s.ToString()));
      auto id = store_->PublishedId(o.manifest.name(), o.manifest.version());
      Check(id.ok() && *id == prior, absl::StrCat(label, " published though refused"));
    }
    if (s.ok() && !again) {
      // Judged against this run's own publications, not the agent's record.
      Verdict v = Judge(o, required, true, clock[0], published_seq_);
      Verdict vc = Judge(o, required, true, commit_time, published_seq_);
      Check(v.accepted && vc.accepted,
            absl::StrCat(label, " published with a signature the policy must refuse"));
      if (v.body.has_value()) {
        auto [it, fresh] = published_seq_.try_emplace(o.manifest.name());
        if (fresh || v.body->sequence() > it->second.sequence) {
          it->second = {v.body->sequence(), ToHex(o.id), o.manifest.version()};
        }
      }
    }
    CheckRecordChanges(before, after, o, commit.has_value() ? &at_commit : nullptr);
  }

  // A record changes only to the terms of the offered package, accepted at
  // its commit, with a higher sequence; none falls below what was published.
  void CheckRecordChanges(const SeqRecords& before, const SeqRecords& after, const Offered& o,
                          const Verdict* at_commit) {
    std::set<std::string> names;
    for (const auto& [name, rec] : before) names.insert(name);
    for (const auto& [name, rec] : after) names.insert(name);
    for (const std::string& name : names) {
      auto b = before.find(name), a = after.find(name);
      if (b != before.end() && a != after.end() && b->second == a->second) continue;
      const SignatureBody* body =
          at_commit != nullptr && at_commit->accepted && at_commit->body.has_value()
              ? &*at_commit->body : nullptr;
      Check(name == o.manifest.name() && a != after.end() && body != nullptr &&
                a->second == SeqRecord{body->sequence(), ToHex(o.id), o.manifest.version()} &&
                (b == before.end() || body->sequence() > b->second.sequence),
            absl::StrCat("the signed sequence of ", name, " changed without a reason"));
    }
    for (const auto& [name, p] : published_seq_) {
      auto it = after.find(name);
      Check(it != after.end() && (it->second.sequence > p.sequence || it->second == p),
            absl::StrCat("the signed sequence of ", name, " fell below sequence ", p.sequence,
                         " published for ", p.version));
    }
  }

  // A chunk the agent may fill from its chunk store (agent/chunk_index.h):
  // one with its hash is in a published package of any name, or was
  // received intact by some stream (staged, of any package).
  bool Reusable(const Manifest& m, uint32_t index) const {
    const std::string& hash = m.chunks(static_cast<int>(index)).sha256();
    if (received_hashes_.count(hash) > 0) return true;
    for (const auto& [id, p] : published_) {
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
  const std::string records_path_ = root_ + "/signed-sequences";
  Policy mode_ = Policy::kOff;
  int64_t now_ = kFuzzNow;  // the policy's clock, moved as messages are read
  int64_t pending_advance_ = 0;  // for the next message
  std::vector<int64_t> advance_;  // per message of the stream, before it is read
  SeqRecords published_seq_;      // name -> highest signed sequence published
  std::unique_ptr<PackageStore> store_;
  std::unique_ptr<SignaturePolicy> policy_;
  bool disk_full_ = false;
  bool split_need_ = false;  // the first Need in kFuzzNeedIndicesPerMessage messages
  FakeStream stream_;
  std::optional<Offered> offer_;  // the first message of the stream, if an offer
  Offered current_;               // the latest offer, for chunk operands
  std::map<std::string, std::set<uint32_t>> good_;  // id -> chunks sent intact
  std::set<std::string> received_hashes_;            // of every chunk sent intact
  std::map<std::string, Offered> published_;        // id -> package
};

}  // namespace
}  // namespace pkgdist::fuzz

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  pkgdist::fuzz::QuietLogs();
  (void)pkgdist::fuzz::Packages();
  (void)pkgdist::fuzz::Keys();
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  auto dir = pkgdist::TempDir::Create("pkgdist-fuzz-transfer");
  pkgdist::fuzz::Check(dir.ok(), dir.status().ToString());
  pkgdist::fuzz::Harness h(dir->path());
  h.Run(absl::string_view(reinterpret_cast<const char*>(data), size));
  return 0;
}
