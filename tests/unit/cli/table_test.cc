#include "controller/cli/table.h"

#include <gtest/gtest.h>

#include "tests/unit/cli/test_jobs.h"

namespace pkgdist::cli {
namespace {

using testing::TwoTargetJob;

TEST(TextTableTest, AlignsColumnsAndTrimsTrailingSpace) {
  // Columns are as wide as their widest cell plus two spaces; lines do not end in spaces.
  TextTable t({"NAME", "STATE", "NOTE"});
  t.AddRow({"dp1", "ready", ""});
  t.AddRow({"dp-long", "x"});
  EXPECT_EQ(t.Render(),
            "NAME     STATE  NOTE\n"
            "dp1      ready\n"
            "dp-long  x\n");
}

TEST(TextTableTest, CountsUtf8CodePointsAndFlattensNewlines) {
  // Multi-byte characters take one column; a newline in a cell cannot break the table.
  TextTable t({"A", "B"});
  t.AddRow({"é", "two\nlines"});
  t.AddRow({"ab", "x"});
  EXPECT_EQ(t.Render(),
            "A   B\n"
            "é   two lines\n"
            "ab  x\n");
}

TEST(TableTest, RendersAJobWithItsTargets) {
  // A job shows its summary, then one row per target with progress, bytes
  // sent, reused and fetched from a peer, and error.
  EXPECT_EQ(RenderJob(TwoTargetJob()),
            "job:      j-1\n"
            "kind:     distribute\n"
            "package:  app@1.0\n"
            "state:    in_progress (1/2 targets done)\n"
            "created:  2026-01-02T03:00:00.000Z\n"
            "\n"
            "AGENT  STATE       ATTEMPTS  PROGRESS              SENT     REUSED     FROM PEER  "
            "NEXT ATTEMPT              LAST ERROR\n"
            "dp1    done        1         3.0 MiB/3.0 MiB 100%  3.0 MiB  0 B        0 B        -"
            "                         -\n"
            "dp2    retry_wait  3         1.0 MiB/3.0 MiB 33%   2.0 MiB  512.0 KiB  256.0 KiB  "
            "2026-01-02T03:04:35.000Z  connection refused\n");
}

TEST(TableTest, RendersAJobList) {
  // The list shows done/total targets per job.
  pkgdist::v1::ListJobsResponse jobs;
  *jobs.add_jobs() = TwoTargetJob();
  EXPECT_EQ(RenderJobList(jobs),
            "ID   KIND        PACKAGE  STATE        DONE  CREATED\n"
            "j-1  distribute  app@1.0  in_progress  1/2   2026-01-02T03:00:00.000Z\n");
}

TEST(TableTest, RendersAuditRecordsWithShortIdentities) {
  // WHO drops spiffe://TRUST_DOMAIN/; empty cells are dashes.
  pkgdist::v1::ListAuditResponse audit;
  auto* r = audit.add_records();
  r->set_time("2026-01-02T03:04:05.000Z");
  r->set_identity("spiffe://pkgdist.dev/agent/dp1");
  r->set_method("ListAgents");
  r->set_code("PERMISSION_DENIED");
  r->set_message("refused");
  EXPECT_EQ(RenderAuditList(audit),
            "TIME                      WHO        METHOD      REQUEST  CODE               MESSAGE\n"
            "2026-01-02T03:04:05.000Z  agent/dp1  ListAgents  -        PERMISSION_DENIED  refused\n");
}

TEST(TableTest, RendersOneLinePerEventInFixedColumns) {
  // Time, sequence, kind, subject, then what changed; the columns line up
  // with the header whatever the event.
  pkgdist::v1::Event e;
  e.set_sequence(17);
  e.set_time("2026-01-02T03:04:05.000Z");
  e.set_kind("target_changed");
  e.set_job_id("j-1");
  e.set_agent("dp2");
  *e.mutable_target() = TwoTargetJob().targets(1);
  std::string header = EventHeaderLine();
  std::string line = RenderEventLine(e);
  // Columns of 24, 8, 16 and 38 characters, two spaces apart.
  EXPECT_EQ(line, "2026-01-02T03:04:05.000Z  17" + std::string(6 + 2, ' ') + "target_changed" +
                      std::string(2 + 2, ' ') + "job j-1 dp2" + std::string(27 + 2, ' ') +
                      "retry_wait (attempt 3) next 2026-01-02T03:04:35.000Z: connection "
                      "refused\n");
  EXPECT_EQ(header.find("STATE/DETAIL"), line.find("retry_wait"));
  pkgdist::v1::Event agent;
  agent.set_sequence(2);
  agent.set_kind("agent_added");
  agent.set_agent("dp1");
  agent.set_address("h:7701");
  EXPECT_NE(RenderEventLine(agent).find("agent dp1"), std::string::npos);
  EXPECT_EQ(RenderEventLine(agent).find("h:7701"), header.find("STATE/DETAIL"));
  // A change says what changed; a limit change has only its detail.
  agent.set_kind("agent_updated");
  agent.set_detail("rate 5MB/s");
  EXPECT_NE(RenderEventLine(agent).find("h:7701, rate 5MB/s"), std::string::npos);
  pkgdist::v1::Event limits;
  limits.set_kind("limits_changed");
  limits.set_detail("site fra: rate 20MB/s");
  const std::string line_of_limits = RenderEventLine(limits);
  EXPECT_EQ(line_of_limits.find("site fra: rate 20MB/s"), header.find("STATE/DETAIL"));
}

TEST(TableTest, ProgressCellWithoutTotalIsADash) {
  // A removal job has no bytes to move.
  EXPECT_EQ(ProgressCell(0, 0), "-");
  EXPECT_EQ(ProgressCell(512, 1024), "512 B/1.0 KiB 50%");
}

TEST(TableTest, SitesShowTheirRelayOrAuto) {
  // `site list` has a RELAY column and `site show` a relay line; a site
  // without one reads "auto".
  pkgdist::v1::ListSitesResponse sites;
  auto* fra = sites.add_sites();
  fra->set_name("fra");
  fra->add_agents("fra1");
  fra->add_agents("fra2");
  fra->set_relay("fra1");
  fra->set_rate("20MB/s");
  fra->set_rate_now("20MB/s");
  fra->set_timezone("UTC");
  auto* muc = sites.add_sites();
  muc->set_name("muc");
  muc->add_agents("muc1");
  muc->set_rate("unlimited");
  muc->set_rate_now("unlimited");
  muc->set_timezone("UTC");
  EXPECT_EQ(RenderSiteList(sites),
            "SITE  AGENTS  RELAY  RATE NOW   TRANSFERS  SENDING  SENT\n"
            "fra   2       fra1   20MB/s     0          0 B/s    0 B\n"
            "muc   1       auto   unlimited  0          0 B/s    0 B\n");
  EXPECT_NE(RenderSite(*fra).find("\nrelay:          fra1\n"), std::string::npos)
      << RenderSite(*fra);
  EXPECT_NE(RenderSite(*muc).find("\nrelay:          auto\n"), std::string::npos)
      << RenderSite(*muc);
}

TEST(TableTest, AgentDetailSaysWhyTheInventoryIsMissing) {
  // An unreachable agent shows the inventory error instead of empty tables.
  pkgdist::v1::AgentDetail d;
  d.mutable_agent()->set_name("dp1");
  d.set_inventory_error("agent unreachable");
  std::string s = RenderAgentDetail(d);
  EXPECT_NE(s.find("inventory unavailable: agent unreachable"), std::string::npos) << s;
  EXPECT_EQ(s.find("PUBLISHED"), std::string::npos) << s;
}

TEST(TableTest, AgentDetailWithNothingPublishedSaysSoInsteadOfAnEmptyTable) {
  // A bare header with no rows reads like a rendering bug; say what it means.
  pkgdist::v1::AgentDetail d;
  d.mutable_agent()->set_name("dp1");
  auto* partial = d.mutable_inventory()->add_partial();
  partial->set_name("app");
  partial->set_version("2.0");
  partial->set_bytes_have(512);
  partial->set_bytes_total(1024);
  std::string s = RenderAgentDetail(d);
  EXPECT_NE(s.find("no packages published"), std::string::npos) << s;
  EXPECT_EQ(s.find("PUBLISHED"), std::string::npos) << s;
  EXPECT_NE(s.find("PARTIAL"), std::string::npos) << s;
  EXPECT_NE(s.find("512 B/1.0 KiB 50%"), std::string::npos) << s;
}

}  // namespace
}  // namespace pkgdist::cli
