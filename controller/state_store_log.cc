#include "controller/state_store_log.h"

#include <sqlite3.h>

#include <array>
#include <optional>
#include <utility>

#include "absl/strings/str_cat.h"
#include "controller/sqlite_util.h"
#include "controller/target_state.h"
#include "shared/status_macros.h"

namespace pkgdist {
namespace {

constexpr std::array<std::pair<EventKind, absl::string_view>, 13> kEventKinds = {{
    {EventKind::kJobCreated, "job_created"},
    {EventKind::kJobFinished, "job_finished"},
    {EventKind::kJobDeleted, "job_deleted"},
    {EventKind::kTargetChanged, "target_changed"},
    {EventKind::kTargetProgress, "target_progress"},
    {EventKind::kAgentAdded, "agent_added"},
    {EventKind::kAgentUpdated, "agent_updated"},
    {EventKind::kAgentRemoved, "agent_removed"},
    {EventKind::kPackageImported, "package_imported"},
    {EventKind::kPackageSigned, "package_signed"},
    {EventKind::kPackageDeleted, "package_deleted"},
    {EventKind::kLimitsChanged, "limits_changed"},
    {EventKind::kCaughtUp, "caught_up"},
}};

// Bounds on what one audit record keeps of a call (a request names at most
// a few thousand agents' worth; an error message is a line or two).
constexpr size_t kMaxIdentity = 512, kMaxRequest = 4096, kMaxMessage = 2048;

constexpr absl::string_view kEventCols =
    "seq, time_ms, kind, job_id, job_kind, package, package_id, agent, address, state, "
    "has_target, attempts, last_error, next_attempt_ms, bytes_acked, bytes_total, bytes_sent, "
    "bytes_reused, detail, bytes_from_peer";

std::string Bounded(absl::string_view s, size_t max) {
  if (s.size() <= max) return std::string(s);
  return absl::StrCat(s.substr(0, max), "... (", s.size() - max, " more bytes)");
}

absl::StatusOr<EventRow> ReadEvent(const Statement& st) {
  EventRow e;
  e.seq = st.Int(0);
  e.time_ms = st.Int(1);
  ASSIGN_OR_RETURN(e.kind, ParseEventKind(st.Text(2)));
  e.job_id = st.Text(3);
  e.job_kind = st.Text(4);
  e.package = st.Text(5);
  e.package_id = st.Text(6);
  e.agent = st.Text(7);
  e.address = st.Text(8);
  e.state = st.Text(9);
  if (st.Int(10) != 0) {
    TargetRow t;
    t.job_id = e.job_id;
    t.agent = e.agent;
    absl::StatusOr<TargetState> state = ParseTargetState(e.state);
    if (!state.ok()) {
      return absl::DataLossError(absl::StrCat("event ", e.seq, ": ", state.status().message()));
    }
    t.state = *state;
    t.attempts = static_cast<uint32_t>(st.Int(11));
    t.last_error = st.Text(12);
    t.next_attempt_ms = st.Int(13);
    t.bytes_acked = static_cast<uint64_t>(st.Int(14));
    t.bytes_total = static_cast<uint64_t>(st.Int(15));
    t.bytes_sent = static_cast<uint64_t>(st.Int(16));
    t.bytes_reused = static_cast<uint64_t>(st.Int(17));
    t.bytes_from_peer = static_cast<uint64_t>(st.Int(19));
    t.updated_ms = e.time_ms;
    e.target = std::move(t);
  }
  e.detail = st.Text(18);
  return e;
}

}  // namespace

absl::string_view EventKindName(EventKind kind) {
  for (const auto& [k, name] : kEventKinds) {
    if (k == kind) return name;
  }
  return "unknown";
}

absl::StatusOr<EventKind> ParseEventKind(absl::string_view name) {
  for (const auto& [k, n] : kEventKinds) {
    if (n == name) return k;
  }
  return absl::DataLossError(absl::StrCat("unknown event kind \"", name, "\""));
}

ChangeLog::ChangeLog(sqlite3* db, int64_t now_ms) : db_(db), now_(now_ms) {}

ChangeLog::~ChangeLog() = default;

absl::Status ChangeLog::Add(EventRow e) {
  if (insert_ == nullptr) {
    insert_ = std::make_unique<Statement>(
        db_,
        "INSERT INTO events(time_ms, kind, job_id, job_kind, package, package_id, agent, address, "
        "state, has_target, attempts, last_error, next_attempt_ms, bytes_acked, bytes_total, "
        "bytes_sent, bytes_reused, detail, bytes_from_peer) "
        "VALUES(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)");
  }
  const TargetRow none;
  const TargetRow& t = e.target.has_value() ? *e.target : none;
  Statement& st = *insert_;
  st.Reset();
  st.BindInt(now_)
      .BindText(EventKindName(e.kind))
      .BindText(e.job_id)
      .BindText(e.job_kind)
      .BindText(e.package)
      .BindText(e.package_id)
      .BindText(e.agent)
      .BindText(e.address)
      .BindText(e.state)
      .BindInt(e.target.has_value() ? 1 : 0)
      .BindInt(t.attempts)
      .BindText(t.last_error)
      .BindInt(t.next_attempt_ms)
      .BindInt(static_cast<int64_t>(t.bytes_acked))
      .BindInt(static_cast<int64_t>(t.bytes_total))
      .BindInt(static_cast<int64_t>(t.bytes_sent))
      .BindInt(static_cast<int64_t>(t.bytes_reused))
      .BindText(e.detail)
      .BindInt(static_cast<int64_t>(t.bytes_from_peer));
  RETURN_IF_ERROR(st.Run());
  last_seq_ = sqlite3_last_insert_rowid(db_);
  return absl::OkStatus();
}

absl::StatusOr<std::string> ChangeLog::PackageOfJob(const std::string& job_id) {
  auto it = labels_.find(job_id);
  if (it != labels_.end()) return it->second;
  Statement st(db_, "SELECT package_label FROM jobs WHERE id = ?");
  st.BindText(job_id);
  ASSIGN_OR_RETURN(bool found, st.Step());
  std::string label = found ? st.Text(0) : "";
  labels_.emplace(job_id, label);
  return label;
}

absl::Status ChangeLog::Target(const TargetRow& t) {
  EventRow e;
  e.kind = EventKind::kTargetChanged;
  e.job_id = t.job_id;
  ASSIGN_OR_RETURN(e.package, PackageOfJob(t.job_id));
  e.agent = t.agent;
  e.state = std::string(TargetStateName(t.state));
  e.target = t;
  if (IsFinal(t.state)) maybe_finished_.insert(t.job_id);
  return Add(std::move(e));
}

absl::StatusOr<std::optional<JobState>> ChangeLog::EndedState(const std::string& job) {
  // DeriveJobState, for a job whose targets are all final, by index probes.
  auto any = [&](absl::string_view states) -> absl::StatusOr<bool> {
    Statement st(db_, absl::StrCat("SELECT 1 FROM targets WHERE job_id = ? AND state IN (",
                                   states, ") LIMIT 1"));
    st.BindText(job);
    return st.Step();
  };
  ASSIGN_OR_RETURN(bool unfinished, any("'pending', 'transferring', 'retry_wait'"));
  if (unfinished) return std::optional<JobState>();
  ASSIGN_OR_RETURN(bool failed, any("'failed'"));
  if (failed) return std::optional<JobState>(JobState::kFailed);
  ASSIGN_OR_RETURN(bool cancelled, any("'cancelled'"));
  if (cancelled) return std::optional<JobState>(JobState::kCancelled);
  ASSIGN_OR_RETURN(bool done, any("'done'"));
  if (done) return std::optional<JobState>(JobState::kComplete);
  return std::optional<JobState>();  // no targets (deleted in this transaction)
}

absl::Status ChangeLog::Finish(int64_t event_history) {
  for (const std::string& job : maybe_finished_) {
    ASSIGN_OR_RETURN(std::optional<JobState> state, EndedState(job));
    if (!state.has_value()) continue;
    EventRow e;
    e.kind = EventKind::kJobFinished;
    e.job_id = job;
    ASSIGN_OR_RETURN(e.package, PackageOfJob(job));
    e.state = std::string(JobStateName(*state));
    RETURN_IF_ERROR(Add(std::move(e)));
  }
  maybe_finished_.clear();
  insert_.reset();
  if (last_seq_ == 0) return absl::OkStatus();
  return PruneEvents(db_, last_seq_, event_history);
}

absl::Status ChangeLog::WriteAudit(const AuditEntry& entry, const absl::Status& outcome,
                                   int64_t retention_ms) {
  Statement st(db_,
               "INSERT INTO audit(time_ms, identity, peer, method, request, code, message) "
               "VALUES(?, ?, ?, ?, ?, ?, ?)");
  st.BindInt(now_)
      .BindText(Bounded(entry.identity, kMaxIdentity))
      .BindText(Bounded(entry.peer, kMaxIdentity))
      .BindText(entry.method)
      .BindText(Bounded(entry.request, kMaxRequest))
      .BindText(absl::StatusCodeToString(outcome.code()))
      .BindText(Bounded(outcome.ok() ? entry.result : outcome.message(), kMaxMessage));
  RETURN_IF_ERROR(st.Run());
  if (retention_ms <= 0) return absl::OkStatus();
  Statement prune(db_, "DELETE FROM audit WHERE time_ms < ?");
  prune.BindInt(now_ - retention_ms);
  return prune.Run();
}

absl::StatusOr<int64_t> NewestEventSeq(sqlite3* db) {
  Statement st(db, "SELECT COALESCE((SELECT seq FROM sqlite_sequence WHERE name = 'events'), 0)");
  ASSIGN_OR_RETURN(bool row, st.Step());
  return row ? st.Int(0) : 0;
}

absl::Status PruneEvents(sqlite3* db, int64_t newest, int64_t history) {
  if (history <= 0 || newest <= history) return absl::OkStatus();
  Statement st(db, "DELETE FROM events WHERE seq <= ?");
  st.BindInt(newest - history);
  return st.Run();
}

absl::Status ReadEventBatch(sqlite3* db, int64_t after, size_t limit, EventBatch* out) {
  {
    Statement range(db, "SELECT COALESCE(MIN(seq), 0) FROM events");
    ASSIGN_OR_RETURN(bool row, range.Step());
    out->oldest = row ? range.Int(0) : 0;
  }
  ASSIGN_OR_RETURN(out->newest, NewestEventSeq(db));
  Statement st(db, absl::StrCat("SELECT ", kEventCols,
                                " FROM events WHERE seq > ? ORDER BY seq LIMIT ?"));
  st.BindInt(after).BindInt(limit == 0 ? -1 : static_cast<int64_t>(limit));
  while (true) {
    ASSIGN_OR_RETURN(bool row, st.Step());
    if (!row) return absl::OkStatus();
    ASSIGN_OR_RETURN(EventRow e, ReadEvent(st));
    out->events.push_back(std::move(e));
  }
}

absl::StatusOr<std::vector<AuditRow>> ReadAudit(sqlite3* db, const AuditFilter& filter,
                                                int64_t after, size_t limit) {
  // "alice" means admin/alice; KIND/NAME matches any trust domain; a full
  // SPIFFE ID matches only itself.
  std::string suffix;
  if (!filter.who.empty() && filter.who.rfind("spiffe://", 0) != 0) {
    suffix = absl::StrCat("/", filter.who.find('/') == std::string::npos ? "admin/" : "",
                          filter.who);
  }
  Statement st(db,
               "SELECT seq, time_ms, identity, peer, method, request, code, message FROM audit "
               "WHERE seq > ?1 AND time_ms >= ?2 AND (?3 = '' OR identity = ?3 OR "
               "(?4 != '' AND substr(identity, -length(?4)) = ?4)) ORDER BY seq LIMIT ?5");
  st.BindInt(after)
      .BindInt(filter.since_ms)
      .BindText(filter.who)
      .BindText(suffix)
      .BindInt(limit == 0 ? -1 : static_cast<int64_t>(limit));
  std::vector<AuditRow> out;
  while (true) {
    ASSIGN_OR_RETURN(bool row, st.Step());
    if (!row) return out;
    out.push_back(AuditRow{st.Int(0), st.Int(1), st.Text(2), st.Text(3), st.Text(4), st.Text(5),
                           st.Text(6), st.Text(7)});
  }
}

}  // namespace pkgdist
