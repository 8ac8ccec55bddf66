// The controller's command line: flags, their PKGDIST_* environment
// variables and the --config file (or $PKGDIST_CONFIG; TOML/INI, keys = long
// flag names). Precedence (shared/config.h): flags, then the environment,
// then the config file, then the defaults.
#ifndef PKGDIST_CONTROLLER_CONFIG_H_
#define PKGDIST_CONTROLLER_CONFIG_H_

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "controller/transfer.h"
#include "shared/config.h"
#include "shared/grpc_options.h"
#include "shared/manifest.h"
#include "shared/tls.h"

namespace pkgdist {

struct ControllerConfig {
  std::string listen = "127.0.0.1:7700";
  std::string state_dir;
  TlsFiles tls;
  std::string port_file;
  std::string log_level = "info";
  std::string log_format = "text";  // text or json (one object per line)
  // HOST:PORT serving Prometheus metrics at /metrics; empty: none.
  std::string metrics_listen;
  std::string metrics_port_file;  // written with the metrics port once serving
  int detect_seconds = kDefaultDetectSeconds;
  int max_backoff_seconds = 60;
  uint64_t window_bytes = kDefaultWindowBytes;
  size_t max_concurrent = 64;
  uint64_t max_bytes_per_second = 0;
  int64_t job_retention_seconds = int64_t{90} * 86400;
  // Audit records older than this are deleted (0: kept forever); events
  // kept (the newest). See StoreOptions.
  int64_t audit_retention_seconds = int64_t{365} * 86400;
  int64_t event_history = 100'000;
  ManifestLimits limits;  // enforced at import
  Chunking chunking = Chunking::ContentDefined();  // how imports are cut
  int max_message_bytes = kMaxMessageBytes;
  // --import-root (repeatable): directories a local import may read from;
  // none turns local import off.
  std::vector<std::string> import_roots;
};

// Parses argv, with `env` for the environment. Returns nullopt when --help
// was printed (exit 0), or INVALID_ARGUMENT with a one-line message for bad
// flags, variables or config file keys.
absl::StatusOr<std::optional<ControllerConfig>> ParseControllerFlags(
    int argc, const char* const* argv, const EnvLookup& env = ProcessEnv());

}  // namespace pkgdist

#endif  // PKGDIST_CONTROLLER_CONFIG_H_
