// The agent's command line: flags, their PKGDIST_* environment variables
// and the --config file (or $PKGDIST_CONFIG; TOML/INI, keys = long flag
// names). Precedence (shared/config.h): flags, then the environment, then
// the config file, then the defaults.
#ifndef PKGDIST_AGENT_CONFIG_H_
#define PKGDIST_AGENT_CONFIG_H_

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "shared/config.h"
#include "shared/manifest.h"
#include "shared/grpc_options.h"
#include "shared/tls.h"

namespace pkgdist {

struct AgentConfig {
  std::string name;  // empty: the NAME of the certificate's agent identity
  std::string listen;  // HOST:PORT; port 0 picks a free port
  std::string root;
  TlsFiles tls;
  // A full SPIFFE ID or "controller"; empty means "controller".
  std::string controller_identity;
  uint64_t reserve_bytes = uint64_t{64} << 20;
  uint64_t max_files = ManifestLimits{}.max_files;
  uint64_t max_package_bytes = ManifestLimits{}.max_total_size;
  size_t max_path_length = ManifestLimits{}.max_path_length;
  int max_message_bytes = kMaxMessageBytes;
  // Paths differing only in letter case: "auto" refuses them when ROOT's
  // filesystem folds case (probed at start), "refuse" always, "allow" never.
  std::string case_collisions = "auto";
  // Package signatures (agent/signature_policy.h): a directory of trusted
  // Ed25519 public keys (*.pub); empty checks no signatures.
  std::string trusted_keys;
  bool require_signatures = true;       // only with trusted_keys
  std::vector<std::string> allow_rollback;  // package names
  std::string log_level = "info";
  std::string log_format = "text";  // text or json (one object per line)
  // HOST:PORT serving Prometheus metrics at /metrics; empty: none.
  std::string metrics_listen;
  std::string metrics_port_file;  // written with the metrics port once serving
  std::string port_file;  // written with the bound port once listening
};

// Parses argv, with `env` for the environment. Returns nullopt when --help
// was printed (exit 0), or INVALID_ARGUMENT with a one-line message for bad
// flags, variables or config file keys.
absl::StatusOr<std::optional<AgentConfig>> ParseAgentFlags(int argc, const char* const* argv,
                                                           const EnvLookup& env = ProcessEnv());

// The identity allowed to call the agent: `flag` ("", "controller" or a full
// spiffe:// ID) resolved against the trust domain of the agent's own
// certificate.
absl::StatusOr<SpiffeId> ResolveControllerIdentity(absl::string_view flag,
                                                   absl::string_view trust_domain);

}  // namespace pkgdist

#endif  // PKGDIST_AGENT_CONFIG_H_
