// Mutual TLS for every pkgdist connection, and the identities carried in it.
//
// Every certificate carries exactly one SPIFFE-style URI SAN:
//   spiffe://TRUST_DOMAIN/controller
//   spiffe://TRUST_DOMAIN/agent/NAME
//   spiffe://TRUST_DOMAIN/admin/WHO
// A process learns its trust domain from its own certificate and accepts only
// peers of the same trust domain. Certificates, key and CA are re-read from
// disk when they change (gRPC's FileWatcherCertificateProvider), so rotation
// needs no restart; an optional CRL directory revokes certificates.
#ifndef PKGDIST_SHARED_TLS_H_
#define PKGDIST_SHARED_TLS_H_

#include <functional>
#include <memory>
#include <string>
#include "absl/strings/string_view.h"

#include <grpcpp/grpcpp.h>
#include <grpcpp/security/tls_certificate_provider.h>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace pkgdist {

struct TlsFiles {
  std::string ca;
  std::string cert;
  std::string key;
  // Optional: a directory of hashed CRL files (openssl rehash).
  std::string crl_dir;
  // How often the files are checked for changes.
  unsigned refresh_seconds = 5;
};

struct SpiffeId {
  std::string trust_domain;
  std::string kind;  // "controller", "agent" or "admin"
  std::string name;  // empty for the controller
  std::string ToString() const;
};

// Parses spiffe://TD/controller, spiffe://TD/agent/NAME, spiffe://TD/admin/WHO.
absl::StatusOr<SpiffeId> ParseSpiffeId(absl::string_view uri);

// Reads the single SPIFFE URI SAN of the PEM certificate at `cert_path`.
absl::StatusOr<SpiffeId> ReadCertificateIdentity(const std::string& cert_path);

// Checks that the files exist and are readable, and that the key is not
// readable by group or others; returns the identity of the certificate.
absl::StatusOr<SpiffeId> CheckTlsFiles(const TlsFiles& files);

// One file-watching provider per process: it holds a refresh thread, so
// every credential of a process shares it.
std::shared_ptr<grpc::experimental::CertificateProviderInterface> MakeCertificateProvider(
    const TlsFiles& files);

// Server credentials that require a client certificate signed by the CA
// (and not revoked by a CRL in files.crl_dir); every refused handshake is
// logged with the certificate's identity and the reason. Which identities
// may call what is checked per call (AuthorizePeer).
std::shared_ptr<grpc::ServerCredentials> MakeServerCredentials(
    std::shared_ptr<grpc::experimental::CertificateProviderInterface> provider,
    const TlsFiles& files);

// The server's check of a client certificate: `leaf_pem` chains to the CA
// in files.ca (through intermediates in `chain_pem`), is valid now, may be
// used for client authentication and is not revoked by a CRL in
// files.crl_dir. UNAUTHENTICATED naming the certificate and the reason if not.
absl::Status VerifyClientCertificate(absl::string_view leaf_pem, absl::string_view chain_pem,
                                     const TlsFiles& files);

// Called with a human-readable reason when a server's certificate is
// refused by the identity check.
using IdentityRejectFn = std::function<void(const std::string& reason)>;

// Channel credentials that present our certificate and accept only a server
// whose identity is `expected` (same trust domain, kind and name). The
// hostname in the address is not checked: identity is the SPIFFE ID.
std::shared_ptr<grpc::ChannelCredentials> MakeChannelCredentials(
    std::shared_ptr<grpc::experimental::CertificateProviderInterface> provider,
    const TlsFiles& files, SpiffeId expected, IdentityRejectFn on_reject = nullptr);

// The verified SPIFFE ID of the peer of a server call.
absl::StatusOr<SpiffeId> PeerIdentity(const grpc::ServerContextBase& ctx);

// OK if the peer's identity has `trust_domain` and `kind` (and `name`, if
// not empty); PERMISSION_DENIED naming the peer otherwise.
grpc::Status AuthorizePeer(const grpc::ServerContextBase& ctx, absl::string_view trust_domain,
                           absl::string_view kind, absl::string_view name = "");

}  // namespace pkgdist

#endif  // PKGDIST_SHARED_TLS_H_
