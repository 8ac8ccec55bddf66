// pkgdist-controller: the admin API server and the distribution engine.
#include <signal.h>

#include <cstdio>
#include <map>
#include <memory>
#include <string>

#include <grpcpp/ext/proto_server_reflection_plugin.h>
#include <grpcpp/grpcpp.h>
#include <grpcpp/health_check_service_interface.h>

#include "CLI/CLI.hpp"
#include "absl/strings/str_cat.h"
#include "controller/admin_service.h"
#include "controller/agent_pool.h"
#include "controller/engine.h"
#include "controller/package_store.h"
#include "controller/state_store.h"
#include "shared/manifest.h"
#include "shared/file_util.h"
#include "shared/grpc_options.h"
#include "shared/logging.h"
#include "shared/tls.h"
#include "shared/malloc_tuning.h"

namespace pkgdist {
namespace {

struct Flags {
  std::string listen = "127.0.0.1:7700";
  std::string state_dir;
  TlsFiles tls;
  std::string port_file;
  std::string log_level = "info";
  int detect_seconds = kDefaultDetectSeconds;
  int max_backoff_seconds = 60;
  uint64_t window_bytes = kDefaultWindowBytes;
  size_t max_concurrent = 64;
  uint64_t max_bytes_per_second = 0;
  int64_t job_retention_seconds = int64_t{90} * 86400;
  ManifestLimits limits;  // enforced at import
  int max_message_bytes = kMaxMessageBytes;
};

int Fail(const std::string& msg) {
  std::fprintf(stderr, "pkgdist-controller: %s\n", msg.c_str());
  return 2;
}

int Run(const Flags& f) {
  InitLogging(f.log_level);
  auto self = CheckTlsFiles(f.tls);
  if (!self.ok()) return Fail(std::string(self.status().message()));
  if (self->kind != "controller") {
    // Likely PKGDIST_CERT left over from a pkgdistctl setup: agents would
    // refuse this identity on every connection, so refuse to start.
    return Fail(absl::StrCat("--cert ", f.tls.cert, " names ", self->ToString(),
                             ", not spiffe://", self->trust_domain, "/controller"));
  }
  if (absl::Status s = MakeDirs(f.state_dir); !s.ok()) return Fail(std::string(s.message()));

  SystemClock clock;
  auto store = StateStore::Open(f.state_dir + "/state.db", &clock);
  if (!store.ok()) return Fail(absl::StrCat("state database: ", store.status().message()));
  auto packages = PackageStore::Open(f.state_dir, f.limits);
  if (!packages.ok()) return Fail(std::string(packages.status().message()));
  if (auto listed = (*store)->ListPackages(); listed.ok()) {
    absl::flat_hash_set<std::string> known;
    for (const auto& p : *listed) known.insert(p.id);
    (*packages)->RemoveOrphans(known);
  }
  if (auto n = (*store)->RecoverInterrupted(); n.ok() && *n > 0) {
    spdlog::info("recovered {} interrupted transfer(s); they resume now", *n);
  }

  auto provider = MakeCertificateProvider(f.tls);
  AgentPool pool(AgentPool::Options{f.tls, self->trust_domain, f.detect_seconds, 5000,
                                    f.max_message_bytes}, provider,
                 &clock);
  Engine::Options eo;
  eo.detect_seconds = f.detect_seconds;
  eo.backoff.max_ms = int64_t{f.max_backoff_seconds} * 1000;
  eo.window_bytes = f.window_bytes;
  eo.max_concurrent = f.max_concurrent;
  eo.max_bytes_per_second = f.max_bytes_per_second;
  eo.job_retention_ms = f.job_retention_seconds * 1000;
  Engine engine(eo, store->get(), packages->get(), &pool, &clock);
  AdminService admin(self->trust_domain, store->get(), packages->get(), &engine, &pool, &clock,
                     static_cast<size_t>(f.max_message_bytes));

  grpc::EnableDefaultHealthCheckService(true);
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  grpc::ServerBuilder builder;
  int port = 0;
  builder.AddListeningPort(f.listen, MakeServerCredentials(provider, f.tls), &port);
  builder.RegisterService(&admin);
  builder.SetMaxReceiveMessageSize(f.max_message_bytes);
  builder.SetMaxSendMessageSize(f.max_message_bytes);
  // Fixed flow-control windows: an upload to a slow disk buffers at most
  // the lookahead in memory, not a window grown by BDP probing.
  builder.AddChannelArgument("grpc.http2.bdp_probe", 0);
  builder.AddChannelArgument("grpc.http2.lookahead_bytes", 8 << 20);
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  if (server == nullptr || port == 0) return Fail(absl::StrCat("cannot listen on ", f.listen));
  std::string host = f.listen.substr(0, f.listen.rfind(':'));
  spdlog::info("pkgdist-controller listening on {}:{} as {}", host, port, self->ToString());
  if (!f.port_file.empty()) {
    if (absl::Status s = WriteFileAtomic(f.port_file, absl::StrCat(port, "\n")); !s.ok()) {
      return Fail(std::string(s.message()));
    }
  }
  engine.Start();

  // SIGINT/SIGTERM were blocked before any thread started; wait for one here.
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGTERM);
  int sig = 0;
  sigwait(&set, &sig);
  spdlog::info("signal {}: shutting down", sig);
  // Admin calls first (they use the engine), then every transfer; Stop()
  // returns once no callback can touch the engine, pool or store, which are
  // destroyed after it in reverse order of construction.
  server->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(5));
  engine.Stop();
  spdlog::info("pkgdist-controller stopped; unfinished transfers resume at the next start");
  return 0;
}

}  // namespace
}  // namespace pkgdist

