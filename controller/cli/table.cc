#include "controller/cli/table.h"

#include <algorithm>
#include <map>
#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "controller/cli/display.h"
#include "shared/sha256.h"

namespace pkgdist::cli {
namespace {

using KeyValues = std::vector<std::pair<std::string, std::string>>;

// "key:   value" lines with the values aligned.
std::string KeyValueBlock(const KeyValues& kvs) {
  size_t width = 0;
  for (const auto& [k, v] : kvs) width = std::max(width, k.size() + 1);
  std::string out;
  for (const auto& [k, v] : kvs) {
    absl::StrAppend(&out, k, ":", std::string(width - k.size() - 1 + 2, ' '), OneLine(v), "\n");
  }
  return out;
}

std::string OrDash(const std::string& s) { return s.empty() ? "-" : s; }

// The first 12 hex digits: enough to tell packages apart in a list.
std::string ShortId(const std::string& hex) { return hex.substr(0, 12); }

int DoneTargets(const pkgdist::v1::JobStatus& job) {
  return static_cast<int>(std::count_if(job.targets().begin(), job.targets().end(),
                                        [](const auto& t) { return t.state() == "done"; }));
}

}  // namespace

TextTable::TextTable(std::vector<std::string> header) { rows_.push_back(std::move(header)); }

void TextTable::AddRow(std::vector<std::string> cells) {
  cells.resize(std::max(cells.size(), rows_[0].size()));
  for (auto& c : cells) c = OneLine(c);
  rows_.push_back(std::move(cells));
}

std::string TextTable::Render() const {
  std::vector<size_t> widths(rows_[0].size(), 0);
  for (const auto& row : rows_) {
    for (size_t i = 0; i < row.size() && i < widths.size(); ++i) {
      widths[i] = std::max(widths[i], DisplayWidth(row[i]));
    }
  }
  std::string out;
  for (const auto& row : rows_) {
    std::string line;
    for (size_t i = 0; i < row.size(); ++i) {
      absl::StrAppend(&line, row[i]);
      if (i + 1 < row.size()) {
        size_t w = i < widths.size() ? widths[i] : 0;
        line.append(w - std::min(w, DisplayWidth(row[i])) + 2, ' ');
      }
    }
    while (!line.empty() && line.back() == ' ') line.pop_back();
    absl::StrAppend(&out, line, "\n");
  }
  return out;
}

std::string ProgressCell(uint64_t acked, uint64_t total) {
  if (total == 0) return "-";
  return absl::StrCat(HumanBytes(acked), "/", HumanBytes(total), " ", Percent(acked, total), "%");
}

std::string RenderJob(const pkgdist::v1::JobStatus& job) {
  std::string out = KeyValueBlock({
      {"job", job.id()},
      {"kind", job.kind()},
      {"package", job.package()},
      {"state", absl::StrCat(job.state(), " (", DoneTargets(job), "/", job.targets_size(),
                             " targets done)")},
      {"created", OrDash(job.created_at())},
  });
  if (!job.store_error().empty()) {
    absl::StrAppend(&out, "warning:  the controller cannot write its state database: ",
                    job.store_error(), "\n");
  }
  TextTable t({"AGENT", "STATE", "ATTEMPTS", "PROGRESS", "SENT", "REUSED", "FROM PEER",
               "NEXT ATTEMPT", "LAST ERROR"});
  for (const auto& target : job.targets()) {
    t.AddRow({target.agent(), target.state(), absl::StrCat(target.attempts()),
              ProgressCell(target.bytes_acked(), target.bytes_total()),
              HumanBytes(target.bytes_sent()), HumanBytes(target.bytes_reused()),
              HumanBytes(target.bytes_from_peer()), OrDash(target.next_attempt_at()), OrDash(target.last_error())});
  }
  absl::StrAppend(&out, "\n", t.Render());
  return out;
}

std::string RenderJobList(const pkgdist::v1::ListJobsResponse& jobs) {
  TextTable t({"ID", "KIND", "PACKAGE", "STATE", "DONE", "CREATED"});
  for (const auto& job : jobs.jobs()) {
    t.AddRow({job.id(), job.kind(), job.package(), job.state(),
              absl::StrCat(DoneTargets(job), "/", job.targets_size()), OrDash(job.created_at())});
  }
  return t.Render();
}

std::string LabelsText(const google::protobuf::Map<std::string, std::string>& labels) {
  std::map<std::string, std::string> sorted(labels.begin(), labels.end());
  std::string out;
  for (const auto& [key, value] : sorted) absl::StrAppend(&out, out.empty() ? "" : ",", key, "=", value);
  return out;
}

std::string RenderAgentList(const pkgdist::v1::ListAgentsResponse& agents) {
  TextTable t({"NAME", "ADDRESS", "LABELS", "CONNECTION", "LAST CONTACT", "LAST ERROR"});
  for (const auto& a : agents.agents()) {
    t.AddRow({a.name(), a.address(), OrDash(OneLine(LabelsText(a.labels()))),
              ConnectionStateName(a.connection()), OrDash(a.last_contact()),
              OrDash(a.last_error())});
  }
  return t.Render();
}

std::string RenderAgentDetail(const pkgdist::v1::AgentDetail& detail) {
  const auto& a = detail.agent();
  std::string out = KeyValueBlock({
      {"name", a.name()},
      {"address", a.address()},
      {"labels", OrDash(OneLine(LabelsText(a.labels())))},
      {"rate", a.rate().empty() ? "unlimited" : OneLine(a.rate())},
      {"connection", ConnectionStateName(a.connection())},
      {"last contact", OrDash(a.last_contact())},
      {"last error", OrDash(a.last_error())},
  });
  if (!detail.inventory_error().empty()) {
    absl::StrAppend(&out, "\ninventory unavailable: ", OneLine(detail.inventory_error()), "\n");
    return out;
  }
  if (detail.inventory().published_size() == 0) {
    absl::StrAppend(&out, "\nno packages published\n");
  } else {
    TextTable published({"PUBLISHED", "VERSION", "ID", "SIZE"});
    for (const auto& p : detail.inventory().published()) {
      published.AddRow(
          {p.name(), p.version(), ShortId(ToHex(p.package_id())), HumanBytes(p.size())});
    }
    absl::StrAppend(&out, "\n", published.Render());
  }
  if (detail.inventory().partial_size() > 0) {
    TextTable partial({"PARTIAL", "VERSION", "ID", "PROGRESS", "CHUNKS"});
    for (const auto& p : detail.inventory().partial()) {
      partial.AddRow({p.name(), p.version(), ShortId(ToHex(p.package_id())),
                      ProgressCell(p.bytes_have(), p.bytes_total()),
                      absl::StrCat(p.chunks_have(), "/", p.chunks_total())});
    }
    absl::StrAppend(&out, "\n", partial.Render());
  }
  return out;
}

namespace {

// "20MB/s until 2026-12-01T18:00:00.000Z", or the rate alone.
std::string RateNow(const pkgdist::v1::SiteInfo& site) {
  if (site.rate_now_until().empty()) return site.rate_now();
  return absl::StrCat(site.rate_now(), " until ", site.rate_now_until());
}

// The configured relay, "auto" when the controller chooses.
std::string RelayText(const pkgdist::v1::SiteInfo& site) {
  return site.relay().empty() ? "auto" : site.relay();
}

// Decimal units, as rates are set ("19.8 MB/s" beside a limit of 20MB/s).
std::string PerSecond(uint64_t bytes) {
  static constexpr const char* kUnits[] = {"B/s", "kB/s", "MB/s", "GB/s"};
  double v = static_cast<double>(bytes);
  size_t unit = 0;
  while (v >= 1000 && unit + 1 < std::size(kUnits)) {
    v /= 1000;
    ++unit;
  }
  if (unit == 0) return absl::StrCat(bytes, " B/s");
  return absl::StrCat(absl::StrFormat("%.1f", v), " ", kUnits[unit]);
}

}  // namespace

std::string RenderSite(const pkgdist::v1::SiteInfo& site) {
  std::string windows;
  for (const auto& w : site.windows()) absl::StrAppend(&windows, windows.empty() ? "" : "; ", w);
  return KeyValueBlock({
      {"site", site.name()},
      {"agents", OrDash(absl::StrJoin(site.agents(), ","))},
      {"rate", site.rate()},
      {"windows", OrDash(windows)},
      {"timezone", site.timezone()},
      {"max transfers", site.max_transfers() == 0 ? "no limit" : absl::StrCat(site.max_transfers())},
      {"relay", RelayText(site)},
      {"rate now", RateNow(site)},
      {"transfers", absl::StrCat(site.active_transfers(), " running")},
      {"sending", PerSecond(site.bytes_per_second())},
      {"sent", absl::StrCat(HumanBytes(site.bytes_sent()), " since the controller started")},
  });
}

std::string RenderSiteList(const pkgdist::v1::ListSitesResponse& sites) {
  TextTable t({"SITE", "AGENTS", "RELAY", "RATE NOW", "TRANSFERS", "SENDING", "SENT"});
  for (const auto& s : sites.sites()) {
    t.AddRow({s.name(), absl::StrCat(s.agents_size()), RelayText(s), RateNow(s),
              absl::StrCat(s.active_transfers()), PerSecond(s.bytes_per_second()),
              HumanBytes(s.bytes_sent())});
  }
  return t.Render();
}

std::string RenderEgress(const pkgdist::v1::EgressInfo& egress) {
  return KeyValueBlock({
      {"egress rate", egress.rate()},
      {"sending", PerSecond(egress.bytes_per_second())},
      {"sent", absl::StrCat(HumanBytes(egress.bytes_sent()), " since the controller started")},
  });
}

std::string RenderPackage(const pkgdist::v1::PackageInfo& pkg) {
  return KeyValueBlock({
      {"package", absl::StrCat(pkg.name(), "@", pkg.version())},
      {"id", pkg.id()},
      {"size", absl::StrCat(HumanBytes(pkg.size()), " (", pkg.size(), " bytes)")},
      {"files", absl::StrCat(pkg.files())},
      {"chunks", absl::StrCat(pkg.chunks())},
      {"created", OrDash(pkg.created_at())},
      {"signed", !pkg.has_signature()
                     ? "no"
                     : absl::StrCat("key ", pkg.signature().key_id(), ", sequence ",
                                    pkg.signature().sequence(), ", expires ",
                                    pkg.signature().expires_at())},
  });
}

std::string RenderPackageList(const pkgdist::v1::ListPackagesResponse& packages) {
  TextTable t({"NAME", "VERSION", "ID", "SIZE", "FILES", "CHUNKS", "CREATED", "SIGNED"});
  for (const auto& p : packages.packages()) {
    t.AddRow({p.name(), p.version(), ShortId(p.id()), HumanBytes(p.size()),
              absl::StrCat(p.files()), absl::StrCat(p.chunks()), OrDash(p.created_at()),
              p.has_signature() ? p.signature().key_id() : "-"});
  }
  return t.Render();
}

namespace {

// "admin/alice" for spiffe://TD/admin/alice; anything else as it is.
std::string ShortIdentity(const std::string& identity) {
  constexpr absl::string_view kScheme = "spiffe://";
  if (!absl::StartsWith(identity, kScheme)) return identity;
  size_t slash = identity.find('/', kScheme.size());
  return slash == std::string::npos ? identity : identity.substr(slash + 1);
}

// What changed, for the STATE/DETAIL column.
std::string EventDetail(const pkgdist::v1::Event& e) {
  const absl::string_view kind = e.kind();
  if (kind == "job_created") {
    return absl::StrCat(e.state(), ": ", e.job_kind(), " ", e.package(), ", ", e.detail());
  }
  if (kind == "job_finished") return absl::StrCat(e.state(), " (", e.package(), ")");
  if (kind == "job_deleted") return absl::StrCat(e.detail(), " (", e.package(), ")");
  if (kind == "target_changed" || kind == "target_progress") {
    const auto& t = e.target();
    std::string out = t.state();
    if (kind == "target_progress") {
      absl::StrAppend(&out, " ", ProgressCell(t.bytes_acked(), t.bytes_total()));
    }
    if (t.attempts() > 0) absl::StrAppend(&out, " (attempt ", t.attempts(), ")");
    if (!t.next_attempt_at().empty()) absl::StrAppend(&out, " next ", t.next_attempt_at());
    if (!t.last_error().empty()) absl::StrAppend(&out, ": ", t.last_error());
    return out;
  }
  if (kind == "agent_added" || kind == "agent_updated") {
    // The detail says what changed: labels, or the agent's own rate.
    return e.detail().empty() ? e.address() : absl::StrCat(e.address(), ", ", e.detail());
  }
  if (absl::StartsWith(kind, "package_")) {
    return absl::StrCat("id ", ShortId(e.package_id()), e.detail().empty() ? "" : ", ",
                        e.detail());
  }
  return e.detail();
}

std::string EventSubject(const pkgdist::v1::Event& e) {
  if (!e.job_id().empty()) {
    return e.agent().empty() ? absl::StrCat("job ", e.job_id())
                             : absl::StrCat("job ", e.job_id(), " ", e.agent());
  }
  if (!e.agent().empty()) return absl::StrCat("agent ", e.agent());
  if (!e.package().empty()) return absl::StrCat("package ", e.package());
  return "-";
}

std::string PadTo(std::string s, size_t width) {
  size_t w = DisplayWidth(s);
  if (w < width) s.append(width - w, ' ');
  return s;
}

std::string EventColumns(std::string time, std::string seq, std::string kind,
                         std::string subject, std::string detail) {
  std::string line = absl::StrCat(PadTo(OneLine(time), 24), "  ", PadTo(OneLine(seq), 8), "  ",
                                  PadTo(OneLine(kind), 16), "  ", PadTo(OneLine(subject), 38),
                                  "  ", OneLine(detail));
  while (!line.empty() && line.back() == ' ') line.pop_back();
  return line + "\n";
}

}  // namespace

std::string RenderAuditList(const pkgdist::v1::ListAuditResponse& audit) {
  TextTable t({"TIME", "WHO", "METHOD", "REQUEST", "CODE", "MESSAGE"});
  for (const auto& r : audit.records()) {
    t.AddRow({OrDash(r.time()), ShortIdentity(r.identity()), r.method(), OrDash(r.request()),
              r.code(), OrDash(r.message())});
  }
  return t.Render();
}

std::string EventHeaderLine() {
  return EventColumns("TIME", "SEQ", "KIND", "SUBJECT", "STATE/DETAIL");
}

std::string RenderEventLine(const pkgdist::v1::Event& e) {
  return EventColumns(OrDash(e.time()), absl::StrCat(e.sequence()), e.kind(), EventSubject(e),
                      OrDash(EventDetail(e)));
}

}  // namespace pkgdist::cli
