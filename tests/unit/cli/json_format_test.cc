#include "controller/cli/json_format.h"

#include <gtest/gtest.h>

#include "tests/unit/cli/test_jobs.h"

namespace pkgdist::cli {
namespace {

using testing::TwoTargetJob;

TEST(JsonFormatTest, JobHasTheDocumentedShape) {
  // A job prints exactly the documented fields (json_format.h, docs/architecture.md),
  // in this order, on one line.
  EXPECT_EQ(JsonLine(JobToJson(TwoTargetJob())),
            R"({"id":"j-1","kind":"distribute","package":"app@1.0","state":"in_progress",)"
            R"("created_at":"2026-01-02T03:00:00.000Z","targets":[)"
            R"({"agent":"dp1","state":"done","attempts":1,"last_error":"",)"
            R"("next_attempt_at":null,"bytes_acked":3145728,"bytes_total":3145728,)"
            R"("bytes_sent":3145728,"bytes_reused":0,"bytes_from_peer":0,)"
            R"("updated_at":"2026-01-02T03:04:05.000Z"},)"
            R"({"agent":"dp2","state":"retry_wait","attempts":3,)"
            R"("last_error":"connection refused","next_attempt_at":"2026-01-02T03:04:35.000Z",)"
            R"("bytes_acked":1048576,"bytes_total":3145728,"bytes_sent":2097152,)"
            R"("bytes_reused":524288,"bytes_from_peer":262144,)"
            R"("updated_at":"2026-01-02T03:04:05.000Z"}]})");
}

TEST(JsonFormatTest, JobWithoutTargetsHasAnEmptyArray) {
  // "targets" is always an array, never null or missing.
  pkgdist::v1::JobStatus job;
  job.set_id("j");
  Json j = JobToJson(job);
  ASSERT_TRUE(j["targets"].is_array());
  EXPECT_TRUE(j["targets"].empty());
  EXPECT_TRUE(j["created_at"].is_null());
}

TEST(JsonFormatTest, ListsWrapTheirItems) {
  // Lists are objects with one array member named for what they hold.
  pkgdist::v1::ListJobsResponse jobs;
  *jobs.add_jobs() = TwoTargetJob();
  EXPECT_EQ(JobListToJson(jobs)["jobs"][0]["id"], "j-1");
  pkgdist::v1::ListPackagesResponse packages;
  packages.add_packages()->set_name("app");
  EXPECT_EQ(PackageListToJson(packages)["packages"][0]["name"], "app");
  pkgdist::v1::ListAgentsResponse agents;
  EXPECT_TRUE(AgentListToJson(agents)["agents"].is_array());
}

TEST(JsonFormatTest, AgentShowsConnectionByNameAndNullLastContact) {
  // The connection state is a lower-case name; a never-contacted agent has null.
  pkgdist::v1::AgentInfo a;
  a.set_name("dp1");
  a.set_address("10.0.0.1:7001");
  a.set_connection(pkgdist::v1::CONNECTION_STATE_UNREACHABLE);
  a.set_last_error("connection refused");
  EXPECT_EQ(JsonLine(AgentToJson(a)),
            R"({"name":"dp1","address":"10.0.0.1:7001","connection":"unreachable",)"
            R"("last_contact":null,"last_error":"connection refused","labels":{},)"
            R"("rate":"unlimited"})");
  // Labels are an object sorted by key.
  (*a.mutable_labels())["tier"] = "edge";
  (*a.mutable_labels())["site"] = "fra";
  EXPECT_EQ(AgentToJson(a)["labels"].dump(), R"({"site":"fra","tier":"edge"})");
}

TEST(JsonFormatTest, AgentShowsItsOwnRateAndUnlimitedWhenNoneIsGiven) {
  // "rate" comes last, as the controller sent it; an empty field (an older
  // controller) reads as "unlimited".
  pkgdist::v1::AgentInfo a;
  a.set_name("dp1");
  EXPECT_EQ(AgentToJson(a)["rate"], "unlimited");
  a.set_rate("5MB/s");
  Json j = AgentToJson(a);
  EXPECT_EQ(j["rate"], "5MB/s");
  EXPECT_EQ(j.back(), "5MB/s");
  a.set_rate("paused");
  EXPECT_EQ(AgentToJson(a)["rate"], "paused");
  pkgdist::v1::ListAgentsResponse agents;
  *agents.add_agents() = a;
  EXPECT_EQ(AgentListToJson(agents)["agents"][0]["rate"], "paused");
}

TEST(JsonFormatTest, SiteHasTheDocumentedShape) {
  // Every field, in the documented order (json_format.h); windows and
  // agents are arrays, a rate_now_until of "" is null.
  pkgdist::v1::SiteInfo site;
  site.set_name("fra");
  site.set_rate("20MB/s");
  site.add_windows("mon-fri 08:00-18:00 paused");
  site.add_windows("sat,sun 00:00-24:00 unlimited");
  site.set_timezone("Europe/Berlin");
  site.set_max_transfers(3);
  site.set_relay("fra1");
  site.set_rate_now("paused");
  site.set_rate_now_until("2026-01-02T17:00:00.000Z");
  site.add_agents("fra1");
  site.add_agents("fra2");
  site.set_active_transfers(2);
  site.set_bytes_per_second(19'800'000);
  site.set_bytes_sent(123'456'789);
  EXPECT_EQ(JsonLine(SiteToJson(site)),
            R"({"name":"fra","rate":"20MB/s",)"
            R"("windows":["mon-fri 08:00-18:00 paused","sat,sun 00:00-24:00 unlimited"],)"
            R"("timezone":"Europe/Berlin","max_transfers":3,"relay":"fra1","rate_now":"paused",)"
            R"("rate_now_until":"2026-01-02T17:00:00.000Z","agents":["fra1","fra2"],)"
            R"("active_transfers":2,"bytes_per_second":19800000,"bytes_sent":123456789})");
  // A site with nothing set: empty arrays, a null until and relay "" (auto).
  pkgdist::v1::SiteInfo bare;
  bare.set_name("muc");
  bare.set_rate("unlimited");
  bare.set_timezone("UTC");
  bare.set_rate_now("unlimited");
  EXPECT_EQ(JsonLine(SiteToJson(bare)),
            R"({"name":"muc","rate":"unlimited","windows":[],"timezone":"UTC",)"
            R"("max_transfers":0,"relay":"","rate_now":"unlimited","rate_now_until":null,)"
            R"("agents":[],)"
            R"("active_transfers":0,"bytes_per_second":0,"bytes_sent":0})");
  pkgdist::v1::ListSitesResponse sites;
  *sites.add_sites() = bare;
  *sites.add_sites() = site;
  Json list = SiteListToJson(sites);
  ASSERT_TRUE(list["sites"].is_array());
  ASSERT_EQ(list["sites"].size(), 2u);
  EXPECT_EQ(list["sites"][0]["name"], "muc");
  EXPECT_EQ(list["sites"][1]["name"], "fra");
  EXPECT_TRUE(SiteListToJson(pkgdist::v1::ListSitesResponse())["sites"].is_array());
}

TEST(JsonFormatTest, EgressHasTheDocumentedShape) {
  // rate, bytes_per_second, bytes_sent, in that order.
  pkgdist::v1::EgressInfo egress;
  egress.set_rate("1GiB/s");
  egress.set_bytes_per_second(950'000);
  egress.set_bytes_sent(42);
  EXPECT_EQ(JsonLine(EgressToJson(egress)),
            R"({"rate":"1GiB/s","bytes_per_second":950000,"bytes_sent":42})");
}

TEST(JsonFormatTest, AgentDetailPrintsPackageIdsInHex) {
  // Raw package ids from the agent's inventory are printed as hex.
  pkgdist::v1::AgentDetail d;
  d.mutable_agent()->set_name("dp1");
  auto* p = d.mutable_inventory()->add_published();
  p->set_name("app");
  p->set_version("1.0");
  p->set_package_id(std::string("\x01\xab\xff", 3));
  p->set_size(42);
  auto* q = d.mutable_inventory()->add_partial();
  q->set_name("app");
  q->set_version("2.0");
  q->set_package_id(std::string("\x10", 1));
  q->set_bytes_total(100);
  q->set_bytes_have(40);
  q->set_chunks_total(4);
  q->set_chunks_have(1);
  Json j = AgentDetailToJson(d);
  EXPECT_EQ(j["name"], "dp1");
  EXPECT_EQ(JsonLine(j["inventory"]),
            R"({"published":[{"name":"app","version":"1.0","id":"01abff","size":42}],)"
            R"("partial":[{"name":"app","version":"2.0","id":"10","bytes_total":100,)"
            R"("bytes_have":40,"chunks_total":4,"chunks_have":1}]})");
  EXPECT_EQ(j["inventory_error"], "");
}

TEST(JsonFormatTest, PackageHasTheDocumentedShape) {
  // An imported package prints name, version, id, size, files, chunks, created_at,
  // signature.
  pkgdist::v1::PackageInfo p;
  p.set_name("app");
  p.set_version("1.0");
  p.set_id("abcd");
  p.set_size(10);
  p.set_files(2);
  p.set_chunks(1);
  p.set_created_at("2026-01-02T03:00:00.000Z");
  EXPECT_EQ(JsonLine(PackageToJson(p)),
            R"({"name":"app","version":"1.0","id":"abcd","size":10,"files":2,"chunks":1,)"
            R"("created_at":"2026-01-02T03:00:00.000Z","signature":null})");
  // A signed one adds who signed it and its terms.
  auto* sig = p.mutable_signature();
  sig->set_key_id("0123456789abcdef");
  sig->set_sequence(7);
  sig->set_expires_at("2027-01-02T03:00:00.000Z");
  sig->set_signed_at("2026-01-02T03:00:00.000Z");
  EXPECT_EQ(JsonLine(PackageToJson(p)["signature"]),
            R"({"key_id":"0123456789abcdef","sequence":7,)"
            R"("expires_at":"2027-01-02T03:00:00.000Z","signed_at":"2026-01-02T03:00:00.000Z"})");
}

TEST(JsonFormatTest, EventAndAuditRecordHaveTheDocumentedShape) {
  // Every field, in the documented order; an event without a target has
  // "target": null.
  pkgdist::v1::Event e;
  e.set_sequence(17);
  e.set_time("2026-01-02T03:04:05.000Z");
  e.set_kind("target_changed");
  e.set_job_id("j-1");
  e.set_package("app@1.0");
  e.set_agent("dp2");
  e.set_state("retry_wait");
  *e.mutable_target() = TwoTargetJob().targets(1);
  EXPECT_EQ(JsonLine(EventToJson(e)),
            R"({"sequence":17,"time":"2026-01-02T03:04:05.000Z","kind":"target_changed",)"
            R"("job_id":"j-1","job_kind":"","package":"app@1.0","package_id":"","agent":"dp2",)"
            R"("address":"","state":"retry_wait","target":{"agent":"dp2","state":"retry_wait",)"
            R"("attempts":3,"last_error":"connection refused",)"
            R"("next_attempt_at":"2026-01-02T03:04:35.000Z","bytes_acked":1048576,)"
            R"("bytes_total":3145728,"bytes_sent":2097152,"bytes_reused":524288,)"
            R"("bytes_from_peer":262144,"updated_at":"2026-01-02T03:04:05.000Z"},"detail":""})");
  e.clear_target();
  EXPECT_TRUE(EventToJson(e)["target"].is_null());
  pkgdist::v1::ListAuditResponse audit;
  auto* r = audit.add_records();
  r->set_sequence(3);
  r->set_time("2026-01-02T03:04:05.000Z");
  r->set_identity("spiffe://pkgdist.dev/admin/alice");
  r->set_peer("ipv4:127.0.0.1:5000");
  r->set_method("CancelJob");
  r->set_request("job=j-1");
  r->set_code("OK");
  r->set_message("1 target(s) cancelled");
  EXPECT_EQ(JsonLine(AuditListToJson(audit)),
            R"({"records":[{"sequence":3,"time":"2026-01-02T03:04:05.000Z",)"
            R"("identity":"spiffe://pkgdist.dev/admin/alice","peer":"ipv4:127.0.0.1:5000",)"
            R"("method":"CancelJob","request":"job=j-1","code":"OK",)"
            R"("message":"1 target(s) cancelled"}]})");
}

TEST(JsonFormatTest, InvalidUtf8DoesNotThrow) {
  // A malformed string from the network is replaced, not fatal.
  pkgdist::v1::TargetStatus t;
  t.set_last_error(std::string("bad \xff byte"));
  EXPECT_NO_THROW(JsonLine(TargetToJson(t)));
}

}  // namespace
}  // namespace pkgdist::cli
