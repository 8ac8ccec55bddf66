#include "controller/admin_call_metrics.h"

#include <string>

#include <google/protobuf/descriptor.h>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/str_cat.h"
#include "pkgdist/v1/controller.pb.h"

namespace pkgdist {
namespace {

using grpc::experimental::InterceptionHookPoints;

// Counts one call when its status goes out.
class AdminCallInterceptor final : public grpc::experimental::Interceptor {
 public:
  AdminCallInterceptor(ControllerMetrics* metrics, const std::string* method)
      : metrics_(metrics), method_(method) {}

  void Intercept(grpc::experimental::InterceptorBatchMethods* methods) override {
    if (methods->QueryInterceptionHookPoint(InterceptionHookPoints::PRE_SEND_STATUS)) {
      metrics_->AdminCallEnded(*method_, methods->GetSendStatus().error_code());
    }
    methods->Proceed();
  }

 private:
  ControllerMetrics* metrics_;
  const std::string* method_;  // owned by the factory
};

class AdminCallMetricsFactory final
    : public grpc::experimental::ServerInterceptorFactoryInterface {
 public:
  explicit AdminCallMetricsFactory(ControllerMetrics* metrics) : metrics_(metrics) {
    // "/pkgdist.v1.Admin/Distribute" -> "Distribute", for every method the
    // service has (the generated descriptor is linked with the service).
    pkgdist::v1::AgentInfo::descriptor();  // makes sure the file's descriptors are built
    const auto* service = google::protobuf::DescriptorPool::generated_pool()->FindServiceByName(
        "pkgdist.v1.Admin");
    if (service == nullptr) return;
    for (int i = 0; i < service->method_count(); ++i) {
      const std::string& name = service->method(i)->name();
      methods_.emplace(absl::StrCat("/", service->full_name(), "/", name), name);
      metrics_->AdminMethodKnown(name);
    }
  }

  grpc::experimental::Interceptor* CreateServerInterceptor(
      grpc::experimental::ServerRpcInfo* info) override {
    auto it = methods_.find(info->method() != nullptr ? info->method() : "");
    if (it == methods_.end()) return nullptr;  // not an admin call
    return new AdminCallInterceptor(metrics_, &it->second);
  }

 private:
  ControllerMetrics* metrics_;
  absl::flat_hash_map<std::string, std::string> methods_;  // full path -> name; const after construction
};

}  // namespace

std::unique_ptr<grpc::experimental::ServerInterceptorFactoryInterface> MakeAdminCallMetrics(
    ControllerMetrics* metrics) {
  return std::make_unique<AdminCallMetricsFactory>(metrics);
}

}  // namespace pkgdist
