// pkgdist-make-certs: the certificates of certs/gen-dev-certs.sh, made in one
// process. The script runs openssl four times per certificate (about 50 ms
// each here, so 10,000 agents take minutes); this issues the same
// certificates with the OpenSSL 3 library for the scale benchmark
// (bench/scale_bench.py), where thousands of agents need one each.
//
//   pkgdist-make-certs [OPTIONS] OUT_DIR [AGENT...]
//
// Writes into OUT_DIR (created, mode 0700, if missing), like the script:
//   ca.pem, ca.key                  the development CA (reused if both exist)
//   controller.pem, controller.key  URI:spiffe://TD/controller, DNS:localhost,
//                                   IP:127.0.0.1; serverAuth + clientAuth
//   ADMIN.pem, ADMIN.key            URI:spiffe://TD/admin/ADMIN; clientAuth
//   AGENT.pem, AGENT.key            URI:spiffe://TD/agent/AGENT, DNS:AGENT,
//                                   DNS:localhost, IP:127.0.0.1;
//                                   serverAuth + clientAuth
// Every leaf: subject O=pkgdist development, CN=NAME; basicConstraints
// critical CA:FALSE; keyUsage critical digitalSignature; subjectKeyIdentifier
// (SHA-1 of the public key, as "hash"); authorityKeyIdentifier keyid; a
// random 159-bit serial; ECDSA P-256 keys (PKCS#8 PEM, mode 0600) signed with
// SHA-256 (0644). Each file is written to NAME.tmp and renamed into place,
// key before certificate, so a reader never sees a partial file.
//
// Safe to run again, with the script's rules: an existing key is kept unless
// --force; an existing certificate is kept if the CA signed it, it holds the
// key's public key and names exactly the expected SAN; otherwise it is
// re-issued for the key.
//
// Options (the script's): --trust-domain TD, --admin NAME, --days N,
// --ca-days N, --not-before T, --not-after T (YYYYMMDDHHMMSSZ), --force;
// and --names-file FILE: more agent names, one per line (for lists longer
// than a command line should be). Prints the absolute OUT_DIR on success.
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/bn.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include <cerrno>
#include <chrono>
#include <climits>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <memory>
#include <regex>
#include <set>
#include <stdexcept>
#include <string>
#include <vector>

