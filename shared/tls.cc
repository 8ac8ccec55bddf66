#include "shared/tls.h"

#include <openssl/pem.h>
#include <openssl/x509v3.h>
#include <sys/stat.h>

#include <cstdio>

#include <grpc/grpc_security_constants.h>
#include <grpcpp/security/tls_certificate_verifier.h>
#include <grpcpp/security/tls_credentials_options.h>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "shared/paths.h"
#include "shared/logging.h"

namespace pkgdist {
namespace {

using grpc::experimental::CertificateProviderInterface;

// Accepts the server only if its single SPIFFE URI SAN is `expected_`.
class IdentityVerifier : public grpc::experimental::ExternalCertificateVerifier {
 public:
  IdentityVerifier(SpiffeId expected, IdentityRejectFn on_reject)
      : expected_(std::move(expected)), on_reject_(std::move(on_reject)) {}

  bool Verify(grpc::experimental::TlsCustomVerificationCheckRequest* request,
              std::function<void(grpc::Status)> /*callback*/,
              grpc::Status* sync_status) override {
    std::string reason = Check(request->uri_names());
    if (reason.empty()) {
      *sync_status = grpc::Status::OK;
    } else {
      if (on_reject_) on_reject_(reason);
      *sync_status = grpc::Status(grpc::StatusCode::UNAUTHENTICATED, reason);
    }
    return true;  // Synchronous.
  }

  void Cancel(grpc::experimental::TlsCustomVerificationCheckRequest*) override {}

 private:
  std::string Check(const std::vector<grpc::string_ref>& uris) const {
    std::string expected_label =
        expected_.kind == "agent" ? expected_.name : expected_.ToString();
    if (uris.size() != 1) {
      return absl::StrCat("identity mismatch: expected ", expected_label,
                          ", certificate has ", uris.size(), " URI SANs (need exactly one)");
    }
    std::string uri(uris[0].data(), uris[0].size());
    auto id = ParseSpiffeId(uri);
    if (!id.ok()) {
      return absl::StrCat("identity mismatch: expected ", expected_label, ", certificate names ",
                          uri);
    }
    if (id->trust_domain != expected_.trust_domain || id->kind != expected_.kind ||
        id->name != expected_.name) {
      std::string got = (id->kind == "agent" && expected_.kind == "agent" &&
                         id->trust_domain == expected_.trust_domain)
                            ? id->name
                            : id->ToString();
      return absl::StrCat("identity mismatch: expected ", expected_label,
                          ", certificate names ", got);
    }
    return "";
  }

