#include "shared/tls.h"

#include <openssl/bn.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509_vfy.h>
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

// The TLS layer of a server is told to request a client certificate but not
// to verify it: OpenSSL would refuse a bad chain inside gRPC core, before any
// hook of ours runs, and the refusal would be logged without who or why.
// This verifier checks the chain itself (CA and CRL files re-read on every
// handshake, so rotation needs no restart) and logs every refusal. Which
// identity may call what is still decided per call (AuthorizePeer).
class ClientChainVerifier : public grpc::experimental::ExternalCertificateVerifier {
 public:
  explicit ClientChainVerifier(TlsFiles files) : files_(std::move(files)) {}

  bool Verify(grpc::experimental::TlsCustomVerificationCheckRequest* request,
              std::function<void(grpc::Status)> /*callback*/,
              grpc::Status* sync_status) override {
    absl::Status verdict = VerifyClientCertificate(
        absl::string_view(request->peer_cert().data(), request->peer_cert().size()),
        absl::string_view(request->peer_cert_full_chain().data(),
                          request->peer_cert_full_chain().size()),
        files_);
    if (verdict.ok()) {
      *sync_status = grpc::Status::OK;
    } else {
      spdlog::warn("refused TLS handshake: {}", verdict.message());
      *sync_status = grpc::Status(grpc::StatusCode::UNAUTHENTICATED, std::string(verdict.message()));
    }
    return true;  // Synchronous.
  }

  void Cancel(grpc::experimental::TlsCustomVerificationCheckRequest*) override {}

 private:
  TlsFiles files_;
};

struct X509StoreFree {
  void operator()(X509_STORE* p) const { X509_STORE_free(p); }
};
struct X509StoreCtxFree {
  void operator()(X509_STORE_CTX* p) const { X509_STORE_CTX_free(p); }
};
struct X509StackFree {
  void operator()(STACK_OF(X509) * p) const { sk_X509_pop_free(p, X509_free); }
};
struct BioFree {
  void operator()(BIO* p) const { BIO_free(p); }
};

// Every certificate in `pem`, in order.
std::unique_ptr<STACK_OF(X509), X509StackFree> ParsePemChain(absl::string_view pem) {
  std::unique_ptr<STACK_OF(X509), X509StackFree> chain(sk_X509_new_null());
  if (pem.empty()) return chain;
  std::unique_ptr<BIO, BioFree> bio(BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size())));
  while (X509* cert = PEM_read_bio_X509(bio.get(), nullptr, nullptr, nullptr)) {
    sk_X509_push(chain.get(), cert);
  }
  ERR_clear_error();  // The loop ends on "no start line".
  return chain;
}

// "spiffe://td/admin/ops (serial 1F, issuer CN=...)": who a certificate says it is.
std::string DescribeCertificate(X509* cert) {
  std::string who;
  if (auto* sans = static_cast<GENERAL_NAMES*>(
          X509_get_ext_d2i(cert, NID_subject_alt_name, nullptr, nullptr))) {
    for (int i = 0; i < sk_GENERAL_NAME_num(sans); ++i) {
      const GENERAL_NAME* name = sk_GENERAL_NAME_value(sans, i);
      if (name->type != GEN_URI) continue;
      const ASN1_STRING* uri = name->d.uniformResourceIdentifier;
      absl::StrAppend(&who, who.empty() ? "" : ",",
                      absl::string_view(reinterpret_cast<const char*>(ASN1_STRING_get0_data(uri)),
                                        ASN1_STRING_length(uri)));
    }
    GENERAL_NAMES_free(sans);
  }
  auto oneline = [](const X509_NAME* name) {
    char buf[256];
    X509_NAME_oneline(name, buf, sizeof buf);
    return std::string(buf);
  };
  if (who.empty()) who = oneline(X509_get_subject_name(cert));
  std::string serial = "?";
  if (BIGNUM* bn = ASN1_INTEGER_to_BN(X509_get0_serialNumber(cert), nullptr)) {
    if (char* hex = BN_bn2hex(bn)) {
      serial = hex;
      OPENSSL_free(hex);
    }
    BN_free(bn);
  }
  return absl::StrCat(who, " (serial ", serial, ", issuer ", oneline(X509_get_issuer_name(cert)),
                      ")");
}

// Like gRPC's own CRL handling: an issuer without a CRL in the directory is
// not an error; a certificate listed in a CRL is.
int IgnoreMissingCrl(int ok, X509_STORE_CTX* ctx) {
  if (!ok && X509_STORE_CTX_get_error(ctx) == X509_V_ERR_UNABLE_TO_GET_CRL) return 1;
  return ok;
}

}  // namespace

absl::Status VerifyClientCertificate(absl::string_view leaf_pem, absl::string_view chain_pem,
                                     const TlsFiles& files) {
  auto leaf = ParsePemChain(leaf_pem);
  if (sk_X509_num(leaf.get()) == 0) {
    return absl::UnauthenticatedError("the client presented no certificate");
  }
  X509* cert = sk_X509_value(leaf.get(), 0);
  std::unique_ptr<X509_STORE, X509StoreFree> store(X509_STORE_new());
  if (X509_STORE_load_file(store.get(), files.ca.c_str()) != 1) {
    ERR_clear_error();
    return absl::UnauthenticatedError(absl::StrCat("cannot verify ", DescribeCertificate(cert),
                                                   ": CA file ", files.ca, " cannot be loaded"));
  }
  if (!files.crl_dir.empty()) {
    if (X509_STORE_load_path(store.get(), files.crl_dir.c_str()) != 1) {
      ERR_clear_error();
      return absl::UnauthenticatedError(absl::StrCat("cannot verify ", DescribeCertificate(cert),
                                                     ": CRL directory ", files.crl_dir,
                                                     " cannot be used"));
    }
    X509_STORE_set_flags(store.get(), X509_V_FLAG_CRL_CHECK | X509_V_FLAG_CRL_CHECK_ALL);
    X509_STORE_set_verify_cb(store.get(), IgnoreMissingCrl);
  }
  auto untrusted = ParsePemChain(chain_pem);
  std::unique_ptr<X509_STORE_CTX, X509StoreCtxFree> ctx(X509_STORE_CTX_new());
  if (ctx == nullptr || X509_STORE_CTX_init(ctx.get(), store.get(), cert, untrusted.get()) != 1 ||
      X509_STORE_CTX_set_purpose(ctx.get(), X509_PURPOSE_SSL_CLIENT) != 1) {
    ERR_clear_error();
    return absl::InternalError("cannot set up certificate verification (OpenSSL)");
  }
  if (X509_verify_cert(ctx.get()) == 1) return absl::OkStatus();
  int err = X509_STORE_CTX_get_error(ctx.get());
  ERR_clear_error();
  return absl::UnauthenticatedError(absl::StrCat("client certificate ", DescribeCertificate(cert),
                                                 ": ", X509_verify_cert_error_string(err)));
}

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
  // The chain is verified by ClientChainVerifier, which logs who was refused
  // and why; "request, don't verify" also lets it see a missing certificate.
  opts.set_cert_request_type(GRPC_SSL_REQUEST_CLIENT_CERTIFICATE_BUT_DONT_VERIFY);
  opts.set_certificate_verifier(
      grpc::experimental::ExternalCertificateVerifier::Create<ClientChainVerifier>(files));
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