namespace {

struct Error : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// The OpenSSL error queue as one line, for messages.
std::string OpenSslErrors() {
  std::string out;
  while (unsigned long e = ERR_get_error()) {
    char buf[256];
    ERR_error_string_n(e, buf, sizeof buf);
    if (!out.empty()) out += "; ";
    out += buf;
  }
  return out.empty() ? "no OpenSSL error recorded" : out;
}

[[noreturn]] void Fail(const std::string& what) {
  throw Error(what + ": " + OpenSslErrors());
}

template <typename T, void (*Free)(T*)>
struct Deleter {
  void operator()(T* p) const { Free(p); }
};
using Pkey = std::unique_ptr<EVP_PKEY, Deleter<EVP_PKEY, EVP_PKEY_free>>;
using PkeyCtx = std::unique_ptr<EVP_PKEY_CTX, Deleter<EVP_PKEY_CTX, EVP_PKEY_CTX_free>>;
using Cert = std::unique_ptr<X509, Deleter<X509, X509_free>>;
using Ext = std::unique_ptr<X509_EXTENSION, Deleter<X509_EXTENSION, X509_EXTENSION_free>>;
using Bio = std::unique_ptr<BIO, Deleter<BIO, BIO_free_all>>;
using Bn = std::unique_ptr<BIGNUM, Deleter<BIGNUM, BN_free>>;
using Store = std::unique_ptr<X509_STORE, Deleter<X509_STORE, X509_STORE_free>>;
using StoreCtx = std::unique_ptr<X509_STORE_CTX, Deleter<X509_STORE_CTX, X509_STORE_CTX_free>>;

struct Options {
  std::string trust_domain = "pkgdist.dev";
  std::string admin = "admin";
  long days = 365;
  long ca_days = 3650;
  std::string not_before, not_after;
  bool force = false;
  std::string out_dir;
  std::vector<std::string> agents;
};

// Same rule as ValidateName in shared/paths.cc and valid_name in the script.
bool ValidName(const std::string& n) {
  if (n.empty() || n.size() > 128 || n == "." || n == ".." || n[0] == '-') return false;
  for (char c : n) {
    bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '.' || c == '_' || c == '+' || c == '-';
    if (!ok) return false;
  }
  return true;
}

bool ValidTime(const std::string& t) {
  return std::regex_match(t, std::regex("[0-9]{14}Z"));
}

long PositiveInt(const std::string& flag, const std::string& v) {
  if (!std::regex_match(v, std::regex("[1-9][0-9]{0,8}"))) {
    throw Error(flag + " must be a positive integer");
  }
  return std::stol(v);
}

// --- files ---------------------------------------------------------------

bool Exists(const std::string& path) {
  struct stat st;
  return ::stat(path.c_str(), &st) == 0;
}

bool IsFile(const std::string& path) {
  struct stat st;
  return ::stat(path.c_str(), &st) == 0 && S_ISREG(st.st_mode);
}

void MakeDirs(const std::string& dir) {
  std::string path;
  size_t pos = 0;
  while (pos != std::string::npos) {
    pos = dir.find('/', pos + 1);
    path = dir.substr(0, pos);
    if (path.empty() || Exists(path)) continue;
    if (::mkdir(path.c_str(), 0700) != 0 && errno != EEXIST) {
      throw Error("cannot create " + path + ": " + std::strerror(errno));
    }
  }
}

// Writes `data` to PATH.tmp with `mode` (whatever the umask) and renames it
// to PATH.
void WriteAtomic(const std::string& path, const std::string& data, mode_t mode) {
  const std::string tmp = path + ".tmp";
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, mode);
  if (fd < 0) throw Error("cannot create " + tmp + ": " + std::strerror(errno));
  bool ok = ::fchmod(fd, mode) == 0;
  for (size_t done = 0; ok && done < data.size();) {
    ssize_t n = ::write(fd, data.data() + done, data.size() - done);
    if (n < 0 && errno == EINTR) continue;
    ok = n > 0;
    if (ok) done += static_cast<size_t>(n);
  }
  int saved = errno;
  if (::close(fd) != 0 && ok) {
    ok = false;
    saved = errno;
  }
  if (!ok || ::rename(tmp.c_str(), path.c_str()) != 0) {
    if (ok) saved = errno;
    ::unlink(tmp.c_str());
    throw Error("cannot write " + path + ": " + std::strerror(saved));
  }
}

Bio ReadBio(const std::string& path) {
  Bio bio(BIO_new_file(path.c_str(), "r"));
  if (!bio) Fail("cannot open " + path);
  return bio;
}

Pkey ReadKey(const std::string& path) {
  Bio bio = ReadBio(path);
  Pkey key(PEM_read_bio_PrivateKey(bio.get(), nullptr, nullptr, nullptr));
  if (!key) Fail("cannot read the private key " + path);
  return key;
}

Cert ReadCert(const std::string& path) {
  Bio bio = ReadBio(path);
  Cert cert(PEM_read_bio_X509(bio.get(), nullptr, nullptr, nullptr));
  if (!cert) Fail("cannot read the certificate " + path);
  return cert;
}

std::string BioContents(BIO* bio) {
  char* data = nullptr;
  long n = BIO_get_mem_data(bio, &data);
  return std::string(data, static_cast<size_t>(n));
}

std::string KeyPem(EVP_PKEY* key) {
  Bio bio(BIO_new(BIO_s_mem()));
  if (!bio || PEM_write_bio_PrivateKey(bio.get(), key, nullptr, nullptr, 0, nullptr, nullptr) != 1) {
    Fail("cannot encode a private key");
  }
  return BioContents(bio.get());
}

std::string CertPem(X509* cert) {
  Bio bio(BIO_new(BIO_s_mem()));
  if (!bio || PEM_write_bio_X509(bio.get(), cert) != 1) Fail("cannot encode a certificate");
  return BioContents(bio.get());
}

