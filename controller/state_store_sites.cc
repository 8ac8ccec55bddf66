// StateStore: sites' bandwidth policies and the egress limit (migration 6),
// and each site's relay (migration 7).
#include <sqlite3.h>

#include <set>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "controller/sqlite_util.h"
#include "controller/state_store.h"
#include "controller/state_store_log.h"
#include "shared/paths.h"
#include "shared/status_macros.h"

namespace pkgdist {
namespace {

constexpr absl::string_view kSiteCols = "name, rate, windows, timezone, max_transfers, updated_ms, relay";
constexpr absl::string_view kEgressKey = "egress_rate";
// Windows are stored joined by this (no canonical window contains it).
constexpr absl::string_view kWindowSeparator = ";";

std::string WindowsText(const SitePolicy& p) {
  std::vector<std::string> parts;
  for (const Window& w : p.windows) parts.push_back(FormatWindow(w));
  return absl::StrJoin(parts, kWindowSeparator);
}

// Written only in canonical form; a row edited by hand into something that
// does not parse is DATA_LOSS naming the site, not a silent change of limit.
absl::StatusOr<SiteRow> ReadSite(const Statement& st) {
  SiteRow row;
  row.name = st.Text(0);
  auto bad = [&](const absl::Status& s) {
    return absl::DataLossError(absl::StrCat("site ", row.name, " in the state database: ", s.message()));
  };
  absl::StatusOr<Rate> rate = ParseRate(st.Text(1));
  if (!rate.ok()) return bad(rate.status());
  row.policy.rate = *rate;
  for (absl::string_view text : absl::StrSplit(st.Text(2), kWindowSeparator, absl::SkipEmpty())) {
    absl::StatusOr<Window> w = ParseWindow(text);
    if (!w.ok()) return bad(w.status());
    row.policy.windows.push_back(*w);
  }
  row.policy.timezone = st.Text(3);
  row.policy.max_transfers = static_cast<uint32_t>(st.Int(4));
  row.updated_ms = st.Int(5);
  row.relay = st.Text(6);
  return row;
}

// The policy, and the relay if one is set ("relay=NAME").
std::string Describe(const SiteRow& site) {
  const SitePolicy& p = site.policy;
  std::string out = absl::StrCat("rate ", FormatRate(p.rate), ", windows [", WindowsText(p),
                                 "], timezone ", p.timezone, ", max_transfers ", p.max_transfers);
  if (!site.relay.empty()) absl::StrAppend(&out, ", relay=", site.relay);
  return out;
}

}  // namespace

absl::Status StateStore::PutSite(const SiteRow& site, AuditEntry* audit) {
  RETURN_IF_ERROR(ValidateName(site.name, "site name"));
  if (!site.relay.empty()) RETURN_IF_ERROR(ValidateName(site.relay, "relay"));
  return Transact(
      [&](ChangeLog& log) -> absl::Status {
        Statement find(log.db(), absl::StrCat("SELECT ", kSiteCols, " FROM sites WHERE name = ?"));
        find.BindText(site.name);
        ASSIGN_OR_RETURN(bool found, find.Step());
        std::string before = "no policy";
        if (found) {
          absl::StatusOr<SiteRow> old = ReadSite(find);
          before = old.ok() ? Describe(*old) : std::string(old.status().message());
        }
        const std::string after = Describe(site);
        if (audit != nullptr) audit->result = absl::StrCat(before, " -> ", after);
        if (after == before) return absl::OkStatus();
        Statement st(log.db(),
                     "INSERT INTO sites(name, rate, windows, timezone, max_transfers, updated_ms, "
                     "relay) VALUES(?, ?, ?, ?, ?, ?, ?) ON CONFLICT(name) DO UPDATE SET "
                     "rate = excluded.rate, windows = excluded.windows, "
                     "timezone = excluded.timezone, max_transfers = excluded.max_transfers, "
                     "updated_ms = excluded.updated_ms, relay = excluded.relay");
        st.BindText(site.name)
            .BindText(FormatRate(site.policy.rate))
            .BindText(WindowsText(site.policy))
            .BindText(site.policy.timezone)
            .BindInt(site.policy.max_transfers)
            .BindInt(log.now())
            .BindText(site.relay);
        RETURN_IF_ERROR(st.Run());
        EventRow e;
        e.kind = EventKind::kLimitsChanged;
        e.detail = absl::StrCat("site ", site.name, ": ", after);
        return log.Add(std::move(e));
      },
      audit);
}

absl::StatusOr<SiteRow> StateStore::GetSite(const std::string& name) {
  SiteRow out;
  RETURN_IF_ERROR(Read([&](sqlite3* db, int64_t) -> absl::Status {
    Statement st(db, absl::StrCat("SELECT ", kSiteCols, " FROM sites WHERE name = ?"));
    st.BindText(name);
    ASSIGN_OR_RETURN(bool found, st.Step());
    if (!found) return absl::NotFoundError(absl::StrCat("site ", name, " has no policy"));
    ASSIGN_OR_RETURN(out, ReadSite(st));
    return absl::OkStatus();
  }));
  return out;
}

absl::StatusOr<std::vector<SiteRow>> StateStore::ListSites(std::vector<std::string>* unreadable) {
  std::vector<SiteRow> out;
  RETURN_IF_ERROR(Read([&](sqlite3* db, int64_t) -> absl::Status {
    Statement st(db, absl::StrCat("SELECT ", kSiteCols, " FROM sites ORDER BY name"));
    while (true) {
      ASSIGN_OR_RETURN(bool row, st.Step());
      if (!row) break;
      absl::StatusOr<SiteRow> site = ReadSite(st);
      if (site.ok()) {
        out.push_back(*std::move(site));
      } else if (unreadable != nullptr) {
        unreadable->push_back(std::string(site.status().message()));
      } else {
        return site.status();
      }
    }
    return absl::OkStatus();
  }));
  return out;
}

absl::StatusOr<std::vector<std::string>> StateStore::LabelledSites() {
  std::set<std::string> sites;
  RETURN_IF_ERROR(Read([&](sqlite3* db, int64_t) -> absl::Status {
    // Canonical labels are "k=v,k=v" sorted by key; only rows with a site.
    Statement st(db, "SELECT labels FROM agents WHERE instr(',' || labels, ',site=') > 0");
    while (true) {
      ASSIGN_OR_RETURN(bool row, st.Step());
      if (!row) break;
      absl::StatusOr<Labels> labels = ParseLabels(st.Text(0));
      if (!labels.ok()) continue;
      if (std::string site = SiteOf(*labels); !site.empty()) sites.insert(site);
    }
    return absl::OkStatus();
  }));
  return std::vector<std::string>(sites.begin(), sites.end());
}

absl::Status StateStore::SetEgressRate(Rate rate, AuditEntry* audit) {
  return Transact(
      [&](ChangeLog& log) -> absl::Status {
        Statement find(log.db(), "SELECT value FROM settings WHERE key = ?");
        find.BindText(kEgressKey);
        ASSIGN_OR_RETURN(bool found, find.Step());
        const std::string before = found ? find.Text(0) : FormatRate(Rate::Unlimited());
        const std::string after = FormatRate(rate);
        if (audit != nullptr) audit->result = absl::StrCat("egress ", before, " -> ", after);
        if (after == before) return absl::OkStatus();
        Statement st(log.db(),
                     "INSERT INTO settings(key, value) VALUES(?, ?) "
                     "ON CONFLICT(key) DO UPDATE SET value = excluded.value");
        st.BindText(kEgressKey).BindText(after);
        RETURN_IF_ERROR(st.Run());
        EventRow e;
        e.kind = EventKind::kLimitsChanged;
        e.detail = absl::StrCat("egress: rate ", after);
        return log.Add(std::move(e));
      },
      audit);
}

absl::StatusOr<Rate> StateStore::GetEgressRate() {
  Rate out = Rate::Unlimited();
  RETURN_IF_ERROR(Read([&](sqlite3* db, int64_t) -> absl::Status {
    Statement st(db, "SELECT value FROM settings WHERE key = ?");
    st.BindText(kEgressKey);
    ASSIGN_OR_RETURN(bool found, st.Step());
    if (!found) return absl::OkStatus();
    ASSIGN_OR_RETURN(out, ParseRate(st.Text(0)));
    return absl::OkStatus();
  }));
  return out;
}

}  // namespace pkgdist
