#include "controller/config.h"

#include <iostream>
#include <map>

#include "CLI/CLI.hpp"
#include "absl/strings/str_cat.h"

namespace pkgdist {

absl::StatusOr<std::optional<ControllerConfig>> ParseControllerFlags(int argc,
                                                                     const char* const* argv,
                                                                     const EnvLookup& env) {
  ControllerConfig c;
  CLI::App app{"pkgdist-controller: distributes packages to pkgdist agents over mutual TLS"};
  auto with_env = [](CLI::Option* o, const char* name) { return o->envname(name); };
  with_env(
      app.add_option("--listen", c.listen, "HOST:PORT of the admin API")->capture_default_str(),
      "PKGDIST_LISTEN");
  with_env(app.add_option("--state-dir", c.state_dir, "State directory (state.db, packages/)")
               ->required(),
           "PKGDIST_STATE_DIR");
  with_env(app.add_option("--ca", c.tls.ca, "CA certificate (PEM)")->required(), "PKGDIST_CA");
  with_env(app.add_option("--cert", c.tls.cert, "Controller certificate (PEM)")->required(),
           "PKGDIST_CERT");
  with_env(
      app.add_option("--key", c.tls.key, "Controller private key (PEM, mode 0600)")->required(),
      "PKGDIST_KEY");
  with_env(app.add_option("--crl-dir", c.tls.crl_dir, "Directory of hashed CRL files"),
           "PKGDIST_CRL_DIR");
  with_env(app.add_option("--cert-refresh-seconds", c.tls.refresh_seconds,
                          "How often certificate files are checked for changes")
               ->capture_default_str(),
           "PKGDIST_CERT_REFRESH_SECONDS");
  with_env(app.add_option("--port-file", c.port_file, "Write the bound port here once listening"),
           "PKGDIST_PORT_FILE");
  with_env(app.add_option("--detect-seconds", c.detect_seconds,
                          "Bound on detecting a silent agent (keepalive + progress deadline)")
               ->capture_default_str()
               ->check(CLI::Range(3, 3600)),
           "PKGDIST_DETECT_SECONDS");
  with_env(app.add_option("--max-backoff-seconds", c.max_backoff_seconds,
                          "Cap of the exponential retry backoff")
               ->capture_default_str()
               ->check(CLI::Range(1, 86400)),
           "PKGDIST_MAX_BACKOFF_SECONDS");
  with_env(app.add_option("--window-bytes", c.window_bytes,
                          "Unacknowledged bytes in flight per transfer")
               ->capture_default_str()
               ->check(CLI::Range(uint64_t{1} << 20, uint64_t{1} << 30)),
           "PKGDIST_WINDOW_BYTES");
  with_env(
      app.add_option("--max-concurrent-transfers", c.max_concurrent, "Transfers running at once")
          ->capture_default_str()
          ->check(CLI::Range(1, 100000)),
      "PKGDIST_MAX_CONCURRENT_TRANSFERS");
  with_env(app.add_option("--max-bytes-per-second", c.max_bytes_per_second,
                          "Bandwidth limit per transfer (0: none)")
               ->capture_default_str(),
           "PKGDIST_MAX_BYTES_PER_SECOND");
  with_env(app.add_option("--job-retention", c.job_retention_seconds,
                          "Delete finished jobs this long after their last change (e.g. 90d, "
                          "12h; 0 keeps them forever)")
               ->capture_default_str()
               ->transform(CLI::AsNumberWithUnit(
                   std::map<std::string, int64_t>{{"s", 1}, {"m", 60}, {"h", 3600}, {"d", 86400}},
                   CLI::AsNumberWithUnit::CASE_SENSITIVE))
               ->check(CLI::NonNegativeNumber),
           "PKGDIST_JOB_RETENTION");
  with_env(app.add_option("--audit-retention", c.audit_retention_seconds,
                          "Delete audit records this long after they were written (e.g. 365d; "
                          "0 keeps them forever); --job-retention does not touch them")
               ->capture_default_str()
               ->transform(CLI::AsNumberWithUnit(
                   std::map<std::string, int64_t>{{"s", 1}, {"m", 60}, {"h", 3600}, {"d", 86400}},
                   CLI::AsNumberWithUnit::CASE_SENSITIVE))
               ->check(CLI::Range(int64_t{0}, int64_t{100} * 365 * 86400)),
           "PKGDIST_AUDIT_RETENTION");
  with_env(app.add_option("--event-history", c.event_history,
                          "Events kept for WatchEvents followers that reconnect (the newest N; "
                          "about 150 bytes each)")
               ->capture_default_str()
               ->check(CLI::Range(int64_t{1}, int64_t{100'000'000})),
           "PKGDIST_EVENT_HISTORY");
  with_env(app.add_option("--max-files", c.limits.max_files, "Most entries a package may have")
               ->capture_default_str()
               ->check(CLI::PositiveNumber),
           "PKGDIST_MAX_FILES");
  with_env(app.add_option("--max-package-bytes", c.limits.max_total_size,
                          "Largest package accepted at import (accepts 10GiB...)")
               ->capture_default_str()
               ->transform(CLI::AsSizeValue(false))
               ->check(CLI::PositiveNumber),
           "PKGDIST_MAX_PACKAGE_BYTES");
  with_env(app.add_option("--max-path-length", c.limits.max_path_length,
                          "Longest path inside a package, in bytes")
               ->capture_default_str()
               ->check(CLI::Range(1, 65535)),
           "PKGDIST_MAX_PATH_LENGTH");
  with_env(app.add_option("--max-message-bytes", c.max_message_bytes,
                          "Largest gRPC message sent or accepted (a chunk is at most 1 MiB; "
                          "a large manifest is sent in parts of about 1 MiB, so the default "
                          "suits packages of any number of files)")
               ->capture_default_str()
               ->transform(CLI::AsSizeValue(false))
               ->check(CLI::Range(kMinMaxMessageBytes, kMaxMaxMessageBytes)),
           "PKGDIST_MAX_MESSAGE_BYTES");
  std::string chunking = "fastcdc";
  with_env(app.add_option("--chunking", chunking,
                          "How imported files are cut into chunks: fastcdc (content-defined, so "
                          "agents reuse what an edit left unchanged) or fixed (1 MiB offsets)")
               ->capture_default_str()
               ->check(CLI::IsMember({"fastcdc", "fixed"})),
           "PKGDIST_CHUNKING");
  ChunkingParams& cdc = c.chunking.params;
  with_env(app.add_option("--chunk-min-bytes", cdc.min_size, "fastcdc: smallest chunk")
               ->capture_default_str()
               ->transform(CLI::AsSizeValue(false)),
           "PKGDIST_CHUNK_MIN_BYTES");
  with_env(app.add_option("--chunk-avg-bytes", cdc.avg_size,
                          "fastcdc: average chunk (a power of two)")
               ->capture_default_str()
               ->transform(CLI::AsSizeValue(false)),
           "PKGDIST_CHUNK_AVG_BYTES");
  with_env(app.add_option("--chunk-max-bytes", cdc.max_size, "fastcdc: largest chunk (<= 1 MiB)")
               ->capture_default_str()
               ->transform(CLI::AsSizeValue(false)),
           "PKGDIST_CHUNK_MAX_BYTES");
  with_env(app.add_flag("--refuse-case-collisions", c.limits.refuse_case_collisions,
                        "Refuse at import a package with paths that differ only in letter case "
                        "(for fleets with case-folding disks)"),
           "PKGDIST_REFUSE_CASE_COLLISIONS");
  with_env(app.add_option("--import-root", c.import_roots,
                          "Allow `pkgdistctl package import --local` of trees under DIR on "
                          "this host (repeatable; none: local import is off). Name only "
                          "directories of build output: the controller reads any file there "
                          "for an admin")
               ->type_name("DIR")
               ->allow_extra_args(false),
           "PKGDIST_IMPORT_ROOT");
  with_env(app.add_option("--log-level", c.log_level, "trace, debug, info, warn, error")
               ->capture_default_str(),
           "PKGDIST_LOG_LEVEL");
  with_env(app.add_option("--log-format", c.log_format,
                          "text, or json: one object per line (time, level, message, and the "
                          "job, agent and package where they apply)")
               ->check(CLI::IsMember({"text", "json"}))
               ->capture_default_str(),
           "PKGDIST_LOG_FORMAT");
  with_env(app.add_option("--metrics-listen", c.metrics_listen,
                          "HOST:PORT to serve Prometheus metrics on (/metrics); off by default"),
           "PKGDIST_METRICS_LISTEN");
  with_env(app.add_option("--metrics-port-file", c.metrics_port_file,
                          "File to write the metrics port to once serving (for port 0)"),
           "PKGDIST_METRICS_PORT_FILE");
  std::string config_file;
  ConfigSources sources{
      .config = with_env(app.add_option("--config", config_file,
                                        "Config file (TOML/INI; keys are the long flag names)"),
                         "PKGDIST_CONFIG"),
      .env = env};
  try {
    ParseWithConfig(app, argc, argv, sources);
  } catch (const CLI::CallForHelp&) {
    std::cout << app.help();
    return std::optional<ControllerConfig>();
  } catch (const CLI::ParseError& e) {
    return absl::InvalidArgumentError(e.what());
  }
  c.chunking.content_defined = chunking == "fastcdc";
  if (absl::Status s = ValidateChunkingParams(c.chunking.params); !s.ok()) {
    return absl::InvalidArgumentError(absl::StrCat("--chunk-*-bytes: ", s.message()));
  }
  return std::optional<ControllerConfig>(std::move(c));
}

}  // namespace pkgdist