// --- certificates ----------------------------------------------------------

// What one certificate says, apart from its key.
struct Profile {
  std::string stem;         // file name without .pem/.key
  std::string common_name;  // CN
  std::string san;          // subjectAltName, in openssl's config syntax
  std::string eku;          // extendedKeyUsage, likewise
};

class Issuer {
 public:
  explicit Issuer(const Options& o) : o_(o) {
    keygen_.reset(EVP_PKEY_CTX_new_from_name(nullptr, "EC", nullptr));
    if (!keygen_ || EVP_PKEY_keygen_init(keygen_.get()) != 1 ||
        EVP_PKEY_CTX_set_group_name(keygen_.get(), "P-256") != 1) {
      Fail("cannot set up EC P-256 key generation");
    }
  }

  // Reuses OUT_DIR/ca.{pem,key} if both exist, else makes a new CA.
  void LoadOrMakeCa() {
    const std::string pem = Path("ca.pem"), key = Path("ca.key");
    if (IsFile(pem) && IsFile(key)) {
      ca_key_ = ReadKey(key);
      ca_ = ReadCert(pem);
      if (X509_check_private_key(ca_.get(), ca_key_.get()) != 1) {
        ERR_clear_error();
        throw Error(pem + " does not match " + key);
      }
    } else if (Exists(pem) || Exists(key)) {
      throw Error(o_.out_dir + " holds only one of ca.pem and ca.key; remove it or use another "
                  "OUT_DIR");
    } else {
      ca_key_ = NewKey();
      WriteAtomic(key, KeyPem(ca_key_.get()), 0600);
      ca_ = MakeCaCert();
      WriteAtomic(pem, CertPem(ca_.get()), 0644);
    }
    store_.reset(X509_STORE_new());
    if (!store_ || X509_STORE_add_cert(store_.get(), ca_.get()) != 1) Fail("X509_STORE");
    X509_STORE_set_flags(store_.get(), X509_V_FLAG_NO_CHECK_TIME);
  }

  // Makes or keeps STEM.key and STEM.pem; true if a certificate was issued.
  bool Issue(const Profile& p) {
    const std::string pem = Path(p.stem + ".pem"), key_path = Path(p.stem + ".key");
    Pkey key;
    if (!o_.force && IsFile(key_path)) {
      key = ReadKey(key_path);
      if (IsFile(pem) && IsCurrent(pem, key.get(), p)) return false;
    } else {
      key = NewKey();
      WriteAtomic(key_path, KeyPem(key.get()), 0600);
    }
    Cert cert = MakeLeafCert(p, key.get());
    WriteAtomic(pem, CertPem(cert.get()), 0644);
    return true;
  }

 private:
  std::string Path(const std::string& file) const { return o_.out_dir + "/" + file; }

  Pkey NewKey() {
    EVP_PKEY* key = nullptr;
    if (EVP_PKEY_generate(keygen_.get(), &key) != 1) Fail("cannot generate an EC P-256 key");
    return Pkey(key);
  }

  // Version 3, a random 159-bit serial (as `openssl ca -rand_serial` and
  // `openssl req -x509`), the key, issuer and subject names.
  static Cert NewCert(EVP_PKEY* key, const std::string& common_name) {
    Cert cert(X509_new());
    if (!cert || X509_set_version(cert.get(), X509_VERSION_3) != 1) Fail("X509_new");
    Bn serial(BN_new());
    if (!serial || BN_rand(serial.get(), 159, BN_RAND_TOP_ANY, BN_RAND_BOTTOM_ANY) != 1 ||
        BN_to_ASN1_INTEGER(serial.get(), X509_get_serialNumber(cert.get())) == nullptr) {
      Fail("cannot make a serial number");
    }
    X509_NAME* name = X509_get_subject_name(cert.get());
    auto add = [&](const char* field, const std::string& value) {
      if (X509_NAME_add_entry_by_txt(name, field, MBSTRING_UTF8,
                                     reinterpret_cast<const unsigned char*>(value.c_str()), -1, -1,
                                     0) != 1) {
        Fail(std::string("cannot set ") + field);
      }
    };
    add("O", "pkgdist development");
    add("CN", common_name);
    if (X509_set_pubkey(cert.get(), key) != 1) Fail("X509_set_pubkey");
    return cert;
  }

