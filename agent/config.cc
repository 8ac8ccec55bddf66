#include "agent/config.h"

#include <iostream>

#include "CLI/CLI.hpp"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "shared/config.h"
#include "shared/paths.h"
#include "shared/status_macros.h"

namespace pkgdist {
namespace {

// "foo-bar" -> "PKGDIST_FOO_BAR".
std::string EnvName(absl::string_view flag) {
  std::string env = "PKGDIST_";
  for (char c : flag) env += c == '-' ? '_' : static_cast<char>(std::toupper(c));
  return env;
}

absl::Status ValidateListen(const std::string& listen) {
  size_t colon = listen.rfind(':');
  uint32_t port = 0;
  if (colon == std::string::npos || colon == 0 ||
      !absl::SimpleAtoi(absl::string_view(listen).substr(colon + 1), &port) || port > 65535) {
    return absl::InvalidArgumentError(
        absl::StrCat("--listen \"", listen, "\": expected HOST:PORT (port 0 picks a free one)"));
  }
  return absl::OkStatus();
}

absl::Status Validate(const AgentConfig& c) {
  if (!c.name.empty()) RETURN_IF_ERROR(ValidateName(c.name, "--name"));
  RETURN_IF_ERROR(ValidateListen(c.listen));
  for (const auto& name : c.allow_rollback) RETURN_IF_ERROR(ValidateName(name, "--allow-rollback"));
  if (c.max_files == 0) return absl::InvalidArgumentError("--max-files must be positive");
  if (c.max_package_bytes == 0) {
    return absl::InvalidArgumentError("--max-package-bytes must be positive");
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<std::optional<AgentConfig>> ParseAgentFlags(int argc, const char* const* argv,
                                                           const EnvLookup& env) {
  AgentConfig c;
  CLI::App app{"pkgdist-agent: receives packages from the pkgdist controller and publishes them",
               "pkgdist-agent"};
  auto add = [&](const char* flag, auto* value, const char* help) {
    return app.add_option(absl::StrCat("--", flag), *value, help)->envname(EnvName(flag));
  };
  add("name", &c.name,
      "agent name (default: the NAME of the certificate's spiffe://TD/agent/NAME, which it "
      "must match)");
  add("listen", &c.listen, "HOST:PORT to serve on")->required();
  add("root", &c.root, "directory holding staging/ and packages/")->required();
  add("ca", &c.tls.ca, "CA certificate (PEM)")->required();
  add("cert", &c.tls.cert, "this agent's certificate (PEM)")->required();
  add("key", &c.tls.key, "this agent's private key (PEM, mode 0600)")->required();
  add("controller-identity", &c.controller_identity,
      "identity allowed to call: \"controller\" or a full spiffe:// ID");
  add("crl-dir", &c.tls.crl_dir, "directory of hashed CRLs")->check(CLI::ExistingDirectory);
  add("reserve-bytes", &c.reserve_bytes, "disk space kept free (accepts 64MiB, 1GiB...)")
      ->transform(CLI::AsSizeValue(false));
  add("max-files", &c.max_files, "largest accepted number of entries in a package");
  add("max-package-bytes", &c.max_package_bytes, "largest accepted package size")
      ->transform(CLI::AsSizeValue(false));
  add("max-path-length", &c.max_path_length, "longest accepted path inside a package, in bytes")
      ->check(CLI::Range(1, 65535));
  add("max-message-bytes", &c.max_message_bytes,
      "largest gRPC message accepted (a chunk is at most 1 MiB; a large manifest "
      "arrives in parts of about 1 MiB)")
      ->transform(CLI::AsSizeValue(false))
      ->check(CLI::Range(kMinMaxMessageBytes, kMaxMaxMessageBytes));
  add("case-collisions", &c.case_collisions,
      "paths differing only in case: auto (refuse if ROOT folds case), refuse or allow")
      ->check(CLI::IsMember({"auto", "refuse", "allow"}));
  add("trusted-keys", &c.trusted_keys,
      "directory of release owners' Ed25519 public keys (*.pub): publish only packages one of "
      "them signed (re-read at every transfer)")
      ->check(CLI::ExistingDirectory);
  add("require-signatures", &c.require_signatures,
      "with --trusted-keys: refuse unsigned packages (default true; false accepts them while "
      "still refusing bad signatures)");
  add("allow-rollback", &c.allow_rollback,
      "package name whose signed sequence may go back (repeatable): accept an older release")
      ->delimiter(',');
  add("log-level", &c.log_level, "trace, debug, info, warn or error")
      ->check(CLI::IsMember({"trace", "debug", "info", "warn", "error", "critical", "off"}));
  add("log-format", &c.log_format,
      "text, or json: one object per line (time, level, message, and the job, agent and "
      "package where they apply)")
      ->check(CLI::IsMember({"text", "json"}));
  add("metrics-listen", &c.metrics_listen,
      "HOST:PORT to serve Prometheus metrics on (/metrics); off by default");
  add("metrics-port-file", &c.metrics_port_file,
      "file to write the metrics port to once serving (for port 0)");
  add("port-file", &c.port_file, "file to write the bound port to once listening");
  std::string config_file;
  ConfigSources sources{.config = add("config", &config_file,
                                      "config file (TOML/INI; keys are long flag names)"),
                        .env = env};
  try {
    ParseWithConfig(app, argc, argv, sources);
  } catch (const CLI::CallForHelp&) {
    std::cout << app.help();
    return std::optional<AgentConfig>();
  } catch (const CLI::ParseError& e) {
    return absl::InvalidArgumentError(e.what());
  }
  RETURN_IF_ERROR(Validate(c));
  return std::optional<AgentConfig>(std::move(c));
}

absl::StatusOr<SpiffeId> ResolveControllerIdentity(absl::string_view flag,
                                                   absl::string_view trust_domain) {
  if (flag.empty() || flag == "controller") {
    return SpiffeId{std::string(trust_domain), "controller", ""};
  }
  if (!absl::StartsWith(flag, "spiffe://")) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--controller-identity \"", flag, "\": expected \"controller\" or spiffe://TD/controller"));
  }
  auto id = ParseSpiffeId(flag);
  if (!id.ok()) {
    return absl::InvalidArgumentError(absl::StrCat("--controller-identity: ", id.status().message()));
  }
  return id;
}

}  // namespace pkgdist