  SpiffeId expected_;
  IdentityRejectFn on_reject_;
};

}  // namespace

std::string SpiffeId::ToString() const {
  std::string s = absl::StrCat("spiffe://", trust_domain, "/", kind);
  if (!name.empty()) absl::StrAppend(&s, "/", name);
  return s;
}

absl::StatusOr<SpiffeId> ParseSpiffeId(absl::string_view uri) {
  constexpr absl::string_view kScheme = "spiffe://";
  auto bad = [&](absl::string_view why) {
    return absl::InvalidArgumentError(absl::StrCat("identity \"", uri, "\": ", why));
  };
  if (!absl::StartsWith(uri, kScheme)) return bad("not a spiffe:// URI");
  std::vector<absl::string_view> parts = absl::StrSplit(uri.substr(kScheme.size()), '/');
  if (parts.size() < 2 || parts[0].empty()) return bad("missing trust domain or path");
  SpiffeId id{std::string(parts[0]), std::string(parts[1]), ""};
  if (id.kind == "controller") {
    if (parts.size() != 2) return bad("controller identity takes no name");
    return id;
  }
  if (id.kind != "agent" && id.kind != "admin") return bad("kind must be controller, agent or admin");
  if (parts.size() != 3) return bad("expected spiffe://TRUST_DOMAIN/KIND/NAME");
  if (auto s = ValidateName(parts[2], "identity name"); !s.ok()) return bad(s.message());
  id.name = std::string(parts[2]);
  return id;
}

absl::StatusOr<SpiffeId> ReadCertificateIdentity(const std::string& cert_path) {
  FILE* f = std::fopen(cert_path.c_str(), "r");
  if (f == nullptr) return absl::NotFoundError(absl::StrCat("cannot open certificate ", cert_path));
  X509* cert = PEM_read_X509(f, nullptr, nullptr, nullptr);
  std::fclose(f);
  if (cert == nullptr) return absl::InvalidArgumentError(absl::StrCat(cert_path, ": not a PEM certificate"));
  auto* names = static_cast<GENERAL_NAMES*>(X509_get_ext_d2i(cert, NID_subject_alt_name, nullptr, nullptr));
  X509_free(cert);
  std::vector<std::string> uris;
  if (names != nullptr) {
    for (int i = 0; i < sk_GENERAL_NAME_num(names); ++i) {
      const GENERAL_NAME* n = sk_GENERAL_NAME_value(names, i);
      if (n->type != GEN_URI) continue;
      const ASN1_IA5STRING* s = n->d.uniformResourceIdentifier;
      uris.emplace_back(reinterpret_cast<const char*>(ASN1_STRING_get0_data(s)),
                        static_cast<size_t>(ASN1_STRING_length(s)));
    }
    GENERAL_NAMES_free(names);
  }
  if (uris.size() != 1) {
    return absl::InvalidArgumentError(
        absl::StrCat(cert_path, ": needs exactly one URI SAN (spiffe://...), has ", uris.size()));
  }
  return ParseSpiffeId(uris[0]);
}

absl::StatusOr<SpiffeId> CheckTlsFiles(const TlsFiles& files) {
  for (const auto& [flag, path] : {std::pair<const char*, const std::string&>{"--ca", files.ca},
                                   {"--cert", files.cert},
                                   {"--key", files.key}}) {
    if (path.empty()) return absl::InvalidArgumentError(absl::StrCat(flag, " is required"));
    struct stat st;
    if (::stat(path.c_str(), &st) != 0) {
      return absl::NotFoundError(absl::StrCat(flag, " ", path, ": no such file"));
    }
  }
  struct stat st;
  ::stat(files.key.c_str(), &st);
  if ((st.st_mode & 077) != 0) {
    return absl::PermissionDeniedError(absl::StrCat(
        "--key ", files.key, " is readable by group or others (mode ",
        absl::StrFormat("%03o", st.st_mode & 0777), "); chmod 600 it"));
  }
  return ReadCertificateIdentity(files.cert);
}

std::shared_ptr<CertificateProviderInterface> MakeCertificateProvider(const TlsFiles& files) {
  return std::make_shared<grpc::experimental::FileWatcherCertificateProvider>(
      files.key, files.cert, files.ca, files.refresh_seconds);
}

std::shared_ptr<grpc::ServerCredentials> MakeServerCredentials(
    std::shared_ptr<CertificateProviderInterface> provider, const TlsFiles& files) {
  grpc::experimental::TlsServerCredentialsOptions opts(std::move(provider));
  opts.watch_root_certs();
  opts.watch_identity_key_cert_pairs();
  opts.set_cert_request_type(GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY);
  if (!files.crl_dir.empty()) opts.set_crl_directory(files.crl_dir);
  return grpc::experimental::TlsServerCredentials(opts);
}

std::shared_ptr<grpc::ChannelCredentials> MakeChannelCredentials(
    std::shared_ptr<CertificateProviderInterface> provider, const TlsFiles& files,
    SpiffeId expected, IdentityRejectFn on_reject) {
  grpc::experimental::TlsChannelCredentialsOptions opts;
  opts.set_certificate_provider(std::move(provider));
  opts.watch_root_certs();
  opts.watch_identity_key_cert_pairs();
  opts.set_verify_server_certs(true);
  opts.set_check_call_host(false);
  opts.set_certificate_verifier(
      grpc::experimental::ExternalCertificateVerifier::Create<IdentityVerifier>(
          std::move(expected), std::move(on_reject)));
  if (!files.crl_dir.empty()) opts.set_crl_directory(files.crl_dir);
  return grpc::experimental::TlsCredentials(opts);
}

absl::StatusOr<SpiffeId> PeerIdentity(const grpc::ServerContextBase& ctx) {
  auto auth = ctx.auth_context();
  if (auth == nullptr) return absl::PermissionDeniedError("no authenticated peer");
  auto values = auth->FindPropertyValues(GRPC_PEER_SPIFFE_ID_PROPERTY_NAME);
  if (values.size() != 1) {
    return absl::PermissionDeniedError(
        "peer certificate carries no single SPIFFE identity (URI SAN spiffe://...)");
  }
  return ParseSpiffeId(absl::string_view(values[0].data(), values[0].size()));
}

grpc::Status AuthorizePeer(const grpc::ServerContextBase& ctx, absl::string_view trust_domain,
                           absl::string_view kind, absl::string_view name) {
  auto id = PeerIdentity(ctx);
  if (!id.ok()) {
    spdlog::warn("refused call from {}: {}", ctx.peer(), id.status().message());
    return grpc::Status(grpc::StatusCode::PERMISSION_DENIED, std::string(id.status().message()));
  }
  if (id->trust_domain != trust_domain || id->kind != kind || (!name.empty() && id->name != name)) {
    std::string msg = absl::StrCat("identity ", id->ToString(), " may not call this service");
    spdlog::warn("refused call from {}: {}", ctx.peer(), msg);
    return grpc::Status(grpc::StatusCode::PERMISSION_DENIED, msg);
  }
  return grpc::Status::OK;
}

}  // namespace pkgdist
