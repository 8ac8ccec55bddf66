// The JSON documents `--output json` prints: stable snake_case fields, in
// a fixed order, timestamps as RFC 3339 strings or null when unset. These
// shapes are a contract with users' scripts (docs/architecture.md, "Command lines").
#ifndef PKGDIST_CONTROLLER_CLI_JSON_FORMAT_H_
#define PKGDIST_CONTROLLER_CLI_JSON_FORMAT_H_

#include <string>

#include "nlohmann/json.hpp"
#include "pkgdist/v1/controller.pb.h"

namespace pkgdist::cli {

using Json = nlohmann::ordered_json;

// One line of compact JSON (no trailing newline). Invalid UTF-8 in a string
// is replaced rather than thrown on.
std::string JsonLine(const Json& j);

// {"agent","state","attempts","last_error","next_attempt_at","bytes_acked",
//  "bytes_total","bytes_sent","bytes_reused","bytes_from_peer","updated_at"}
Json TargetToJson(const pkgdist::v1::TargetStatus& t);
// {"id","kind","package","state","created_at","targets":[...]}
Json JobToJson(const pkgdist::v1::JobStatus& job);
// {"jobs":[...]}
Json JobListToJson(const pkgdist::v1::ListJobsResponse& jobs);

// {"name","address","connection","last_contact","last_error","labels","rate"}
Json AgentToJson(const pkgdist::v1::AgentInfo& agent);
// {"name","rate","windows":[...],"timezone","max_transfers","relay" (""
//  for auto),"rate_now","rate_now_until" (null: no change due),"agents":[...],"active_transfers",
//  "bytes_per_second","bytes_sent"}
Json SiteToJson(const pkgdist::v1::SiteInfo& site);
// {"sites":[...]}
Json SiteListToJson(const pkgdist::v1::ListSitesResponse& sites);
// {"rate","bytes_per_second","bytes_sent"}
Json EgressToJson(const pkgdist::v1::EgressInfo& egress);
// {"agents":[...]}
Json AgentListToJson(const pkgdist::v1::ListAgentsResponse& agents);
// The agent's fields, then "inventory": {"published":[{"name","version",
// "id","size"}], "partial":[{"name","version","id","bytes_total",
// "bytes_have","chunks_total","chunks_have"}]} and "inventory_error"
// ("" when the inventory was fetched). Package ids are hex.
Json AgentDetailToJson(const pkgdist::v1::AgentDetail& detail);

// {"name","version","id","size","files","chunks","created_at"}
Json PackageToJson(const pkgdist::v1::PackageInfo& pkg);
// {"packages":[...]}
Json PackageListToJson(const pkgdist::v1::ListPackagesResponse& packages);

// {"sequence","time","identity","peer","method","request","code","message"}
Json AuditRecordToJson(const pkgdist::v1::AuditRecord& r);
// {"records":[...]}
Json AuditListToJson(const pkgdist::v1::ListAuditResponse& audit);

// {"sequence","time","kind","job_id","job_kind","package","package_id",
//  "agent","address","state","target": target or null,"detail"}
Json EventToJson(const pkgdist::v1::Event& e);

}  // namespace pkgdist::cli

#endif  // PKGDIST_CONTROLLER_CLI_JSON_FORMAT_H_