int main(int argc, char** argv) {
  pkgdist::TuneMallocForLargeMessages();
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &set, nullptr);
  signal(SIGPIPE, SIG_IGN);

  pkgdist::Flags f;
  CLI::App app{"pkgdist-controller: distributes packages to pkgdist agents over mutual TLS"};
  app.set_config("--config", "", "Config file (TOML/INI; keys are the long flag names)");
  auto env = [](CLI::Option* o, const char* name) { return o->envname(name); };
  env(app.add_option("--listen", f.listen, "HOST:PORT of the admin API")->capture_default_str(),
      "PKGDIST_LISTEN");
  env(app.add_option("--state-dir", f.state_dir, "State directory (state.db, packages/)")
          ->required(),
      "PKGDIST_STATE_DIR");
  env(app.add_option("--ca", f.tls.ca, "CA certificate (PEM)")->required(), "PKGDIST_CA");
  env(app.add_option("--cert", f.tls.cert, "Controller certificate (PEM)")->required(),
      "PKGDIST_CERT");
  env(app.add_option("--key", f.tls.key, "Controller private key (PEM, mode 0600)")->required(),
      "PKGDIST_KEY");
  env(app.add_option("--crl-dir", f.tls.crl_dir, "Directory of hashed CRL files"),
      "PKGDIST_CRL_DIR");
  env(app.add_option("--cert-refresh-seconds", f.tls.refresh_seconds,
                     "How often certificate files are checked for changes")
          ->capture_default_str(),
      "PKGDIST_CERT_REFRESH_SECONDS");
  env(app.add_option("--port-file", f.port_file, "Write the bound port here once listening"),
      "PKGDIST_PORT_FILE");
  env(app.add_option("--detect-seconds", f.detect_seconds,
                     "Bound on detecting a silent agent (keepalive + progress deadline)")
          ->capture_default_str()
          ->check(CLI::Range(3, 3600)),
      "PKGDIST_DETECT_SECONDS");
  env(app.add_option("--max-backoff-seconds", f.max_backoff_seconds,
                     "Cap of the exponential retry backoff")
          ->capture_default_str()
          ->check(CLI::Range(1, 86400)),
      "PKGDIST_MAX_BACKOFF_SECONDS");
  env(app.add_option("--window-bytes", f.window_bytes,
                     "Unacknowledged bytes in flight per transfer")
          ->capture_default_str()
          ->check(CLI::Range(uint64_t{1} << 20, uint64_t{1} << 30)),
      "PKGDIST_WINDOW_BYTES");
  env(app.add_option("--max-concurrent-transfers", f.max_concurrent,
                     "Transfers running at once")
          ->capture_default_str()
          ->check(CLI::Range(1, 100000)),
      "PKGDIST_MAX_CONCURRENT_TRANSFERS");
  env(app.add_option("--max-bytes-per-second", f.max_bytes_per_second,
                     "Bandwidth limit per transfer (0: none)")
          ->capture_default_str(),
      "PKGDIST_MAX_BYTES_PER_SECOND");
  env(app.add_option("--job-retention", f.job_retention_seconds,
                     "Delete finished jobs this long after their last change (e.g. 90d, "
                     "12h; 0 keeps them forever)")
          ->capture_default_str()
          ->transform(CLI::AsNumberWithUnit(
              std::map<std::string, int64_t>{{"s", 1}, {"m", 60}, {"h", 3600}, {"d", 86400}},
              CLI::AsNumberWithUnit::CASE_SENSITIVE))
          ->check(CLI::NonNegativeNumber),
      "PKGDIST_JOB_RETENTION");
  env(app.add_option("--max-files", f.limits.max_files, "Most entries a package may have")
          ->capture_default_str()
          ->check(CLI::PositiveNumber),
      "PKGDIST_MAX_FILES");
  env(app.add_option("--max-package-bytes", f.limits.max_total_size,
                     "Largest package accepted at import (accepts 10GiB...)")
          ->capture_default_str()
          ->transform(CLI::AsSizeValue(false))
          ->check(CLI::PositiveNumber),
      "PKGDIST_MAX_PACKAGE_BYTES");
  env(app.add_option("--max-path-length", f.limits.max_path_length,
                     "Longest path inside a package, in bytes")
          ->capture_default_str()
          ->check(CLI::Range(1, 65535)),
      "PKGDIST_MAX_PATH_LENGTH");
  env(app.add_option("--max-message-bytes", f.max_message_bytes,
                     "Largest gRPC message sent or accepted; an Offer carries the whole "
                     "manifest, so raise it on both sides for packages of many files")
          ->capture_default_str()
          ->transform(CLI::AsSizeValue(false))
          ->check(CLI::Range(pkgdist::kMinMaxMessageBytes, pkgdist::kMaxMaxMessageBytes)),
      "PKGDIST_MAX_MESSAGE_BYTES");
  env(app.add_flag("--refuse-case-collisions", f.limits.refuse_case_collisions,
                   "Refuse at import a package with paths that differ only in letter case "
                   "(for fleets with case-folding disks)"),
      "PKGDIST_REFUSE_CASE_COLLISIONS");
  env(app.add_option("--log-level", f.log_level, "trace, debug, info, warn, error")
          ->capture_default_str(),
      "PKGDIST_LOG_LEVEL");
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e) == 0 ? 0 : 2;
  }
  return pkgdist::Run(f);
}