  // An extension from openssl's config syntax, exactly as the script's
  // `openssl req -addext` and `openssl ca -extfile` make it.
  static void AddConfExt(X509* cert, int nid, const std::string& value) {
    X509V3_CTX ctx;
    X509V3_set_ctx_nodb(&ctx);
    X509V3_set_ctx(&ctx, nullptr, cert, nullptr, nullptr, 0);
    Ext ext(X509V3_EXT_nconf_nid(nullptr, &ctx, nid, value.c_str()));
    if (!ext || X509_add_ext(cert, ext.get(), -1) != 1) {
      Fail(std::string("cannot add ") + OBJ_nid2sn(nid) + " = " + value);
    }
  }

  // subjectKeyIdentifier "hash": SHA-1 of the subjectPublicKey bits (RFC 5280 4.2.1.2).
  static ASN1_OCTET_STRING* KeyId(X509* cert) {
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int len = 0;
    ASN1_OCTET_STRING* id = ASN1_OCTET_STRING_new();
    if (id == nullptr || X509_pubkey_digest(cert, EVP_sha1(), md, &len) != 1 ||
        ASN1_OCTET_STRING_set(id, md, static_cast<int>(len)) != 1) {
      ASN1_OCTET_STRING_free(id);
      Fail("cannot compute a subject key identifier");
    }
    return id;
  }

  static void AddSubjectKeyId(X509* cert) {
    ASN1_OCTET_STRING* id = KeyId(cert);
    int ok = X509_add1_ext_i2d(cert, NID_subject_key_identifier, id, 0, X509V3_ADD_DEFAULT);
    ASN1_OCTET_STRING_free(id);
    if (ok != 1) Fail("cannot add subjectKeyIdentifier");
  }

  // authorityKeyIdentifier "keyid": the issuer's key identifier only.
  static void AddAuthorityKeyId(X509* cert, const ASN1_OCTET_STRING* issuer_key_id) {
    AUTHORITY_KEYID* akid = AUTHORITY_KEYID_new();
    if (akid == nullptr || (akid->keyid = ASN1_OCTET_STRING_dup(issuer_key_id)) == nullptr ||
        X509_add1_ext_i2d(cert, NID_authority_key_identifier, akid, 0, X509V3_ADD_DEFAULT) != 1) {
      AUTHORITY_KEYID_free(akid);
      Fail("cannot add authorityKeyIdentifier");
    }
    AUTHORITY_KEYID_free(akid);
  }

  // The validity of an issued certificate: --not-before/--not-after or
  // now .. now + days (as `openssl ca -days` counts, from now).
  void SetValidity(X509* cert, long days, bool leaf) {
    const bool explicit_before = leaf && !o_.not_before.empty();
    const bool explicit_after = leaf && !o_.not_after.empty();
    ASN1_TIME* before = X509_getm_notBefore(cert);
    ASN1_TIME* after = X509_getm_notAfter(cert);
    if (explicit_before ? ASN1_TIME_set_string_X509(before, o_.not_before.c_str()) != 1
                        : X509_gmtime_adj(before, 0) == nullptr) {
      Fail("cannot set notBefore");
    }
    if (explicit_after ? ASN1_TIME_set_string_X509(after, o_.not_after.c_str()) != 1
                       : X509_time_adj_ex(after, static_cast<int>(days), 0, nullptr) == nullptr) {
      Fail("cannot set notAfter");
    }
  }

  void Sign(X509* cert) {
    if (X509_sign(cert, ca_key_.get(), EVP_sha256()) <= 0) Fail("cannot sign a certificate");
  }

