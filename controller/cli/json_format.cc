#include "controller/cli/json_format.h"

#include <map>
#include <string>

#include "controller/cli/display.h"
#include "shared/sha256.h"

namespace pkgdist::cli {
namespace {

Json TimeOrNull(const std::string& rfc3339) {
  if (rfc3339.empty()) return nullptr;
  return rfc3339;
}

}  // namespace

std::string JsonLine(const Json& j) {
  return j.dump(-1, ' ', false, Json::error_handler_t::replace);
}

Json TargetToJson(const pkgdist::v1::TargetStatus& t) {
  Json j;
  j["agent"] = t.agent();
  j["state"] = t.state();
  j["attempts"] = t.attempts();
  j["last_error"] = t.last_error();
  j["next_attempt_at"] = TimeOrNull(t.next_attempt_at());
  j["bytes_acked"] = t.bytes_acked();
  j["bytes_total"] = t.bytes_total();
  j["bytes_sent"] = t.bytes_sent();
  j["bytes_reused"] = t.bytes_reused();
  j["bytes_from_peer"] = t.bytes_from_peer();
  j["updated_at"] = TimeOrNull(t.updated_at());
  return j;
}

Json JobToJson(const pkgdist::v1::JobStatus& job) {
  Json j;
  j["id"] = job.id();
  j["kind"] = job.kind();
  j["package"] = job.package();
  j["state"] = job.state();
  j["created_at"] = TimeOrNull(job.created_at());
  Json targets = Json::array();
  for (const auto& t : job.targets()) targets.push_back(TargetToJson(t));
  j["targets"] = std::move(targets);
  if (!job.store_error().empty()) j["store_error"] = job.store_error();
  return j;
}

Json JobListToJson(const pkgdist::v1::ListJobsResponse& jobs) {
  Json list = Json::array();
  for (const auto& job : jobs.jobs()) list.push_back(JobToJson(job));
  Json j;
  j["jobs"] = std::move(list);
  return j;
}

Json AgentToJson(const pkgdist::v1::AgentInfo& agent) {
  Json j;
  j["name"] = agent.name();
  j["address"] = agent.address();
  j["connection"] = ConnectionStateName(agent.connection());
  j["last_contact"] = TimeOrNull(agent.last_contact());
  j["last_error"] = agent.last_error();
  // By key: a protobuf map iterates in no fixed order, and Json keeps the
  // order keys are added in.
  Json labels = Json::object();
  const std::map<std::string, std::string> sorted(agent.labels().begin(), agent.labels().end());
  for (const auto& [key, value] : sorted) labels[key] = value;
  j["labels"] = std::move(labels);
  j["rate"] = agent.rate().empty() ? "unlimited" : agent.rate();
  return j;
}

Json SiteToJson(const pkgdist::v1::SiteInfo& site) {
  Json j;
  j["name"] = site.name();
  j["rate"] = site.rate();
  j["windows"] = Json::array();
  for (const auto& w : site.windows()) j["windows"].push_back(w);
  j["timezone"] = site.timezone();
  j["max_transfers"] = site.max_transfers();
  j["relay"] = site.relay();
  j["rate_now"] = site.rate_now();
  j["rate_now_until"] = TimeOrNull(site.rate_now_until());
  j["agents"] = Json::array();
  for (const auto& a : site.agents()) j["agents"].push_back(a);
  j["active_transfers"] = site.active_transfers();
  j["bytes_per_second"] = site.bytes_per_second();
  j["bytes_sent"] = site.bytes_sent();
  return j;
}

Json SiteListToJson(const pkgdist::v1::ListSitesResponse& sites) {
  Json list = Json::array();
  for (const auto& s : sites.sites()) list.push_back(SiteToJson(s));
  Json j;
  j["sites"] = std::move(list);
  return j;
}

Json EgressToJson(const pkgdist::v1::EgressInfo& egress) {
  Json j;
  j["rate"] = egress.rate();
  j["bytes_per_second"] = egress.bytes_per_second();
  j["bytes_sent"] = egress.bytes_sent();
  return j;
}

Json AgentListToJson(const pkgdist::v1::ListAgentsResponse& agents) {
  Json list = Json::array();
  for (const auto& a : agents.agents()) list.push_back(AgentToJson(a));
  Json j;
  j["agents"] = std::move(list);
  return j;
}

Json AgentDetailToJson(const pkgdist::v1::AgentDetail& detail) {
  Json j = AgentToJson(detail.agent());
  Json published = Json::array();
  for (const auto& p : detail.inventory().published()) {
    Json e;
    e["name"] = p.name();
    e["version"] = p.version();
    e["id"] = ToHex(p.package_id());
    e["size"] = p.size();
    published.push_back(std::move(e));
  }
  Json partial = Json::array();
  for (const auto& p : detail.inventory().partial()) {
    Json e;
    e["name"] = p.name();
    e["version"] = p.version();
    e["id"] = ToHex(p.package_id());
    e["bytes_total"] = p.bytes_total();
    e["bytes_have"] = p.bytes_have();
    e["chunks_total"] = p.chunks_total();
    e["chunks_have"] = p.chunks_have();
    partial.push_back(std::move(e));
  }
  j["inventory"]["published"] = std::move(published);
  j["inventory"]["partial"] = std::move(partial);
  j["inventory_error"] = detail.inventory_error();
  return j;
}

Json PackageToJson(const pkgdist::v1::PackageInfo& pkg) {
  Json j;
  j["name"] = pkg.name();
  j["version"] = pkg.version();
  j["id"] = pkg.id();
  j["size"] = pkg.size();
  j["files"] = pkg.files();
  j["chunks"] = pkg.chunks();
  j["created_at"] = TimeOrNull(pkg.created_at());
  if (pkg.has_signature()) {
    const auto& sig = pkg.signature();
    j["signature"] = {{"key_id", sig.key_id()},
                      {"sequence", sig.sequence()},
                      {"expires_at", TimeOrNull(sig.expires_at())},
                      {"signed_at", TimeOrNull(sig.signed_at())}};
  } else {
    j["signature"] = nullptr;
  }
  return j;
}

Json PackageListToJson(const pkgdist::v1::ListPackagesResponse& packages) {
  Json list = Json::array();
  for (const auto& p : packages.packages()) list.push_back(PackageToJson(p));
  Json j;
  j["packages"] = std::move(list);
  return j;
}

Json AuditRecordToJson(const pkgdist::v1::AuditRecord& r) {
  Json j;
  j["sequence"] = r.sequence();
  j["time"] = TimeOrNull(r.time());
  j["identity"] = r.identity();
  j["peer"] = r.peer();
  j["method"] = r.method();
  j["request"] = r.request();
  j["code"] = r.code();
  j["message"] = r.message();
  return j;
}

Json AuditListToJson(const pkgdist::v1::ListAuditResponse& audit) {
  Json list = Json::array();
  for (const auto& r : audit.records()) list.push_back(AuditRecordToJson(r));
  Json j;
  j["records"] = std::move(list);
  return j;
}

Json EventToJson(const pkgdist::v1::Event& e) {
  Json j;
  j["sequence"] = e.sequence();
  j["time"] = TimeOrNull(e.time());
  j["kind"] = e.kind();
  j["job_id"] = e.job_id();
  j["job_kind"] = e.job_kind();
  j["package"] = e.package();
  j["package_id"] = e.package_id();
  j["agent"] = e.agent();
  j["address"] = e.address();
  j["state"] = e.state();
  j["target"] = e.has_target() ? TargetToJson(e.target()) : Json(nullptr);
  j["detail"] = e.detail();
  return j;
}

}  // namespace pkgdist::cli
