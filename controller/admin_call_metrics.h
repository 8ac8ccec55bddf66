// Counts the admin API's calls by method and status code
// (pkgdist_controller_admin_calls_total) without touching AdminService: a
// gRPC server interceptor, registered on the controller's server builder
// (ServerBuilder::experimental().SetInterceptorCreators).
//
// Only methods of pkgdist.v1.Admin are counted, each under its name in the
// service ("Distribute"), so the label has as many values as the service
// has methods whatever a client asks for; health and reflection calls are
// not counted.
#ifndef PKGDIST_CONTROLLER_ADMIN_CALL_METRICS_H_
#define PKGDIST_CONTROLLER_ADMIN_CALL_METRICS_H_

#include <memory>

#include <grpcpp/support/server_interceptor.h>

#include "controller/metrics.h"

namespace pkgdist {

// `metrics` must outlive the server the factory is registered on.
std::unique_ptr<grpc::experimental::ServerInterceptorFactoryInterface> MakeAdminCallMetrics(
    ControllerMetrics* metrics);

}  // namespace pkgdist

#endif  // PKGDIST_CONTROLLER_ADMIN_CALL_METRICS_H_
