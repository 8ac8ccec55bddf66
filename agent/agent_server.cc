#include "agent/agent_server.h"

#include "absl/strings/str_cat.h"
#include "shared/file_util.h"
#include "shared/grpc_options.h"
#include "shared/logging.h"
#include "shared/status_macros.h"
#include "shared/tls.h"

namespace pkgdist {

absl::StatusOr<std::unique_ptr<AgentServer>> AgentServer::Start(const AgentConfig& config) {
  ASSIGN_OR_RETURN(SpiffeId self, CheckTlsFiles(config.tls));
  if (self.kind != "agent" || self.name != config.name) {
    spdlog::warn("certificate {} identifies {}, not agent \"{}\": the controller will refuse "
                 "this agent",
                 config.tls.cert, self.ToString(), config.name);
  }
  ASSIGN_OR_RETURN(SpiffeId controller,
                   ResolveControllerIdentity(config.controller_identity, self.trust_domain));

  std::unique_ptr<AgentServer> server(new AgentServer());
  PackageStoreOptions store_options;
  store_options.reserve_bytes = config.reserve_bytes;
  ASSIGN_OR_RETURN(server->store_, PackageStore::Open(config.root, store_options));

  SignaturePolicyOptions signing;
  signing.trusted_keys_dir = config.trusted_keys;
  signing.require_signatures = config.require_signatures;
  signing.allow_rollback = config.allow_rollback;
  ASSIGN_OR_RETURN(server->signatures_, SignaturePolicy::Open(config.root, std::move(signing)));
  RETURN_IF_ERROR(server->StartMetrics(config));

  spdlog::info("accepting calls only from {}", controller.ToString());
  TransferOptions options;
  options.limits.max_files = config.max_files;
  options.limits.max_total_size = config.max_package_bytes;
  options.limits.max_path_length = config.max_path_length;
  options.limits.refuse_case_collisions = config.case_collisions == "refuse";
  if (config.case_collisions == "auto") {
    ASSIGN_OR_RETURN(options.limits.refuse_case_collisions,
                     FoldsCase(config.root + "/staging"));
  }
  options.signatures = server->signatures_.get();
  options.metrics = server->metrics_.get();
  options.agent_name = config.name;
  server->serving_ = std::make_unique<PeerServing>();
  server->peers_ =
      std::make_unique<PeerFetcher>(config.tls, self.trust_domain, config.max_message_bytes);
  options.serving = server->serving_.get();
  options.peers = server->peers_.get();
  if (options.limits.refuse_case_collisions) {
    spdlog::info("refusing packages whose paths differ only in letter case");
  }
  server->service_ =
      std::make_unique<AgentService>(*server->store_, options, std::move(controller));

  grpc::ServerBuilder builder;
  ConfigureAgentServer(builder, config.max_message_bytes);
  builder.AddListeningPort(config.listen,
                           MakeServerCredentials(MakeCertificateProvider(config.tls), config.tls),
                           &server->port_);
  builder.RegisterService(server->service_.get());
  server->server_ = builder.BuildAndStart();
  if (server->server_ == nullptr || server->port_ == 0) {
    return absl::UnavailableError(absl::StrCat("cannot listen on ", config.listen));
  }
  return server;
}

absl::Status AgentServer::StartMetrics(const AgentConfig& config) {
  if (config.metrics_listen.empty()) return absl::OkStatus();
  auto metrics_server = MetricsServer::Start(config.metrics_listen);
  if (!metrics_server.ok()) {
    // A flag to fix, not a port to wait for (unlike --listen).
    return absl::FailedPreconditionError(metrics_server.status().message());
  }
  metrics_ = std::make_unique<AgentMetrics>();
  metrics_server_ = std::move(metrics_server).value();
  metrics_server_->Register(metrics_->registry());
  metrics_server_->Register(MakeFreeBytesCollectable(config.root));
  spdlog::info("serving metrics on http://{}:{}/metrics",
               config.metrics_listen.substr(0, config.metrics_listen.rfind(':')),
               metrics_server_->port());
  return absl::OkStatus();
}

AgentServer::~AgentServer() { Shutdown(absl::ZeroDuration()); }

void AgentServer::Shutdown(absl::Duration grace) {
  if (server_ == nullptr || stopped_) return;
  stopped_ = true;
  server_->Shutdown(absl::ToChronoTime(absl::Now() + grace));
  server_->Wait();
  // Each call has had its OnDone, so its session has ended: join the threads.
  (void)service_->WaitForTransfers(absl::InfiniteDuration());
}

}  // namespace pkgdist