  // As the script's `openssl req -x509 -addext ...`, which also puts an
  // authorityKeyIdentifier (keyid) first.
  Cert MakeCaCert() {
    Cert cert = NewCert(ca_key_.get(),
                        "pkgdist development CA (" + o_.trust_domain + ")");
    if (X509_set_issuer_name(cert.get(), X509_get_subject_name(cert.get())) != 1) {
      Fail("X509_set_issuer_name");
    }
    SetValidity(cert.get(), o_.ca_days, /*leaf=*/false);
    ASN1_OCTET_STRING* id = KeyId(cert.get());
    AddAuthorityKeyId(cert.get(), id);
    ASN1_OCTET_STRING_free(id);
    AddConfExt(cert.get(), NID_basic_constraints, "critical,CA:TRUE,pathlen:0");
    AddConfExt(cert.get(), NID_key_usage, "critical,keyCertSign,cRLSign");
    AddSubjectKeyId(cert.get());
    Sign(cert.get());
    return cert;
  }

  // In the order of the script's extension section.
  Cert MakeLeafCert(const Profile& p, EVP_PKEY* key) {
    Cert cert = NewCert(key, p.common_name);
    if (X509_set_issuer_name(cert.get(), X509_get_subject_name(ca_.get())) != 1) {
      Fail("X509_set_issuer_name");
    }
    SetValidity(cert.get(), o_.days, /*leaf=*/true);
    AddConfExt(cert.get(), NID_basic_constraints, "critical,CA:FALSE");
    AddConfExt(cert.get(), NID_key_usage, "critical,digitalSignature");
    AddConfExt(cert.get(), NID_ext_key_usage, p.eku);
    AddConfExt(cert.get(), NID_subject_alt_name, p.san);
    AddSubjectKeyId(cert.get());
    const ASN1_OCTET_STRING* ca_id = X509_get0_subject_key_id(ca_.get());
    if (ca_id == nullptr) throw Error("the CA certificate has no subjectKeyIdentifier");
    AddAuthorityKeyId(cert.get(), ca_id);
    Sign(cert.get());
    return cert;
  }

  // The script's cert_is_current: signed by our CA (times not checked),
  // holds KEY's public key and exactly the expected SAN.
  bool IsCurrent(const std::string& pem, EVP_PKEY* key, const Profile& p) {
    Bio bio = ReadBio(pem);
    Cert cert(PEM_read_bio_X509(bio.get(), nullptr, nullptr, nullptr));
    bool current = cert != nullptr;
    if (current) {
      StoreCtx ctx(X509_STORE_CTX_new());
      current = ctx && X509_STORE_CTX_init(ctx.get(), store_.get(), cert.get(), nullptr) == 1 &&
                X509_verify_cert(ctx.get()) == 1;
    }
    current = current && EVP_PKEY_eq(X509_get0_pubkey(cert.get()), key) == 1;
    if (current) {
      Cert probe(X509_new());
      AddConfExt(probe.get(), NID_subject_alt_name, p.san);
      int at = X509_get_ext_by_NID(cert.get(), NID_subject_alt_name, -1);
      current = at >= 0 &&
                X509_get_ext_by_NID(cert.get(), NID_subject_alt_name, at) < 0 &&
                ASN1_STRING_cmp(X509_EXTENSION_get_data(X509_get_ext(cert.get(), at)),
                                X509_EXTENSION_get_data(X509_get_ext(probe.get(), 0))) == 0;
    }
    ERR_clear_error();
    return current;
  }

  const Options& o_;
  PkeyCtx keygen_;
  Pkey ca_key_;
  Cert ca_;
  Store store_;
};

constexpr const char* kUsage =
    "usage: pkgdist-make-certs [--trust-domain TD] [--admin NAME] [--days N] [--ca-days N]\n"
    "                          [--not-before T] [--not-after T] [--force]\n"
    "                          [--names-file FILE] OUT_DIR [AGENT...]\n"
    "Makes the certificates certs/gen-dev-certs.sh makes (see its --help), in one process.\n";

