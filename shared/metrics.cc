#include "shared/metrics.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstring>
#include <exception>
#include <thread>

#include "CivetServer.h"
#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "prometheus/exposer.h"
#include "shared/logging.h"

namespace pkgdist {
namespace {

// civetweb reports why it cannot bind only through its log callback, on
// the thread that starts it: Start() collects those lines here.
thread_local std::string* startup_errors = nullptr;

int LogCivetMessage(const mg_connection* /*conn*/, const char* message) {
  if (startup_errors != nullptr) {
    if (!startup_errors->empty()) startup_errors->append("; ");
    startup_errors->append(message);
  } else {
    spdlog::debug("metrics endpoint: {}", message);
  }
  return 1;  // handled: civetweb prints nothing itself
}

absl::Status CheckListenAddress(const std::string& listen) {
  auto bad = [&] {
    return absl::InvalidArgumentError(absl::StrCat(
        "--metrics-listen \"", listen,
        "\": expected IP:PORT, e.g. 127.0.0.1:9464 or [::1]:9464 (port 0 picks one)"));
  };
  size_t colon = listen.rfind(':');
  if (colon == std::string::npos || colon == 0) return bad();
  std::string host = listen.substr(0, colon);
  int port = -1;
  if (!absl::SimpleAtoi(listen.substr(colon + 1), &port) || port < 0 || port > 65535 ||
      !absl::ascii_isdigit(static_cast<unsigned char>(listen[colon + 1]))) {
    return bad();
  }
  unsigned char addr[16];
  if (host.size() > 2 && host.front() == '[' && host.back() == ']') {
    if (inet_pton(AF_INET6, host.substr(1, host.size() - 2).c_str(), addr) != 1) return bad();
  } else if (inet_pton(AF_INET, host.c_str(), addr) != 1) {
    return bad();
  }
  return absl::OkStatus();
}

// Opens and closes one TCP connection to host:port (an IP literal, IPv6
// in brackets), ignoring failures.
void Knock(const std::string& host, int port) {
  sockaddr_storage addr{};
  socklen_t len = 0;
  if (host.size() > 2 && host.front() == '[') {
    auto* a6 = reinterpret_cast<sockaddr_in6*>(&addr);
    a6->sin6_family = AF_INET6;
    a6->sin6_port = htons(static_cast<uint16_t>(port));
    if (inet_pton(AF_INET6, host.substr(1, host.size() - 2).c_str(), &a6->sin6_addr) != 1) return;
    len = sizeof(*a6);
  } else {
    auto* a4 = reinterpret_cast<sockaddr_in*>(&addr);
    a4->sin_family = AF_INET;
    a4->sin_port = htons(static_cast<uint16_t>(port));
    if (inet_pton(AF_INET, host.c_str(), &a4->sin_addr) != 1) return;
    len = sizeof(*a4);
  }
  int fd = ::socket(addr.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return;
  (void)::connect(fd, reinterpret_cast<sockaddr*>(&addr), len);
  ::close(fd);
}

}  // namespace

absl::StatusOr<std::unique_ptr<MetricsServer>> MetricsServer::Start(const std::string& listen) {
  if (absl::Status s = CheckListenAddress(listen); !s.ok()) return s;
  std::unique_ptr<MetricsServer> server(new MetricsServer());
  CivetCallbacks callbacks;
  callbacks.log_message = LogCivetMessage;
  std::string errors;
  startup_errors = &errors;
  try {
    server->exposer_ = std::make_unique<prometheus::Exposer>(listen, /*num_threads=*/2, &callbacks);
  } catch (const std::exception& e) {
    startup_errors = nullptr;
    return absl::UnavailableError(absl::StrCat("cannot serve metrics on ", listen, ": ",
                                               errors.empty() ? e.what() : errors));
  }
  startup_errors = nullptr;
  std::vector<int> ports = server->exposer_->GetListeningPorts();
  if (ports.empty() || ports.front() <= 0) {
    return absl::UnavailableError(absl::StrCat("cannot serve metrics on ", listen,
                                               ": no port bound"));
  }
  server->port_ = ports.front();
  std::string host = listen.substr(0, listen.rfind(':'));
  server->wake_host_ = host == "0.0.0.0" ? "127.0.0.1" : host == "[::]" ? "[::1]" : host;
  return server;
}

MetricsServer::~MetricsServer() {
  if (exposer_ == nullptr) return;
  // civetweb 1.15's mg_stop() waits for its accept loop, which notices the
  // stop only when its poll() returns: after up to 2 s without a connection
  // (civetweb issue #1163, fixed in 1.16). Knocking on the port while it
  // stops wakes the poll, so a stop takes milliseconds, not 2 s.
  std::atomic<bool> stopped{false};
  std::thread knocker([&] {
    while (!stopped.load()) {
      Knock(wake_host_, port_);
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
  });
  exposer_.reset();
  stopped.store(true);
  knocker.join();
}

void MetricsServer::Register(std::shared_ptr<prometheus::Collectable> collectable) {
  exposer_->RegisterCollectable(collectable);
  collectables_.push_back(std::move(collectable));
}

prometheus::MetricFamily GaugeFamily(std::string name, std::string help, absl::string_view label,
                                     const std::vector<std::pair<std::string, double>>& values) {
  prometheus::MetricFamily f;
  f.name = std::move(name);
  f.help = std::move(help);
  f.type = prometheus::MetricType::Gauge;
  for (const auto& [label_value, value] : values) {
    prometheus::ClientMetric m;
    if (!label.empty()) m.label.push_back({std::string(label), label_value});
    m.gauge.value = value;
    f.metric.push_back(std::move(m));
  }
  return f;
}

std::string StatusCodeLabel(absl::StatusCode code) {
  std::string name = absl::AsciiStrToLower(absl::StatusCodeToString(code));
  return name.empty() ? "unknown" : name;  // a code outside the canonical 17
}

prometheus::Histogram::BucketBoundaries ExponentialBuckets(double start, double factor, int count) {
  prometheus::Histogram::BucketBoundaries b;
  double v = start;
  for (int i = 0; i < count; ++i, v *= factor) b.push_back(v);
  return b;
}

}  // namespace pkgdist
