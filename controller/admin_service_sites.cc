// AdminService, continued: bandwidth policy (sites, agents' own limits, the
// egress limit). Each change is stored first, then handed to the engine's
// limits, which running transfers read at their next message.
#include <map>
#include <set>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/time/time.h"
#include "controller/admin_service.h"
#include "shared/logging.h"
#include "shared/paths.h"
#include "shared/status_macros.h"

namespace pkgdist {
namespace {

using grpc::Status;

constexpr size_t kAgentBatch = 1000;
// What one request may carry (a site has a handful of windows).
constexpr int kMaxWindows = 32;
// SetSiteRequest.relay that lets the controller choose (as "" does).
constexpr absl::string_view kAutoRelay = "auto";

// The sites' agents, by site, each list by name: one pass over the agents.
absl::StatusOr<std::map<std::string, std::vector<std::string>>> SiteMembers(StateStore& store) {
  std::map<std::string, std::vector<std::string>> out;
  std::string after;
  while (true) {
    absl::StatusOr<std::vector<AgentRow>> agents = store.ListAgents("", after, kAgentBatch);
    if (!agents.ok()) return agents.status();
    for (const AgentRow& a : *agents) {
      if (std::string site = SiteOf(a.labels); !site.empty()) out[site].push_back(a.name);
    }
    if (agents->size() < kAgentBatch) break;
    after = agents->back().name;
  }
  return out;
}

// The parsers' messages name the field and the text already.
Status Invalid(const absl::Status& s) {
  return Status(grpc::StatusCode::INVALID_ARGUMENT, std::string(s.message()));
}

// `req` applied to `policy`; INVALID_ARGUMENT naming the bad field.
Status ApplySiteRequest(const v1::SetSiteRequest& req, SitePolicy& policy) {
  if (req.has_rate()) {
    absl::StatusOr<Rate> rate = ParseRate(req.rate());
    if (!rate.ok()) return Invalid(rate.status());
    policy.rate = *rate;
  }
  if (req.set_windows()) {
    if (req.windows_size() > kMaxWindows) {
      return Status(grpc::StatusCode::INVALID_ARGUMENT,
                    absl::StrCat("windows: at most ", kMaxWindows, " per site"));
    }
    policy.windows.clear();
    for (const std::string& text : req.windows()) {
      absl::StatusOr<Window> w = ParseWindow(text);
      if (!w.ok()) return Invalid(w.status());
      policy.windows.push_back(*w);
    }
  } else if (req.windows_size() > 0) {
    return Status(grpc::StatusCode::INVALID_ARGUMENT, "windows given without set_windows");
  }
  if (req.has_timezone()) {
    absl::StatusOr<absl::TimeZone> zone = LoadZone(req.timezone());
    if (!zone.ok()) return Invalid(zone.status());
    policy.timezone = req.timezone();
  }
  if (req.has_max_transfers()) policy.max_transfers = req.max_transfers();
  return Status::OK;
}

// The relay `req` sets for site `site` ("" for auto, kNoRelay for none), checked: a valid
// name (INVALID_ARGUMENT), a registered agent (NOT_FOUND) labelled
// site=SITE (FAILED_PRECONDITION).
absl::StatusOr<std::string> RequestRelay(StateStore& store, const v1::SetSiteRequest& req,
                                         const std::string& site) {
  if (req.relay().empty() || req.relay() == kAutoRelay) return std::string();
  if (req.relay() == kNoRelay) return std::string(kNoRelay);
  RETURN_IF_ERROR(ValidateName(req.relay(), "relay"));
  absl::StatusOr<AgentRow> agent = store.GetAgent(req.relay());
  if (!agent.ok()) return agent.status();
  const std::string in = SiteOf(agent->labels);
  if (in.empty()) {
    return absl::FailedPreconditionError(
        absl::StrCat("agent ", agent->name, " has no site label (a relay of site ", site,
                     " must be labelled site=", site, ")"));
  }
  if (in != site) {
    return absl::FailedPreconditionError(
        absl::StrCat("agent ", agent->name, " is in site ", in, ", not ", site));
  }
  return agent->name;
}

void FillEgress(Bandwidth& bandwidth, v1::EgressInfo* out) {
  Bandwidth::Usage u = bandwidth.EgressUsage();
  out->set_rate(FormatRate(u.rate_now));
  out->set_bytes_per_second(u.bytes_per_second);
  out->set_bytes_sent(u.bytes_sent);
}

}  // namespace

void AdminService::FillSiteInfo(const std::string& name, const SiteRow* row,
                                v1::SiteInfo* out) {
  const SitePolicy policy = row != nullptr ? row->policy : SitePolicy{};
  out->set_name(name);
  out->set_rate(FormatRate(policy.rate));
  for (const Window& w : policy.windows) out->add_windows(FormatWindow(w));
  out->set_timezone(policy.timezone);
  out->set_max_transfers(policy.max_transfers);
  out->set_relay(row != nullptr ? row->relay : "");
  Bandwidth::Usage u = engine_->bandwidth().SiteUsage(name);
  out->set_rate_now(FormatRate(u.rate_now));
  if (u.until != absl::InfiniteFuture()) {
    out->set_rate_now_until(FormatRfc3339(absl::ToUnixMillis(u.until)));
  }
  out->set_active_transfers(engine_->ActiveTransfersAt(name));
  out->set_bytes_per_second(u.bytes_per_second);
  out->set_bytes_sent(u.bytes_sent);
}

Status AdminService::SetSite(Ctx* ctx, const v1::SetSiteRequest* req, v1::SiteInfo* resp) {
  std::string request = absl::StrCat("site=", OneLineBounded(req->name()));
  if (req->has_rate()) absl::StrAppend(&request, " rate=", OneLineBounded(req->rate()));
  if (req->set_windows()) {
    absl::StrAppend(&request, " windows=[", OneLineBounded(absl::StrJoin(req->windows(), ";")), "]");
  }
  if (req->has_timezone()) absl::StrAppend(&request, " timezone=", OneLineBounded(req->timezone()));
  if (req->has_max_transfers()) absl::StrAppend(&request, " max_transfers=", req->max_transfers());
  if (req->has_relay()) absl::StrAppend(&request, " relay=", OneLineBounded(req->relay()));
  return Audited(ctx, "SetSite", std::move(request), [&](AuditEntry& audit) -> Status {
    if (auto s = ValidateName(req->name(), "site name"); !s.ok()) return ToGrpc(s);
    SiteRow row;
    row.name = req->name();
    if (auto old = store_->GetSite(req->name()); old.ok()) {
      row = *std::move(old);
    } else if (absl::IsDataLoss(old.status())) {
      // A stored policy that does not parse: this call replaces it, from
      // the defaults and what it sets.
      spdlog::warn("{}; replaced by SetSite", old.status().message());
    } else if (!absl::IsNotFound(old.status())) {
      return ToGrpc(old.status());
    }
    if (Status s = ApplySiteRequest(*req, row.policy); !s.ok()) return s;
    if (req->has_relay()) {
      absl::StatusOr<std::string> relay = RequestRelay(*store_, *req, row.name);
      if (!relay.ok()) return ToGrpc(relay.status());
      row.relay = *std::move(relay);
    }
    absl::StatusOr<absl::TimeZone> zone = LoadZone(row.policy.timezone);
    if (!zone.ok()) return ToGrpc(zone.status());
    if (auto s = store_->PutSite(row, &audit); !s.ok()) return ToGrpc(s);
    engine_->bandwidth().SetSite(row.name, row.policy, *zone);
    engine_->Kick();  // a site that opened or got room starts its targets now
    spdlog::info("site {}: {}", row.name, audit.result);
    auto members = SiteMembers(*store_);
    if (!members.ok()) return ToGrpc(members.status());
    for (const std::string& agent : (*members)[row.name]) resp->add_agents(agent);
    FillSiteInfo(row.name, &row, resp);
    return Status::OK;
  });
}

Status AdminService::ListSites(Ctx* ctx, const v1::ListSitesRequest*, v1::ListSitesResponse* resp) {
  if (Status s = Authorize(ctx, "ListSites"); !s.ok()) return s;
  auto members = SiteMembers(*store_);
  if (!members.ok()) return ToGrpc(members.status());
  auto rows = store_->ListSites();
  if (!rows.ok()) return ToGrpc(rows.status());
  std::map<std::string, const SiteRow*> policies;
  for (const SiteRow& r : *rows) policies[r.name] = &r;
  std::set<std::string> names;
  for (const auto& [name, agents] : *members) names.insert(name);
  for (const auto& [name, row] : policies) names.insert(name);
  for (const std::string& name : names) {
    v1::SiteInfo* info = resp->add_sites();
    for (const std::string& agent : (*members)[name]) info->add_agents(agent);
    auto p = policies.find(name);
    FillSiteInfo(name, p == policies.end() ? nullptr : p->second, info);
  }
  return Status::OK;
}

Status AdminService::GetSite(Ctx* ctx, const v1::GetSiteRequest* req, v1::SiteInfo* resp) {
  if (Status s = Authorize(ctx, "GetSite"); !s.ok()) return s;
  auto row = store_->GetSite(req->name());
  if (!row.ok() && !absl::IsNotFound(row.status())) return ToGrpc(row.status());
  auto members = SiteMembers(*store_);
  if (!members.ok()) return ToGrpc(members.status());
  auto agents = members->find(req->name());
  if (!row.ok() && agents == members->end()) {
    return Status(grpc::StatusCode::NOT_FOUND,
                  absl::StrCat("site ", req->name(), ": no agent is labelled site=", req->name(),
                               " and it has no policy"));
  }
  if (agents != members->end()) {
    for (const std::string& agent : agents->second) resp->add_agents(agent);
  }
  FillSiteInfo(req->name(), row.ok() ? &*row : nullptr, resp);
  return Status::OK;
}

Status AdminService::SetAgentRate(Ctx* ctx, const v1::SetAgentRateRequest* req,
                                  v1::AgentInfo* resp) {
  std::string request = absl::StrCat("agent=", OneLineBounded(req->name()),
                                     " rate=", OneLineBounded(req->rate()));
  return Audited(ctx, "SetAgentRate", std::move(request), [&](AuditEntry& audit) -> Status {
    absl::StatusOr<Rate> rate = ParseRate(req->rate());
    if (!rate.ok()) return Invalid(rate.status());
    auto row = store_->SetAgentRate(req->name(), *rate, &audit);
    if (!row.ok()) return ToGrpc(row.status());
    engine_->AgentChanged(*row);
    spdlog::info("agent {}: {}", row->name, audit.result);
    FillAgentInfo(*row, resp);
    return Status::OK;
  });
}

Status AdminService::SetEgress(Ctx* ctx, const v1::SetEgressRequest* req, v1::EgressInfo* resp) {
  return Audited(ctx, "SetEgress", absl::StrCat("rate=", OneLineBounded(req->rate())),
                 [&](AuditEntry& audit) -> Status {
    absl::StatusOr<Rate> rate = ParseRate(req->rate());
    if (!rate.ok()) return Invalid(rate.status());
    if (auto s = store_->SetEgressRate(*rate, &audit); !s.ok()) return ToGrpc(s);
    engine_->bandwidth().SetEgress(*rate);
    engine_->Kick();
    spdlog::info("{}", audit.result);
    FillEgress(engine_->bandwidth(), resp);
    return Status::OK;
  });
}

Status AdminService::GetEgress(Ctx* ctx, const v1::GetEgressRequest*, v1::EgressInfo* resp) {
  if (Status s = Authorize(ctx, "GetEgress"); !s.ok()) return s;
  FillEgress(engine_->bandwidth(), resp);
  return Status::OK;
}

}  // namespace pkgdist
