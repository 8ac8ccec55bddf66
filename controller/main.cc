// pkgdist-controller: the admin API server and the distribution engine.
#include <signal.h>
#include <systemd/sd-daemon.h>

#include <cstdio>
#include <memory>
#include <string>

#include <grpcpp/ext/proto_server_reflection_plugin.h>
#include <grpcpp/grpcpp.h>
#include <grpcpp/health_check_service_interface.h>

#include "absl/strings/str_cat.h"
#include "controller/admin_call_metrics.h"
#include "controller/admin_service.h"
#include "controller/agent_pool.h"
#include "controller/config.h"
#include "controller/engine.h"
#include "controller/metrics.h"
#include "controller/package_store.h"
#include "controller/state_metrics.h"
#include "controller/state_store.h"
#include "shared/manifest.h"
#include "shared/dir_lock.h"
#include "shared/file_util.h"
#include "shared/grpc_options.h"
#include "shared/logging.h"
#include "shared/tls.h"
#include "shared/malloc_tuning.h"

namespace pkgdist {
namespace {

// The parsed command line (controller/config.h).
using Flags = ControllerConfig;

int Fail(const std::string& msg) {
  std::fprintf(stderr, "pkgdist-controller: %s\n", msg.c_str());
  return 2;
}

int Run(const Flags& f) {
  InitLogging(f.log_level, f.log_format);
  auto self = CheckTlsFiles(f.tls);
  if (!self.ok()) return Fail(std::string(self.status().message()));
  if (self->kind != "controller") {
    // Likely PKGDIST_CERT left over from a pkgdistctl setup: agents would
    // refuse this identity on every connection, so refuse to start.
    return Fail(absl::StrCat("--cert ", f.tls.cert, " names ", self->ToString(),
                             ", not spiffe://", self->trust_domain, "/controller"));
  }
  if (absl::Status s = MakeDirs(f.state_dir); !s.ok()) return Fail(std::string(s.message()));
  // Held until exit: a second controller on this directory would drive the
  // same jobs.
  auto lock = DirLock::Acquire(f.state_dir, "state directory");
  if (!lock.ok()) return Fail(std::string(lock.status().message()));

  SystemClock clock;
  auto store = StateStore::Open(
      f.state_dir + "/state.db", &clock,
      StoreOptions{f.event_history, f.audit_retention_seconds * 1000});
  if (!store.ok()) return Fail(absl::StrCat("state database: ", store.status().message()));
  auto import_roots = ResolveImportRoots(f.import_roots);
  if (!import_roots.ok()) return Fail(std::string(import_roots.status().message()));
  auto packages = PackageStore::Open(f.state_dir, f.limits, f.chunking, *std::move(import_roots));
  if (!packages.ok()) return Fail(std::string(packages.status().message()));
  if (auto listed = (*store)->ListPackages(); listed.ok()) {
    absl::flat_hash_set<std::string> known;
    for (const auto& p : *listed) known.insert(p.id);
    (*packages)->RemoveOrphans(known);
  }
  if (auto n = (*store)->RecoverInterrupted(); n.ok() && *n > 0) {
    spdlog::info("recovered {} interrupted transfer(s); they resume now", *n);
  }
  // Null without --metrics-listen; outlives everything that counts into it.
  std::unique_ptr<ControllerMetrics> metrics;
  if (!f.metrics_listen.empty()) {
    metrics = std::make_unique<ControllerMetrics>();
    (*store)->set_commit_observer([m = metrics.get()](absl::Duration d) { m->StoreCommitted(d); });
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
  eo.metrics = metrics.get();
  Engine engine(eo, store->get(), packages->get(), &pool, &clock);
  AdminService admin(self->trust_domain, store->get(), packages->get(), &engine, &pool, &clock,
                     static_cast<size_t>(f.max_message_bytes));
  // Scrapes read the engine and the pool: declared after them, stopped first.
  std::unique_ptr<MetricsServer> metrics_server;
  if (metrics != nullptr) {
    auto served = ServeControllerMetrics(f.metrics_listen, f.state_dir + "/state.db",
                                         metrics.get(), &engine, &pool);
    if (!served.ok()) return Fail(std::string(served.status().message()));
    metrics_server = std::move(served).value();
    if (!f.metrics_port_file.empty()) {
      absl::Status s =
          WriteFileAtomic(f.metrics_port_file, absl::StrCat(metrics_server->port(), "\n"));
      if (!s.ok()) return Fail(std::string(s.message()));
    }
  }

  grpc::EnableDefaultHealthCheckService(true);
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  grpc::ServerBuilder builder;
  int port = 0;
  builder.AddListeningPort(f.listen, MakeServerCredentials(provider, f.tls), &port);
  builder.RegisterService(&admin);
  if (metrics != nullptr) {
    std::vector<std::unique_ptr<grpc::experimental::ServerInterceptorFactoryInterface>> counters;
    counters.push_back(MakeAdminCallMetrics(metrics.get()));
    builder.experimental().SetInterceptorCreators(std::move(counters));
  }
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
  if (!f.import_roots.empty()) {
    spdlog::info("local import (package import --local) allowed under {}",
                 (*packages)->import_roots().List());
  }
  if (!f.port_file.empty()) {
    if (absl::Status s = WriteFileAtomic(f.port_file, absl::StrCat(port, "\n")); !s.ok()) {
      return Fail(std::string(s.message()));
    }
  }
  engine.Start();
  // systemd (Type=notify) counts the service as started from here; a no-op
  // without $NOTIFY_SOCKET.
  sd_notify(0, "READY=1");

  // SIGINT/SIGTERM were blocked before any thread started; wait for one here.
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGTERM);
  int sig = 0;
  sigwait(&set, &sig);
  spdlog::info("signal {}: shutting down", sig);
  sd_notify(0, "STOPPING=1");
  // Admin calls first (they use the engine), then every transfer; Stop()
  // returns once no callback can touch the engine, pool or store, which are
  // destroyed after it in reverse order of construction.
  admin.Shutdown();  // WatchEvents/WatchJob streams end now, not at the deadline
  server->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(5));
  engine.Stop();
  spdlog::info("pkgdist-controller stopped; unfinished transfers resume at the next start");
  return 0;
}

}  // namespace
}  // namespace pkgdist

int main(int argc, char** argv) {
  pkgdist::TuneMallocForLargeMessages();
  pkgdist::DisableMutexDeadlockDetection();
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &set, nullptr);
  signal(SIGPIPE, SIG_IGN);

  auto parsed = pkgdist::ParseControllerFlags(argc, argv);
  if (!parsed.ok()) return pkgdist::Fail(std::string(parsed.status().message()));
  if (!parsed->has_value()) return 0;  // --help
  const pkgdist::Flags& f = **parsed;
  return pkgdist::Run(f);
}
