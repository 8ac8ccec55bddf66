#include "shared/metrics.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <memory>
#include <string>

#include "absl/time/clock.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "prometheus/counter.h"
#include "prometheus/registry.h"

namespace pkgdist {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

// GET /metrics over HTTP/1.0 (the server closes after the answer).
std::string Scrape(int port) {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
    ::close(fd);
    return "connect failed";
  }
  const std::string request = "GET /metrics HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n";
  (void)!::write(fd, request.data(), request.size());
  std::string response;
  char buf[4096];
  for (ssize_t n; (n = ::read(fd, buf, sizeof(buf))) > 0;) response.append(buf, static_cast<size_t>(n));
  ::close(fd);
  return response;
}

TEST(MetricsServerTest, ServesRegisteredFamiliesOnAPickedPort) {
  // Port 0 binds a free port, reported by port(); a scrape shows the registry.
  auto server = MetricsServer::Start("127.0.0.1:0");
  ASSERT_TRUE(server.ok()) << server.status();
  ASSERT_GT((*server)->port(), 0);
  auto registry = std::make_shared<prometheus::Registry>();
  prometheus::BuildCounter().Name("pkgdist_test_things_total").Help("Things").Register(*registry)
      .Add({}).Increment(3);
  (*server)->Register(registry);
  (*server)->Register(std::make_shared<CallbackCollectable>([] {
    return std::vector<prometheus::MetricFamily>{
        GaugeFamily("pkgdist_test_level", "Level", "state", {{"a", 1}, {"b", 2}})};
  }));
  std::string body = Scrape((*server)->port());
  EXPECT_THAT(body, HasSubstr("200 OK"));
  EXPECT_THAT(body, HasSubstr("# TYPE pkgdist_test_things_total counter\npkgdist_test_things_total 3"));
  EXPECT_THAT(body, HasSubstr("# TYPE pkgdist_test_level gauge\npkgdist_test_level{state=\"a\"} 1\n"
                              "pkgdist_test_level{state=\"b\"} 2"));
}

TEST(MetricsServerTest, StopsAtOnceAfterScrapes) {
  // Destroying the server does not wait out civetweb 1.15's 2 s accept poll.
  for (const char* listen : {"127.0.0.1:0", "0.0.0.0:0"}) {
    auto server = MetricsServer::Start(listen);
    ASSERT_TRUE(server.ok()) << server.status();
    (*server)->Register(std::make_shared<prometheus::Registry>());
    EXPECT_THAT(Scrape((*server)->port()), HasSubstr("200 OK"));
    absl::Time start = absl::Now();
    server->reset();
    EXPECT_LT(absl::Now() - start, absl::Milliseconds(500)) << listen;
  }
}

TEST(MetricsServerTest, RefusesAddressesThatAreNotIpAndPort) {
  // Anything but IPv4:PORT or [IPv6]:PORT is a flag to fix, said so.
  for (const char* bad : {"", "9464", ":9464", "localhost:9464", "127.0.0.1", "127.0.0.1:",
                          "127.0.0.1:65536", "127.0.0.1:-1", "127.0.0.1:+1", "::1:9464",
                          "[::1]", "[nope]:1", "1.2.3:4"}) {
    auto server = MetricsServer::Start(bad);
    EXPECT_EQ(server.status().code(), absl::StatusCode::kInvalidArgument) << bad;
    EXPECT_THAT(server.status().message(), HasSubstr("expected IP:PORT")) << bad;
  }
}

TEST(MetricsServerTest, PortInUseIsUnavailableWithTheReason) {
  // A second server on the same port fails cleanly, naming the cause.
  auto first = MetricsServer::Start("127.0.0.1:0");
  ASSERT_TRUE(first.ok()) << first.status();
  std::string taken = "127.0.0.1:" + std::to_string((*first)->port());
  auto second = MetricsServer::Start(taken);
  EXPECT_EQ(second.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT(second.status().message(), HasSubstr("Address already in use"));
  EXPECT_THAT(second.status().message(), HasSubstr(taken));
}

TEST(MetricsServerTest, ServesOnIpv6Loopback) {
  // [::1]:0 works where the machine has IPv6 loopback.
  auto server = MetricsServer::Start("[::1]:0");
  if (!server.ok() && absl::IsUnavailable(server.status())) {
    GTEST_SKIP() << "no IPv6 loopback here: " << server.status();
  }
  ASSERT_TRUE(server.ok()) << server.status();
  EXPECT_GT((*server)->port(), 0);
}

TEST(MetricsHelpersTest, StatusCodeLabelsAndBuckets) {
  // Codes read as lower-case snake names; buckets grow by the factor.
  EXPECT_EQ(StatusCodeLabel(absl::StatusCode::kOk), "ok");
  EXPECT_EQ(StatusCodeLabel(absl::StatusCode::kDeadlineExceeded), "deadline_exceeded");
  EXPECT_EQ(StatusCodeLabel(absl::StatusCode::kDataLoss), "data_loss");
  EXPECT_EQ(StatusCodeLabel(static_cast<absl::StatusCode>(99)), "unknown");
  EXPECT_THAT(ExponentialBuckets(0.5, 2, 4), ElementsAre(0.5, 1, 2, 4));
}

}  // namespace
}  // namespace pkgdist
