#include "shared/tls.h"

#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace pkgdist {
namespace {

using ::testing::HasSubstr;

TEST(ParseSpiffeIdTest, ParsesTheThreeKinds) {
  // controller, agent/NAME and admin/WHO parse into their parts and print back.
  absl::StatusOr<SpiffeId> c = ParseSpiffeId("spiffe://example.org/controller");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->trust_domain, "example.org");
  EXPECT_EQ(c->kind, "controller");
  EXPECT_EQ(c->name, "");
  EXPECT_EQ(c->ToString(), "spiffe://example.org/controller");

  absl::StatusOr<SpiffeId> a = ParseSpiffeId("spiffe://pkgdist.test/agent/dp-01");
  ASSERT_TRUE(a.ok()) << a.status();
  EXPECT_EQ(a->trust_domain, "pkgdist.test");
  EXPECT_EQ(a->kind, "agent");
  EXPECT_EQ(a->name, "dp-01");
  EXPECT_EQ(a->ToString(), "spiffe://pkgdist.test/agent/dp-01");

  absl::StatusOr<SpiffeId> w = ParseSpiffeId("spiffe://td/admin/ci_bot");
  ASSERT_TRUE(w.ok()) << w.status();
  EXPECT_EQ(w->kind, "admin");
  EXPECT_EQ(w->name, "ci_bot");
}

class BadSpiffeIdTest : public ::testing::TestWithParam<std::string> {};

TEST_P(BadSpiffeIdTest, IsRejectedNamingTheIdentity) {
  // Anything but the three shapes is INVALID_ARGUMENT quoting the URI.
  absl::StatusOr<SpiffeId> id = ParseSpiffeId(GetParam());
  EXPECT_EQ(id.status().code(), absl::StatusCode::kInvalidArgument) << GetParam();
  EXPECT_THAT(id.status().message(), HasSubstr("identity \"" + GetParam() + "\""));
}

INSTANTIATE_TEST_SUITE_P(
    Cases, BadSpiffeIdTest,
    ::testing::Values("", "example.org/agent/dp1", "https://example.org/agent/dp1",
                      "SPIFFE://example.org/agent/dp1", "spiffe://", "spiffe://example.org",
                      "spiffe:///agent/dp1", "spiffe://example.org/controller/extra",
                      "spiffe://example.org/agent", "spiffe://example.org/agent/",
                      "spiffe://example.org/agent/dp1/extra", "spiffe://example.org/admin",
                      "spiffe://example.org/superuser/dp1", "spiffe://example.org/Agent/dp1",
                      "spiffe://example.org/agent/..", "spiffe://example.org/agent/-dp1",
                      "spiffe://example.org/agent/dp 1"));

}  // namespace
}  // namespace pkgdist