Options Parse(int argc, char** argv) {
  Options o;
  std::vector<std::string> positional, names_files;
  bool options_done = false;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (options_done || a.empty() || a[0] != '-') {
      positional.push_back(a);
      continue;
    }
    if (a == "--") {
      options_done = true;
      continue;
    }
    if (a == "-h" || a == "--help") {
      std::fputs(kUsage, stdout);
      std::exit(0);
    }
    if (a == "--force") {
      o.force = true;
      continue;
    }
    if (i + 1 >= argc) throw Error(a + " needs a value");
    const std::string v = argv[++i];
    if (a == "--trust-domain") {
      o.trust_domain = v;
    } else if (a == "--admin") {
      o.admin = v;
    } else if (a == "--days") {
      o.days = PositiveInt(a, v);
    } else if (a == "--ca-days") {
      o.ca_days = PositiveInt(a, v);
    } else if (a == "--not-before") {
      o.not_before = v;
    } else if (a == "--not-after") {
      o.not_after = v;
    } else if (a == "--names-file") {
      names_files.push_back(v);
    } else {
      throw Error("unknown option " + a + " (see --help)");
    }
  }
  if (positional.empty()) {
    std::fputs(kUsage, stderr);
    std::exit(2);
  }
  o.out_dir = positional[0];
  o.agents.assign(positional.begin() + 1, positional.end());
  for (const std::string& file : names_files) {
    std::ifstream in(file);
    if (!in) throw Error("cannot read " + file);
    for (std::string line; std::getline(in, line);) {
      if (!line.empty()) o.agents.push_back(line);
    }
  }
  if (!std::regex_match(o.trust_domain, std::regex("[a-z0-9._-]+"))) {
    throw Error("invalid trust domain \"" + o.trust_domain + "\"");
  }
  if (!o.not_before.empty() && !ValidTime(o.not_before)) {
    throw Error("--not-before must be YYYYMMDDHHMMSSZ");
  }
  if (!o.not_after.empty() && !ValidTime(o.not_after)) {
    throw Error("--not-after must be YYYYMMDDHHMMSSZ");
  }
  if (!ValidName(o.admin)) throw Error("invalid admin name \"" + o.admin + "\"");
  for (const std::string& a : o.agents) {
    if (!ValidName(a)) throw Error("invalid agent name \"" + a + "\"");
    if (a == "ca" || a == "controller" || a == o.admin) {
      throw Error("agent name \"" + a + "\" clashes with another certificate's file name");
    }
  }
  return o;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    Options o = Parse(argc, argv);
    ::umask(077);
    MakeDirs(o.out_dir);
    char resolved[PATH_MAX];
    if (::realpath(o.out_dir.c_str(), resolved) == nullptr) {
      throw Error("cannot resolve " + o.out_dir + ": " + std::strerror(errno));
    }
    o.out_dir = resolved;

    auto start = std::chrono::steady_clock::now();
    Issuer issuer(o);
    issuer.LoadOrMakeCa();
    const std::string td = "spiffe://" + o.trust_domain;
    const std::string loopback = "DNS:localhost,IP:127.0.0.1";
    size_t issued = 0, kept = 0;
    auto issue = [&](const Profile& p) { (issuer.Issue(p) ? issued : kept) += 1; };
    issue({"controller", "controller", "URI:" + td + "/controller," + loopback,
           "serverAuth,clientAuth"});
    issue({o.admin, o.admin, "URI:" + td + "/admin/" + o.admin, "clientAuth"});
    std::set<std::string> seen;
    for (const std::string& a : o.agents) {
      if (!seen.insert(a).second) continue;
      issue({a, a, "URI:" + td + "/agent/" + a + ",DNS:" + a + "," + loopback,
             "serverAuth,clientAuth"});
    }
    double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    std::fprintf(stderr, "pkgdist-make-certs: %zu certificate(s) issued, %zu kept, in %.2f s\n",
                 issued, kept, secs);
    std::printf("%s\n", o.out_dir.c_str());
    return 0;
  } catch (const Error& e) {
    std::fprintf(stderr, "pkgdist-make-certs: %s\n", e.what());
    return 1;
  }
}
