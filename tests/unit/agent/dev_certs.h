// Certificates for a test suite that serves or calls the agent over mutual
// TLS: certs/gen-dev-certs.sh run once into a temporary directory, removed
// with the object. A suite makes one in SetUpTestSuite and drops it in
// TearDownTestSuite.
#ifndef PKGDIST_TESTS_UNIT_AGENT_DEV_CERTS_H_
#define PKGDIST_TESTS_UNIT_AGENT_DEV_CERTS_H_

#include <cstdlib>
#include <initializer_list>
#include <memory>
#include <string>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "gtest/gtest.h"
#include "shared/file_util.h"
#include "shared/tls.h"

namespace pkgdist::testing {

class DevCerts {
 public:
  // A CA, the controller's certificate and one per name in `agents`; on
  // failure the current test fails and the result is null.
  static std::unique_ptr<DevCerts> Generate(std::initializer_list<absl::string_view> agents) {
    auto dir = TempDir::Create("pkgdist-test-certs");
    if (!dir.ok()) {
      ADD_FAILURE() << "no directory for the test certificates: " << dir.status();
      return nullptr;
    }
    std::string cmd = absl::StrCat("bash '", PKGDIST_SOURCE_DIR, "/certs/gen-dev-certs.sh' '",
                                   dir->path(), "'");
    for (absl::string_view agent : agents) absl::StrAppend(&cmd, " ", agent);
    absl::StrAppend(&cmd, " >/dev/null");
    if (std::system(cmd.c_str()) != 0) {
      ADD_FAILURE() << "certificate generation failed: " << cmd;
      return nullptr;
    }
    return std::unique_ptr<DevCerts>(new DevCerts(std::move(*dir)));
  }

  // The CA and the certificate and key of `stem` ("controller" or an agent).
  TlsFiles Tls(absl::string_view stem) const {
    TlsFiles t;
    t.ca = dir_.path() + "/ca.pem";
    t.cert = absl::StrCat(dir_.path(), "/", stem, ".pem");
    t.key = absl::StrCat(dir_.path(), "/", stem, ".key");
    return t;
  }

 private:
  explicit DevCerts(TempDir dir) : dir_(std::move(dir)) {}
  TempDir dir_;
};

}  // namespace pkgdist::testing

#endif  // PKGDIST_TESTS_UNIT_AGENT_DEV_CERTS_H_
