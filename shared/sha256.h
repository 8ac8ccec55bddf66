// SHA-256 through OpenSSL's EVP interface (uses SHA-NI where the CPU has it).
#ifndef PKGDIST_SHARED_SHA256_H_
#define PKGDIST_SHARED_SHA256_H_

#include <array>
#include <cstdint>
#include <optional>
#include <string>

#include "absl/strings/string_view.h"
#include "absl/types/span.h"

typedef struct evp_md_ctx_st EVP_MD_CTX;

namespace pkgdist {

using Digest = std::array<uint8_t, 32>;

// Incremental hasher. Not thread-safe; movable, not copyable.
class Sha256 {
 public:
  Sha256();
  ~Sha256();
  Sha256(Sha256&& other) noexcept;
  Sha256& operator=(Sha256&& other) noexcept;
  Sha256(const Sha256&) = delete;
  Sha256& operator=(const Sha256&) = delete;

  void Update(const void* data, size_t len);
  void Update(absl::string_view data) { Update(data.data(), data.size()); }
  // Returns the digest and resets the hasher for reuse.
  Digest Finish();

 private:
  EVP_MD_CTX* ctx_;
};

Digest Sha256Of(absl::string_view data);
// The digest of the pieces' bytes, one after the other.
Digest Sha256Of(absl::Span<const absl::string_view> pieces);

// Raw 32-byte digest as a std::string (the form protobuf `bytes` fields hold).
std::string DigestBytes(const Digest& d);
std::string ToHex(absl::string_view bytes);
// 64 lower-case hex digits as 32 raw bytes; nullopt for anything else.
std::optional<std::string> FromHex(absl::string_view hex);
inline std::string ToHex(const Digest& d) {
  return ToHex(absl::string_view(reinterpret_cast<const char*>(d.data()), d.size()));
}

}  // namespace pkgdist

#endif  // PKGDIST_SHARED_SHA256_H_
