#include "controller/state_store.h"

#include <openssl/rand.h>
#include <sqlite3.h>

#include <algorithm>
#include <utility>

#include "absl/container/flat_hash_set.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/strings/str_join.h"
#include "controller/sqlite_util.h"
#include "controller/state_store_log.h"
#include "controller/state_store_migrations.h"
#include "shared/logging.h"
#include "shared/paths.h"
#include "shared/sha256.h"
#include "shared/status_macros.h"

namespace pkgdist {
namespace {

constexpr int kBusyTimeoutMs = 5000;

// Column lists, in the order the Read* functions below expect.
constexpr absl::string_view kAgentCols = "name, address, added_ms, labels, rate";
constexpr absl::string_view kPackageCols =
    "id, name, version, size, files, chunks, created_ms, signature";
constexpr absl::string_view kJobCols =
    "j.id, j.kind, j.package_id, j.package_label, j.max_attempts, j.deadline_ms, j.created_ms, "
    "j.rowid";
constexpr absl::string_view kTargetCols =
    "t.job_id, t.agent, t.state, t.attempts, t.consecutive_failures, t.next_attempt_ms, "
    "t.last_error, t.bytes_acked, t.bytes_total, t.bytes_sent, t.bytes_reused, t.updated_ms, "
    "t.bytes_from_peer";
// A column selected after kTargetCols has this index.
constexpr int kAfterTargetCols = 13;
constexpr absl::string_view kUnfinished = "t.state IN ('pending', 'transferring', 'retry_wait')";

AgentRow ReadAgent(const Statement& st) {
  // Written only in canonical form (FormatLabels); text that does not parse
  // (edited by hand) reads as no labels rather than failing every listing.
  absl::StatusOr<Labels> labels = ParseLabels(st.Text(3));
  // Likewise a rate: unparseable text reads as no limit.
  absl::StatusOr<Rate> rate = ParseRate(st.Text(4));
  return AgentRow{st.Text(0), st.Text(1), st.Int(2), labels.ok() ? *std::move(labels) : Labels(),
                  rate.ok() ? *rate : Rate::Unlimited()};
}

PackageRow ReadPackage(const Statement& st) {
  PackageRow p;
  p.id = st.Text(0);
  p.name = st.Text(1);
  p.version = st.Text(2);
  p.size = static_cast<uint64_t>(st.Int(3));
  p.files = static_cast<uint32_t>(st.Int(4));
  p.chunks = static_cast<uint32_t>(st.Int(5));
  p.created_ms = st.Int(6);
  p.signature = st.Blob(7);
  return p;
}

absl::StatusOr<JobRow> ReadJob(const Statement& st) {
  JobRow j;
  j.id = st.Text(0);
  absl::StatusOr<JobKind> kind = ParseJobKind(st.Text(1));
  if (!kind.ok()) return absl::DataLossError(absl::StrCat("job ", j.id, ": ", kind.status().message()));
  j.kind = *kind;
  j.package_id = st.Text(2);
  j.package = st.Text(3);
  j.policy.max_attempts = static_cast<uint32_t>(st.Int(4));
  j.policy.deadline_ms = st.Int(5);
  j.created_ms = st.Int(6);
  j.seq = st.Int(7);
  return j;
}

absl::StatusOr<TargetRow> ReadTarget(const Statement& st) {
  TargetRow t;
  t.job_id = st.Text(0);
  t.agent = st.Text(1);
  absl::StatusOr<TargetState> state = ParseTargetState(st.Text(2));
  if (!state.ok()) {
    return absl::DataLossError(
        absl::StrCat("target ", t.agent, " of job ", t.job_id, ": ", state.status().message()));
  }
  t.state = *state;
  t.attempts = static_cast<uint32_t>(st.Int(3));
  t.consecutive_failures = static_cast<uint32_t>(st.Int(4));
  t.next_attempt_ms = st.Int(5);
  t.last_error = st.Text(6);
  t.bytes_acked = static_cast<uint64_t>(st.Int(7));
  t.bytes_total = static_cast<uint64_t>(st.Int(8));
  t.bytes_sent = static_cast<uint64_t>(st.Int(9));
  t.bytes_reused = static_cast<uint64_t>(st.Int(10));
  t.updated_ms = st.Int(11);
  t.bytes_from_peer = static_cast<uint64_t>(st.Int(12));
  return t;
}

absl::StatusOr<std::vector<TargetRow>> ReadTargets(Statement& st) {
  std::vector<TargetRow> rows;
  while (true) {
    ASSIGN_OR_RETURN(bool row, st.Step());
    if (!row) return rows;
    ASSIGN_OR_RETURN(TargetRow t, ReadTarget(st));
    rows.push_back(std::move(t));
  }
}

absl::StatusOr<bool> Exists(sqlite3* db, absl::string_view sql, absl::string_view key) {
  Statement st(db, sql);
  st.BindText(key);
  return st.Step();
}

absl::Status CheckAgentExists(sqlite3* db, const std::string& name) {
  ASSIGN_OR_RETURN(bool found, Exists(db, "SELECT 1 FROM agents WHERE name = ?", name));
  if (!found) return absl::NotFoundError(absl::StrCat("agent ", name, " is not registered"));
  return absl::OkStatus();
}

absl::StatusOr<JobRow> LoadJob(sqlite3* db, const std::string& id) {
  Statement st(db, absl::StrCat("SELECT ", kJobCols, " FROM jobs j WHERE j.id = ?"));
  st.BindText(id);
  ASSIGN_OR_RETURN(bool found, st.Step());
  if (!found) return absl::NotFoundError(absl::StrCat("job ", id, " not found"));
  return ReadJob(st);
}

absl::StatusOr<PackageRow> LoadPackage(sqlite3* db, const std::string& id) {
  Statement st(db, absl::StrCat("SELECT ", kPackageCols, " FROM packages WHERE id = ?"));
  st.BindText(id);
  ASSIGN_OR_RETURN(bool found, st.Step());
  if (!found) return absl::NotFoundError(absl::StrCat("package ", id, " not found"));
  return ReadPackage(st);
}

absl::StatusOr<TargetRow> LoadTarget(sqlite3* db, const std::string& job,
                                     const std::string& agent) {
  Statement st(db, absl::StrCat("SELECT ", kTargetCols,
                                " FROM targets t WHERE t.job_id = ? AND t.agent = ?"));
  st.BindText(job).BindText(agent);
  ASSIGN_OR_RETURN(bool found, st.Step());
  if (found) return ReadTarget(st);
  RETURN_IF_ERROR(LoadJob(db, job).status());
  return absl::NotFoundError(absl::StrCat("agent ", agent, " is not a target of job ", job));
}

// Every target of `job` (only `agent`'s if not empty), ordered by agent.
// NOT_FOUND for an unknown job, or an `agent` that is not one of its targets.
absl::StatusOr<std::vector<TargetRow>> LoadJobTargets(sqlite3* db, const std::string& job,
                                                      const std::string& agent) {
  if (!agent.empty()) {
    ASSIGN_OR_RETURN(TargetRow t, LoadTarget(db, job, agent));
    return std::vector<TargetRow>{std::move(t)};
  }
  RETURN_IF_ERROR(LoadJob(db, job).status());
  Statement st(db, absl::StrCat("SELECT ", kTargetCols,
                                " FROM targets t WHERE t.job_id = ? ORDER BY t.agent"));
  st.BindText(job);
  return ReadTargets(st);
}

// Moves `row` (already edited by the caller) to `to` and stores it, with
// its target_changed event, if the state machine has that edge.
absl::Status Transition(ChangeLog& log, TargetRow row, TargetState to) {
  if (absl::Status s = CheckTransition(row.state, to); !s.ok()) {
    return absl::FailedPreconditionError(
        absl::StrCat("target ", row.agent, " of job ", row.job_id, ": ", s.message()));
  }
  row.state = to;
  row.updated_ms = log.now();
  Statement st(log.db(),
               "UPDATE targets SET state = ?, attempts = ?, consecutive_failures = ?, "
               "next_attempt_ms = ?, last_error = ?, bytes_acked = ?, bytes_total = ?, "
               "bytes_sent = ?, bytes_reused = ?, bytes_from_peer = ?, updated_ms = ? "
               "WHERE job_id = ? AND agent = ?");
  st.BindText(TargetStateName(row.state))
      .BindInt(row.attempts)
      .BindInt(row.consecutive_failures)
      .BindInt(row.next_attempt_ms)
      .BindText(row.last_error)
      .BindInt(static_cast<int64_t>(row.bytes_acked))
      .BindInt(static_cast<int64_t>(row.bytes_total))
      .BindInt(static_cast<int64_t>(row.bytes_sent))
      .BindInt(static_cast<int64_t>(row.bytes_reused))
      .BindInt(static_cast<int64_t>(row.bytes_from_peer))
      .BindInt(row.updated_ms)
      .BindText(row.job_id)
      .BindText(row.agent);
  RETURN_IF_ERROR(st.Run());
  return log.Target(row);
}

// Cancels the non-final targets among `rows` with `reason`; returns how many.
absl::StatusOr<int> CancelTargets(ChangeLog& log, std::vector<TargetRow> rows,
                                  const std::string& reason) {
  int n = 0;
  for (TargetRow& t : rows) {
    if (IsFinal(t.state)) continue;
    t.last_error = reason;
    t.next_attempt_ms = 0;
    RETURN_IF_ERROR(Transition(log, std::move(t), TargetState::kCancelled));
    ++n;
  }
  return n;
}

absl::StatusOr<std::string> UnusedJobId(sqlite3* db) {
  for (int tries = 0; tries < 8; ++tries) {
    unsigned char bytes[8];
    if (RAND_bytes(bytes, sizeof bytes) != 1) {
      return absl::InternalError("no random bytes for a job id (OpenSSL RAND_bytes failed)");
    }
    std::string id = ToHex(absl::string_view(reinterpret_cast<const char*>(bytes), sizeof bytes));
    ASSIGN_OR_RETURN(bool taken, Exists(db, "SELECT 1 FROM jobs WHERE id = ?", id));
    if (!taken) return id;
  }
  return absl::InternalError("could not find an unused job id");
}

// Sets WAL mode, full synchronous commits and foreign keys on `db`.
absl::Status ConfigureConnection(sqlite3* db) {
  sqlite3_busy_timeout(db, kBusyTimeoutMs);
  Statement wal(db, "PRAGMA journal_mode = WAL");
  ASSIGN_OR_RETURN(bool row, wal.Step());
  std::string mode = row ? wal.Text(0) : "";
  // An in-memory database (":memory:") reports "memory"; it has no journal.
  if (mode != "wal" && mode != "memory") {
    return absl::FailedPreconditionError(
        absl::StrCat("state database: cannot use WAL journal mode (got \"", mode, "\")"));
  }
  RETURN_IF_ERROR(ExecSql(db, "PRAGMA synchronous = FULL"));
  return ExecSql(db, "PRAGMA foreign_keys = ON");
}

// PRAGMA quick_check: a truncated or damaged database is refused at start,
// never silently used (or replaced by an empty one).
absl::Status CheckIntegrity(sqlite3* db) {
  Statement st(db, "PRAGMA quick_check");
  absl::StatusOr<bool> row = st.Step();
  if (!row.ok()) return row.status();
  std::string result = *row ? st.Text(0) : "no answer";
  if (result == "ok") return absl::OkStatus();
  return absl::DataLossError(absl::StrCat("quick_check: ", result));
}

}  // namespace

StateStore::StateStore(sqlite3* db, sqlite3* read_db, const Clock* clock, StoreOptions options,
                       int64_t newest_event)
    : db_(db), read_db_(read_db), clock_(clock), options_(options), newest_event_(newest_event) {}

StateStore::~StateStore() {
  absl::MutexLock rl(&read_mu_);
  absl::MutexLock l(&mu_);
  for (sqlite3* db : {read_db_, db_}) {
    if (int rc = sqlite3_close_v2(db); rc != SQLITE_OK) {
      spdlog::warn("closing the state database: {}", sqlite3_errstr(rc));
    }
  }
}

absl::StatusOr<std::unique_ptr<StateStore>> StateStore::Open(const std::string& path,
                                                             const Clock* clock,
                                                             StoreOptions options) {
  if (clock == nullptr) return absl::InvalidArgumentError("StateStore::Open needs a clock");
  auto open = [&path](int flags) -> absl::StatusOr<DbHandle> {
    sqlite3* raw = nullptr;
    int rc = sqlite3_open_v2(path.c_str(), &raw, flags | SQLITE_OPEN_NOMUTEX, nullptr);
    DbHandle db(raw);  // a handle is returned even on failure
    if (rc != SQLITE_OK) return SqliteStatus(db.get(), rc, absl::StrCat("open ", path));
    return db;
  };
  ASSIGN_OR_RETURN(DbHandle db, open(SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE));
  absl::Status s = ConfigureConnection(db.get());
  if (s.ok()) s = CheckIntegrity(db.get());
  if (s.ok()) s = ApplyMigrations(db.get(), StateStoreMigrations());
  if (absl::IsDataLoss(s)) {
    return absl::DataLossError(absl::StrCat(
        path, ": the database is damaged (", s.message(), "); restore it from a backup, or "
        "move it away to start with an empty state (every agent, package and job is then "
        "forgotten)"));
  }
  if (!s.ok()) return absl::Status(s.code(), absl::StrCat(path, ": ", s.message()));
  absl::StatusOr<int64_t> newest = NewestEventSeq(db.get());
  // A smaller --event-history than the last run's takes effect at once.
  if (newest.ok()) s = PruneEvents(db.get(), *newest, options.event_history);
  if (!newest.ok() || !s.ok()) {
    return absl::Status(newest.ok() ? s.code() : newest.status().code(),
                        absl::StrCat(path, ": reading the event log: ",
                                     newest.ok() ? s.message() : newest.status().message()));
  }
  DbHandle reader;
  if (path != ":memory:") {
    ASSIGN_OR_RETURN(reader, open(SQLITE_OPEN_READONLY));
    sqlite3_busy_timeout(reader.get(), kBusyTimeoutMs);
  }
  return std::unique_ptr<StateStore>(
      new StateStore(db.release(), reader.release(), clock, options, *newest));
}

absl::Status StateStore::Transact(absl::FunctionRef<absl::Status(ChangeLog&)> fn,
                                  AuditEntry* audit) {
  absl::MutexLock l(&mu_);
  const absl::Time began = absl::Now();
  RETURN_IF_ERROR(ExecSql(db_, "BEGIN IMMEDIATE"));
  const sqlite3_int64 before = sqlite3_total_changes64(db_);
  int64_t last_event = 0;
  absl::Status s;
  {
    // Destroyed before COMMIT: it holds prepared statements.
    ChangeLog log(db_, clock_->NowMs());
    s = fn(log);
    if (s.ok()) s = log.Finish(options_.event_history);
    if (s.ok() && audit != nullptr) {
      s = log.WriteAudit(*audit, absl::OkStatus(), options_.audit_retention_ms);
    }
    last_event = log.last_seq();
  }
  if (s.ok()) s = ExecSql(db_, "COMMIT");
  if (!s.ok()) {
    if (sqlite3_get_autocommit(db_) == 0) {
      if (absl::Status r = ExecSql(db_, "ROLLBACK"); !r.ok()) spdlog::error("{}", r);
    }
    return s;
  }
  ++transactions_;
  if (audit != nullptr) audit->recorded = true;
  if (commit_observer_) commit_observer_(absl::Now() - began);
  if (sqlite3_total_changes64(db_) != before) {
    absl::MutexLock vl(&version_mu_);
    ++version_;
    if (last_event > 0) newest_event_ = last_event;
  }
  return absl::OkStatus();
}

absl::Status StateStore::Read(absl::FunctionRef<absl::Status(sqlite3*, int64_t)> fn) {
  {
    absl::MutexLock l(&read_mu_);
    if (read_db_ != nullptr) return fn(read_db_, clock_->NowMs());
  }
  absl::MutexLock l(&mu_);
  return fn(db_, clock_->NowMs());
}

// --- Agents.

absl::Status StateStore::AddAgent(const std::string& name, const std::string& address,
                                  AuditEntry* audit, const std::optional<Labels>& labels) {
  RETURN_IF_ERROR(ValidateName(name, "agent name"));
  if (address.empty()) return absl::InvalidArgumentError(absl::StrCat("agent ", name, ": empty address"));
  return Transact(
      [&](ChangeLog& log) -> absl::Status {
        Statement find(log.db(), "SELECT address, labels FROM agents WHERE name = ?");
        find.BindText(name);
        ASSIGN_OR_RETURN(bool found, find.Step());
        const std::string old_labels = found ? find.Text(1) : "";
        const std::string new_labels = labels.has_value() ? FormatLabels(*labels) : old_labels;
        if (found && find.Text(0) == address && new_labels == old_labels) {
          if (audit != nullptr) audit->result = "already registered at this address";
          return absl::OkStatus();
        }
        Statement st(log.db(),
                     "INSERT INTO agents(name, address, added_ms, labels) VALUES(?, ?, ?, ?) "
                     "ON CONFLICT(name) DO UPDATE SET address = excluded.address, "
                     "labels = excluded.labels");
        st.BindText(name).BindText(address).BindInt(log.now()).BindText(new_labels);
        RETURN_IF_ERROR(st.Run());
        EventRow e;
        e.kind = found ? EventKind::kAgentUpdated : EventKind::kAgentAdded;
        e.agent = name;
        e.address = address;
        if (!new_labels.empty()) e.detail = absl::StrCat("labels ", new_labels);
        if (audit != nullptr) {
          audit->result = !found                      ? std::string("registered")
                          : find.Text(0) != address ? absl::StrCat("address changed from ", find.Text(0))
                                                    : absl::StrCat("labels changed from \"", old_labels, "\"");
        }
        return log.Add(std::move(e));
      },
      audit);
}

absl::StatusOr<AgentRow> StateStore::ChangeAgent(
    const std::string& name, absl::string_view column, bool quote,
    absl::FunctionRef<std::pair<std::string, std::string>(AgentRow&)> change, AuditEntry* audit) {
  AgentRow row;
  RETURN_IF_ERROR(Transact(
      [&](ChangeLog& log) -> absl::Status {
        Statement find(log.db(), absl::StrCat("SELECT ", kAgentCols, " FROM agents WHERE name = ?"));
        find.BindText(name);
        ASSIGN_OR_RETURN(bool found, find.Step());
        if (!found) return absl::NotFoundError(absl::StrCat("agent ", name, " is not registered"));
        row = ReadAgent(find);
        const auto [before, after] = change(row);
        const char* q = quote ? "\"" : "";
        if (audit != nullptr) {
          audit->result = absl::StrCat(column, " ", q, before, q, " -> ", q, after, q);
        }
        if (after == before) return absl::OkStatus();
        Statement st(log.db(), absl::StrCat("UPDATE agents SET ", column, " = ? WHERE name = ?"));
        st.BindText(after).BindText(name);
        RETURN_IF_ERROR(st.Run());
        EventRow e;
        e.kind = EventKind::kAgentUpdated;
        e.agent = name;
        e.address = row.address;
        e.detail = absl::StrCat(column, " ", after);
        return log.Add(std::move(e));
      },
      audit));
  return row;
}

absl::StatusOr<AgentRow> StateStore::SetAgentLabels(const std::string& name, const Labels& set,
                                                    const std::vector<std::string>& remove,
                                                    AuditEntry* audit) {
  return ChangeAgent(name, "labels", /*quote=*/true, [&](AgentRow& row) {
    const std::string before = FormatLabels(row.labels);
    for (const std::string& key : remove) row.labels.erase(key);
    for (const auto& [key, value] : set) row.labels[key] = value;
    return std::make_pair(before, FormatLabels(row.labels));
  }, audit);
}

absl::StatusOr<AgentRow> StateStore::SetAgentRate(const std::string& name, Rate rate,
                                                  AuditEntry* audit) {
  return ChangeAgent(name, "rate", /*quote=*/false, [&](AgentRow& row) {
    const std::string before = FormatRate(row.rate);
    row.rate = rate;
    return std::make_pair(before, FormatRate(rate));
  }, audit);
}

absl::StatusOr<AgentRow> StateStore::GetAgent(const std::string& name) {
  AgentRow out;
  RETURN_IF_ERROR(Read([&](sqlite3* db, int64_t) -> absl::Status {
    Statement st(db, absl::StrCat("SELECT ", kAgentCols, " FROM agents WHERE name = ?"));
    st.BindText(name);
    ASSIGN_OR_RETURN(bool found, st.Step());
    if (!found) return absl::NotFoundError(absl::StrCat("agent ", name, " is not registered"));
    out = ReadAgent(st);
    return absl::OkStatus();
  }));
  return out;
}

absl::StatusOr<std::vector<AgentRow>> StateStore::ListAgents(const std::string& name_prefix,
                                                             const std::string& after,
                                                             size_t limit) {
  std::vector<AgentRow> out;
  RETURN_IF_ERROR(Read([&](sqlite3* db, int64_t) -> absl::Status {
    Statement st(db, absl::StrCat("SELECT ", kAgentCols,
                                  " FROM agents WHERE substr(name, 1, length(?1)) = ?1 "
                                  "AND name > ?2 ORDER BY name LIMIT ?3"));
    st.BindText(name_prefix).BindText(after).BindInt(limit == 0 ? -1 : static_cast<int64_t>(limit));
    while (true) {
      ASSIGN_OR_RETURN(bool row, st.Step());
      if (!row) return absl::OkStatus();
      out.push_back(ReadAgent(st));
    }
  }));
  return out;
}

absl::StatusOr<int> StateStore::RemoveAgent(const std::string& name, const std::string& reason,
                                            AuditEntry* audit) {
  int cancelled = 0;
  RETURN_IF_ERROR(Transact(
      [&](ChangeLog& log) -> absl::Status {
        sqlite3* db = log.db();
        RETURN_IF_ERROR(CheckAgentExists(db, name));
        Statement st(db, absl::StrCat("SELECT ", kTargetCols,
                                      " FROM targets t WHERE t.agent = ? AND ", kUnfinished,
                                      " ORDER BY t.job_id"));
        st.BindText(name);
        ASSIGN_OR_RETURN(std::vector<TargetRow> rows, ReadTargets(st));
        ASSIGN_OR_RETURN(cancelled, CancelTargets(log, std::move(rows), reason));
        Statement del(db, "DELETE FROM agents WHERE name = ?");
        del.BindText(name);
        RETURN_IF_ERROR(del.Run());
        EventRow e;
        e.kind = EventKind::kAgentRemoved;
        e.agent = name;
        if (audit != nullptr) audit->result = absl::StrCat(cancelled, " target(s) cancelled");
        return log.Add(std::move(e));
      },
      audit));
  return cancelled;
}

// --- Packages.

absl::Status StateStore::AddPackage(const PackageRow& p, const std::string& manifest_bytes,
                                    AuditEntry* audit) {
  if (p.id.empty()) return absl::InvalidArgumentError("package without an id");
  RETURN_IF_ERROR(ValidateName(p.name, "package name"));
  RETURN_IF_ERROR(ValidateName(p.version, "package version"));
  return Transact([&](ChangeLog& log) -> absl::Status {
    sqlite3* db = log.db();
    const int64_t now = log.now();
    Statement find(db, "SELECT id FROM packages WHERE name = ? AND version = ?");
    find.BindText(p.name).BindText(p.version);
    ASSIGN_OR_RETURN(bool found, find.Step());
    if (found) {
      if (find.Text(0) == p.id) {
        if (audit != nullptr) audit->result = absl::StrCat("id ", p.id, ": already imported");
        return absl::OkStatus();
      }
      return absl::AlreadyExistsError(absl::StrCat("package ", p.name, "@", p.version,
                                                   " already exists with another content (id ",
                                                   find.Text(0), ")"));
    }
    Statement st(db,
                 "INSERT INTO packages(id, name, version, size, files, chunks, created_ms, manifest, "
                 "signature) VALUES(?, ?, ?, ?, ?, ?, ?, ?, ?)");
    st.BindText(p.id)
        .BindText(p.name)
        .BindText(p.version)
        .BindInt(static_cast<int64_t>(p.size))
        .BindInt(p.files)
        .BindInt(p.chunks)
        .BindInt(p.created_ms != 0 ? p.created_ms : now)
        .BindBlob(manifest_bytes)
        .BindBlob(p.signature);
    RETURN_IF_ERROR(st.Run());
    EventRow e;
    e.kind = EventKind::kPackageImported;
    e.package = absl::StrCat(p.name, "@", p.version);
    e.package_id = p.id;
    if (audit != nullptr && audit->result.empty()) audit->result = absl::StrCat("id ", p.id);
    return log.Add(std::move(e));
  }, audit);
}

absl::Status StateStore::SetPackageSignature(const std::string& id, const std::string& signature,
                                             const std::string& detail, AuditEntry* audit) {
  return Transact(
      [&](ChangeLog& log) -> absl::Status {
        ASSIGN_OR_RETURN(PackageRow p, LoadPackage(log.db(), id));
        Statement st(log.db(), "UPDATE packages SET signature = ? WHERE id = ?");
        st.BindBlob(signature).BindText(id);
        RETURN_IF_ERROR(st.Run());
        EventRow e;
        e.kind = EventKind::kPackageSigned;
        e.package = absl::StrCat(p.name, "@", p.version);
        e.package_id = id;
        e.detail = detail;
        if (audit != nullptr && audit->result.empty()) {
          audit->result = absl::StrCat("id ", id, ": signature stored");
        }
        return log.Add(std::move(e));
      },
      audit);
}

absl::StatusOr<PackageRow> StateStore::FindPackage(const std::string& name,
                                                   const std::string& version) {
  PackageRow out;
  RETURN_IF_ERROR(Read([&](sqlite3* db, int64_t) -> absl::Status {
    Statement st(db, absl::StrCat("SELECT ", kPackageCols,
                                  " FROM packages WHERE name = ? AND version = ?"));
    st.BindText(name).BindText(version);
    ASSIGN_OR_RETURN(bool found, st.Step());
    if (!found) return absl::NotFoundError(absl::StrCat("package ", name, "@", version, " not found"));
    out = ReadPackage(st);
    return absl::OkStatus();
  }));
  return out;
}

absl::StatusOr<PackageRow> StateStore::GetPackageById(const std::string& id) {
  PackageRow out;
  RETURN_IF_ERROR(Read([&](sqlite3* db, int64_t) -> absl::Status {
    ASSIGN_OR_RETURN(out, LoadPackage(db, id));
    return absl::OkStatus();
  }));
  return out;
}

absl::StatusOr<std::string> StateStore::GetManifestBytes(const std::string& id) {
  std::string out;
  RETURN_IF_ERROR(Read([&](sqlite3* db, int64_t) -> absl::Status {
    Statement st(db, "SELECT manifest FROM packages WHERE id = ?");
    st.BindText(id);
    ASSIGN_OR_RETURN(bool found, st.Step());
    if (!found) return absl::NotFoundError(absl::StrCat("package ", id, " not found"));
    out = st.Blob(0);
    return absl::OkStatus();
  }));
  return out;
}

absl::StatusOr<std::vector<PackageRow>> StateStore::ListPackages(const std::string& name,
                                                                 const std::string& after_name,
                                                                 const std::string& after_version,
                                                                 size_t limit) {
  std::vector<PackageRow> out;
  RETURN_IF_ERROR(Read([&](sqlite3* db, int64_t) -> absl::Status {
    Statement st(db, absl::StrCat("SELECT ", kPackageCols,
                                  " FROM packages WHERE (?1 = '' OR name = ?1) "
                                  "AND (?2 = '' OR (name, version) > (?2, ?3)) "
                                  "ORDER BY name, version LIMIT ?4"));
    st.BindText(name).BindText(after_name).BindText(after_version).BindInt(
        limit == 0 ? -1 : static_cast<int64_t>(limit));
    while (true) {
      ASSIGN_OR_RETURN(bool row, st.Step());
      if (!row) return absl::OkStatus();
      out.push_back(ReadPackage(st));
    }
  }));
  return out;
}

absl::StatusOr<std::vector<std::string>> StateStore::DeletePackage(const std::string& id,
                                                                   bool force,
                                                                   AuditEntry* audit) {
  std::vector<std::string> cancelled_jobs;
  RETURN_IF_ERROR(Transact([&](ChangeLog& log) -> absl::Status {
    sqlite3* db = log.db();
    ASSIGN_OR_RETURN(PackageRow p, LoadPackage(db, id));
    Statement st(db, absl::StrCat("SELECT ", kTargetCols,
                                  " FROM targets t JOIN jobs j ON j.id = t.job_id "
                                  "WHERE j.package_id = ? AND ",
                                  kUnfinished, " ORDER BY j.created_ms, j.rowid, t.agent"));
    st.BindText(id);
    ASSIGN_OR_RETURN(std::vector<TargetRow> needed, ReadTargets(st));
    if (!needed.empty() && !force) {
      absl::flat_hash_set<std::string> jobs;
      for (const TargetRow& t : needed) jobs.insert(t.job_id);
      std::vector<std::string> sorted(jobs.begin(), jobs.end());
      std::sort(sorted.begin(), sorted.end());
      return absl::FailedPreconditionError(absl::StrCat(
          "package ", p.name, "@", p.version, " is still needed by ", needed.size(),
          " unfinished target(s) of job(s) ", absl::StrJoin(sorted, ", "),
          "; cancel them first or force the deletion"));
    }
    absl::flat_hash_set<std::string> jobs;
    for (const TargetRow& t : needed) jobs.insert(t.job_id);
    cancelled_jobs.assign(jobs.begin(), jobs.end());
    std::sort(cancelled_jobs.begin(), cancelled_jobs.end());
    ASSIGN_OR_RETURN(int n, CancelTargets(log, std::move(needed), "package deleted"));
    Statement del(db, "DELETE FROM packages WHERE id = ?");
    del.BindText(id);
    RETURN_IF_ERROR(del.Run());
    EventRow e;
    e.kind = EventKind::kPackageDeleted;
    e.package = absl::StrCat(p.name, "@", p.version);
    e.package_id = id;
    if (audit != nullptr) {
      audit->result = n == 0 ? absl::StrCat("id ", id, " deleted")
                             : absl::StrCat("id ", id, " deleted; ", n, " target(s) of job(s) ",
                                            absl::StrJoin(cancelled_jobs, ","), " cancelled");
    }
    return log.Add(std::move(e));
  }, audit));
  return cancelled_jobs;
}

// --- Jobs.

absl::StatusOr<JobRow> StateStore::CreateJob(JobKind kind, const std::string& package_id,
                                             const std::vector<std::string>& agents,
                                             const JobPolicy& policy, uint64_t bytes_total,
                                             AuditEntry* audit) {
  if (agents.empty()) return absl::InvalidArgumentError("a job needs at least one target agent");
  absl::flat_hash_set<absl::string_view> unique;
  for (const std::string& a : agents) {
    if (!unique.insert(a).second) {
      return absl::InvalidArgumentError(absl::StrCat("agent ", a, " is listed twice"));
    }
  }
  JobRow job;
  RETURN_IF_ERROR(Transact([&](ChangeLog& log) -> absl::Status {
    sqlite3* db = log.db();
    const int64_t now = log.now();
    ASSIGN_OR_RETURN(PackageRow p, LoadPackage(db, package_id));
    for (const std::string& a : agents) RETURN_IF_ERROR(CheckAgentExists(db, a));
    ASSIGN_OR_RETURN(job.id, UnusedJobId(db));
    job.kind = kind;
    job.package_id = package_id;
    job.package = absl::StrCat(p.name, "@", p.version);
    job.policy = policy;
    job.created_ms = now;
    Statement ins(db,
                  "INSERT INTO jobs(id, kind, package_id, package_label, max_attempts, "
                  "deadline_ms, created_ms) VALUES(?, ?, ?, ?, ?, ?, ?)");
    ins.BindText(job.id)
        .BindText(JobKindName(kind))
        .BindText(package_id)
        .BindText(job.package)
        .BindInt(policy.max_attempts)
        .BindInt(policy.deadline_ms)
        .BindInt(now);
    RETURN_IF_ERROR(ins.Run());
    Statement tgt(db,
                  "INSERT INTO targets(job_id, agent, state, bytes_total, updated_ms) "
                  "VALUES(?, ?, 'pending', ?, ?)");
    EventRow created;
    created.kind = EventKind::kJobCreated;
    created.job_id = job.id;
    created.job_kind = std::string(JobKindName(kind));
    created.package = job.package;
    created.package_id = package_id;
    created.state = std::string(JobStateName(JobState::kPending));
    created.detail = absl::StrCat(agents.size(), " target(s)");
    RETURN_IF_ERROR(log.Add(std::move(created)));
    for (const std::string& a : agents) {
      tgt.Reset();
      tgt.BindText(job.id).BindText(a).BindInt(static_cast<int64_t>(bytes_total)).BindInt(now);
      RETURN_IF_ERROR(tgt.Run());
      TargetRow t;
      t.job_id = job.id;
      t.agent = a;
      t.bytes_total = bytes_total;
      t.updated_ms = now;
      RETURN_IF_ERROR(log.Target(t));
    }
    if (audit != nullptr) {
      audit->result = absl::StrCat("job ", job.id, " created with ", agents.size(), " target(s)");
    }
    return absl::OkStatus();
  }, audit));
  return job;
}

absl::StatusOr<JobView> StateStore::GetJob(const std::string& id) {
  JobView view;
  RETURN_IF_ERROR(Read([&](sqlite3* db, int64_t) -> absl::Status {
    ASSIGN_OR_RETURN(view.job, LoadJob(db, id));
    ASSIGN_OR_RETURN(view.targets, LoadJobTargets(db, id, ""));
    return absl::OkStatus();
  }));
  std::vector<TargetState> states;
  for (const TargetRow& t : view.targets) states.push_back(t.state);
  view.state = DeriveJobState(states);
  return view;
}

absl::StatusOr<JobRow> StateStore::GetJobRow(const std::string& id) {
  JobRow row;
  RETURN_IF_ERROR(Read([&](sqlite3* db, int64_t) -> absl::Status {
    ASSIGN_OR_RETURN(row, LoadJob(db, id));
    return absl::OkStatus();
  }));
  return row;
}

absl::StatusOr<bool> StateStore::JobEnded(const std::string& id) {
  bool ended = false;
  RETURN_IF_ERROR(Read([&](sqlite3* db, int64_t) -> absl::Status {
    Statement st(db, absl::StrCat("SELECT COUNT(*), COALESCE(SUM(", kUnfinished,
                                  "), 0) FROM targets t WHERE t.job_id = ?"));
    st.BindText(id);
    ASSIGN_OR_RETURN(bool row, st.Step());
    ended = row && st.Int(0) > 0 && st.Int(1) == 0;
    return absl::OkStatus();
  }));
  return ended;
}

absl::StatusOr<std::vector<JobView>> StateStore::ListJobs(const JobFilter& filter,
                                                         std::optional<JobCursor> after,
                                                         size_t limit) {
  std::vector<JobView> out;
  RETURN_IF_ERROR(Read([&](sqlite3* db, int64_t) -> absl::Status {
    Statement jobs(db, absl::StrCat(
                           "SELECT ", kJobCols, " FROM jobs j WHERE (?1 = '' OR j.package_label = ?1) "
                           "AND (?2 = '' OR EXISTS (SELECT 1 FROM targets t "
                           "WHERE t.job_id = j.id AND t.agent = ?2)) "
                           "AND (?3 = 0 OR (j.created_ms, j.rowid) < (?4, ?5)) "
                           "ORDER BY j.created_ms DESC, j.rowid DESC"));
    jobs.BindText(filter.package)
        .BindText(filter.agent)
        .BindInt(after.has_value() ? 1 : 0)
        .BindInt(after.has_value() ? after->created_ms : 0)
        .BindInt(after.has_value() ? after->seq : 0);
    Statement targets(db, absl::StrCat("SELECT ", kTargetCols,
                                       " FROM targets t WHERE t.job_id = ? ORDER BY t.agent"));
    while (true) {
      ASSIGN_OR_RETURN(bool row, jobs.Step());
      if (!row) return absl::OkStatus();
      JobView view;
      ASSIGN_OR_RETURN(view.job, ReadJob(jobs));
      targets.Reset();
      targets.BindText(view.job.id);
      ASSIGN_OR_RETURN(view.targets, ReadTargets(targets));
      std::vector<TargetState> states;
      for (const TargetRow& t : view.targets) states.push_back(t.state);
      view.state = DeriveJobState(states);
      if (filter.state.has_value() && view.state != *filter.state) continue;
      out.push_back(std::move(view));
      if (limit > 0 && out.size() >= limit) return absl::OkStatus();
    }
  }));
  return out;
}

absl::Status StateStore::DeleteJob(const std::string& id, AuditEntry* audit) {
  return Transact([&](ChangeLog& log) -> absl::Status {
    sqlite3* db = log.db();
    ASSIGN_OR_RETURN(JobRow job, LoadJob(db, id));
    ASSIGN_OR_RETURN(std::vector<TargetRow> targets, LoadJobTargets(db, id, ""));
    std::vector<std::string> unfinished;
    for (const TargetRow& t : targets) {
      if (!IsFinal(t.state)) unfinished.push_back(absl::StrCat(t.agent, " (", TargetStateName(t.state), ")"));
    }
    if (!unfinished.empty()) {
      return absl::FailedPreconditionError(
          absl::StrCat("job ", id, " is not finished: ", absl::StrJoin(unfinished, ", "),
                       "; cancel it first"));
    }
    Statement del(db, "DELETE FROM jobs WHERE id = ?");
    del.BindText(id);
    RETURN_IF_ERROR(del.Run());  // its targets go with it (ON DELETE CASCADE)
    EventRow e;
    e.kind = EventKind::kJobDeleted;
    e.job_id = id;
    e.package = job.package;
    e.detail = "by operator";
    if (audit != nullptr) audit->result = absl::StrCat("job ", id, " deleted");
    return log.Add(std::move(e));
  }, audit);
}

absl::StatusOr<int> StateStore::PruneFinishedJobs(int64_t before_ms) {
  int n = 0;
  RETURN_IF_ERROR(Transact([&](ChangeLog& log) -> absl::Status {
    sqlite3* db = log.db();
    const std::string expired = absl::StrCat(
        "SELECT t.job_id FROM targets t GROUP BY t.job_id HAVING SUM(", kUnfinished,
        ") = 0 AND MAX(t.updated_ms) <= ?");
    Statement find(db, absl::StrCat("SELECT id, package_label FROM jobs WHERE id IN (", expired,
                                    ") ORDER BY created_ms, rowid"));
    find.BindInt(before_ms);
    std::vector<EventRow> deleted;
    while (true) {
      ASSIGN_OR_RETURN(bool row, find.Step());
      if (!row) break;
      EventRow e;
      e.kind = EventKind::kJobDeleted;
      e.job_id = find.Text(0);
      e.package = find.Text(1);
      e.detail = "retention";
      deleted.push_back(std::move(e));
    }
    Statement del(db, absl::StrCat("DELETE FROM jobs WHERE id IN (", expired, ")"));
    del.BindInt(before_ms);
    RETURN_IF_ERROR(del.Run());
    n = sqlite3_changes(db);
    for (EventRow& e : deleted) RETURN_IF_ERROR(log.Add(std::move(e)));
    return absl::OkStatus();
  }));
  return n;
}

// --- Target transitions.

absl::Status StateStore::StartAttempt(const std::string& job, const std::string& agent) {
  return Transact([&](ChangeLog& log) -> absl::Status {
    sqlite3* db = log.db();
    ASSIGN_OR_RETURN(TargetRow t, LoadTarget(db, job, agent));
    if (t.state != TargetState::kPending && t.state != TargetState::kRetryWait) {
      return absl::FailedPreconditionError(
          absl::StrCat("target ", agent, " of job ", job, ": cannot start an attempt while ",
                       TargetStateName(t.state)));
    }
    t.attempts += 1;
    t.next_attempt_ms = 0;
    return Transition(log, std::move(t), TargetState::kTransferring);
  });
}

absl::Status StateStore::RecordProgress(const std::string& job, const std::string& agent,
                                        uint64_t bytes_acked, uint64_t bytes_sent_delta,
                                        bool made_progress, uint64_t bytes_reused_delta,
                                        uint64_t bytes_from_peer_delta) {
  return Transact([&](ChangeLog& log) -> absl::Status {
    sqlite3* db = log.db();
    const int64_t now = log.now();
    ASSIGN_OR_RETURN(TargetRow t, LoadTarget(db, job, agent));
    if (t.state != TargetState::kTransferring) {
      return absl::FailedPreconditionError(absl::StrCat(
          "target ", agent, " of job ", job, ": no transfer in progress (", TargetStateName(t.state), ")"));
    }
    Statement st(db,
                 "UPDATE targets SET bytes_acked = ?, bytes_sent = bytes_sent + ?, "
                 "bytes_reused = bytes_reused + ?, bytes_from_peer = bytes_from_peer + ?, "
                 "consecutive_failures = CASE WHEN ? THEN 0 ELSE consecutive_failures END, "
                 "updated_ms = ? WHERE job_id = ? AND agent = ?");
    st.BindInt(static_cast<int64_t>(bytes_acked))
        .BindInt(static_cast<int64_t>(bytes_sent_delta))
        .BindInt(static_cast<int64_t>(bytes_reused_delta))
        .BindInt(static_cast<int64_t>(bytes_from_peer_delta))
        .BindInt(made_progress ? 1 : 0)
        .BindInt(now)
        .BindText(job)
        .BindText(agent);
    return st.Run();
  });
}

absl::StatusOr<int> StateStore::RecordProgressBatch(const std::vector<ProgressUpdate>& updates) {
  int applied = 0;
  if (updates.empty()) return applied;
  RETURN_IF_ERROR(Transact([&](ChangeLog& log) -> absl::Status {
    sqlite3* db = log.db();
    const int64_t now = log.now();
    applied = 0;
    Statement st(db,
                 "UPDATE targets SET bytes_acked = ?, bytes_sent = bytes_sent + ?, "
                 "bytes_reused = bytes_reused + ?, bytes_from_peer = bytes_from_peer + ?, "
                 "consecutive_failures = CASE WHEN ? THEN 0 ELSE consecutive_failures END, "
                 "updated_ms = ? WHERE job_id = ? AND agent = ? AND state = 'transferring'");
    for (const ProgressUpdate& u : updates) {
      st.Reset();
      st.BindInt(static_cast<int64_t>(u.bytes_acked))
          .BindInt(static_cast<int64_t>(u.bytes_sent_delta))
          .BindInt(static_cast<int64_t>(u.bytes_reused_delta))
          .BindInt(static_cast<int64_t>(u.bytes_from_peer_delta))
          .BindInt(u.made_progress ? 1 : 0)
          .BindInt(now)
          .BindText(u.job_id)
          .BindText(u.agent);
      RETURN_IF_ERROR(st.Run());
      applied += sqlite3_changes(db);
    }
    return absl::OkStatus();
  }));
  return applied;
}

absl::Status StateStore::MarkDone(const std::string& job, const std::string& agent) {
  return Transact([&](ChangeLog& log) -> absl::Status {
    sqlite3* db = log.db();
    ASSIGN_OR_RETURN(TargetRow t, LoadTarget(db, job, agent));
    t.bytes_acked = t.bytes_total;
    t.last_error.clear();
    t.next_attempt_ms = 0;
    t.consecutive_failures = 0;
    return Transition(log, std::move(t), TargetState::kDone);
  });
}

absl::StatusOr<TargetRow> StateStore::MarkFailedAttempt(const std::string& job,
                                                        const std::string& agent,
                                                        const std::string& error,
                                                        const BackoffPolicy& backoff,
                                                        double unit_random) {
  TargetRow out;
  RETURN_IF_ERROR(Transact([&](ChangeLog& log) -> absl::Status {
    sqlite3* db = log.db();
    const int64_t now = log.now();
    ASSIGN_OR_RETURN(TargetRow t, LoadTarget(db, job, agent));
    if (t.state != TargetState::kTransferring) {
      return absl::FailedPreconditionError(absl::StrCat(
          "target ", agent, " of job ", job, ": no attempt to fail (", TargetStateName(t.state), ")"));
    }
    ASSIGN_OR_RETURN(JobRow j, LoadJob(db, job));
    t.consecutive_failures += 1;
    TargetState to = TargetState::kRetryWait;
    if (std::optional<std::string> reason = PolicyFailure(j.policy, t.attempts, now)) {
      to = TargetState::kFailed;
      t.last_error = absl::StrCat(*reason, ": ", error);
      t.next_attempt_ms = 0;
    } else {
      t.last_error = error;
      t.next_attempt_ms = now + BackoffDelayMs(backoff, t.consecutive_failures, unit_random);
    }
    out = t;
    out.state = to;
    out.updated_ms = now;
    return Transition(log, std::move(t), to);
  }));
  return out;
}

absl::StatusOr<int> StateStore::Cancel(const std::string& job, const std::string& agent,
                                       const std::string& reason, AuditEntry* audit) {
  int n = 0;
  RETURN_IF_ERROR(Transact([&](ChangeLog& log) -> absl::Status {
    sqlite3* db = log.db();
    ASSIGN_OR_RETURN(std::vector<TargetRow> rows, LoadJobTargets(db, job, agent));
    ASSIGN_OR_RETURN(n, CancelTargets(log, std::move(rows), reason));
    if (audit != nullptr) audit->result = absl::StrCat(n, " target(s) cancelled");
    return absl::OkStatus();
  }, audit));
  return n;
}

absl::StatusOr<int> StateStore::RetryNow(const std::string& job, const std::string& agent,
                                         AuditEntry* audit) {
  int n = 0;
  RETURN_IF_ERROR(Transact([&](ChangeLog& log) -> absl::Status {
    sqlite3* db = log.db();
    const int64_t now = log.now();
    ASSIGN_OR_RETURN(std::vector<TargetRow> rows, LoadJobTargets(db, job, agent));
    for (TargetRow& t : rows) {
      if (t.state != TargetState::kRetryWait && t.state != TargetState::kFailed) continue;
      t.next_attempt_ms = now;
      t.consecutive_failures = 0;
      RETURN_IF_ERROR(Transition(log, std::move(t), TargetState::kRetryWait));
      ++n;
    }
    if (audit != nullptr) audit->result = absl::StrCat(n, " target(s) retried");
    return absl::OkStatus();
  }, audit));
  return n;
}

absl::Status StateStore::WakeAgent(const std::string& agent) {
  return Transact([&](ChangeLog& log) -> absl::Status {
    sqlite3* db = log.db();
    const int64_t now = log.now();
    Statement st(db, absl::StrCat("SELECT ", kTargetCols,
                                  " FROM targets t WHERE t.agent = ? AND t.state = 'retry_wait' "
                                  "AND t.next_attempt_ms > ? ORDER BY t.job_id"));
    st.BindText(agent).BindInt(now);
    ASSIGN_OR_RETURN(std::vector<TargetRow> rows, ReadTargets(st));
    for (TargetRow& t : rows) {
      t.next_attempt_ms = now;
      RETURN_IF_ERROR(Transition(log, std::move(t), TargetState::kRetryWait));
    }
    return absl::OkStatus();
  });
}

absl::StatusOr<int> StateStore::FailExpired() {
  int n = 0;
  RETURN_IF_ERROR(Transact([&](ChangeLog& log) -> absl::Status {
    sqlite3* db = log.db();
    const int64_t now = log.now();
    Statement st(db, absl::StrCat("SELECT ", kTargetCols,
                                  " FROM targets t JOIN jobs j ON j.id = t.job_id "
                                  "WHERE j.deadline_ms > 0 AND j.deadline_ms <= ? "
                                  "AND t.state IN ('pending', 'retry_wait') "
                                  "ORDER BY t.job_id, t.agent"));
    st.BindInt(now);
    ASSIGN_OR_RETURN(std::vector<TargetRow> rows, ReadTargets(st));
    for (TargetRow& t : rows) {
      t.last_error = t.last_error.empty() ? std::string("deadline exceeded")
                                          : absl::StrCat("deadline exceeded: ", t.last_error);
      t.next_attempt_ms = 0;
      RETURN_IF_ERROR(Transition(log, std::move(t), TargetState::kFailed));
      ++n;
    }
    return absl::OkStatus();
  }));
  return n;
}

absl::StatusOr<std::vector<TargetRow>> StateStore::RunnableTargets(
    size_t limit, const std::vector<std::string>& busy, const AdmitFn& admit) {
  std::vector<TargetRow> out;
  if (limit == 0) return out;
  RETURN_IF_ERROR(Read([&](sqlite3* db, int64_t now) -> absl::Status {
    Statement st(db, absl::StrCat(
                         "SELECT ", kTargetCols, ", j.kind",
                         " FROM targets t JOIN jobs j ON j.id = t.job_id "
                         "JOIN agents a ON a.name = t.agent "
                         "WHERE (t.state = 'pending' OR (t.state = 'retry_wait' "
                         "AND t.next_attempt_ms <= ?1)) "
                         "AND (j.deadline_ms = 0 OR j.deadline_ms > ?1) "
                         "ORDER BY j.created_ms, j.rowid, t.agent"));
    st.BindInt(now);
    absl::flat_hash_set<std::string> taken(busy.begin(), busy.end());
    while (out.size() < limit) {
      ASSIGN_OR_RETURN(bool row, st.Step());
      if (!row) break;
      ASSIGN_OR_RETURN(TargetRow t, ReadTarget(st));
      if (taken.contains(t.agent)) continue;
      if (admit != nullptr) {
        ASSIGN_OR_RETURN(JobKind kind, ParseJobKind(st.Text(kAfterTargetCols)));
        if (!admit(t, kind)) continue;
      }
      taken.insert(t.agent);
      out.push_back(std::move(t));
    }
    return absl::OkStatus();
  }));
  return out;
}

absl::StatusOr<std::optional<int64_t>> StateStore::NextWakeupMs() {
  std::optional<int64_t> out;
  RETURN_IF_ERROR(Read([&](sqlite3* db, int64_t) -> absl::Status {
    Statement st(db, "SELECT MIN(next_attempt_ms) FROM targets WHERE state = 'retry_wait'");
    ASSIGN_OR_RETURN(bool row, st.Step());
    if (row && !st.IsNull(0)) out = st.Int(0);
    return absl::OkStatus();
  }));
  return out;
}

absl::StatusOr<int> StateStore::RecoverInterrupted() {
  int n = 0;
  RETURN_IF_ERROR(Transact([&](ChangeLog& log) -> absl::Status {
    sqlite3* db = log.db();
    const int64_t now = log.now();
    Statement st(db, absl::StrCat("SELECT ", kTargetCols,
                                  " FROM targets t WHERE t.state = 'transferring' "
                                  "ORDER BY t.job_id, t.agent"));
    ASSIGN_OR_RETURN(std::vector<TargetRow> rows, ReadTargets(st));
    for (TargetRow& t : rows) {
      t.last_error = "interrupted: the controller stopped during the transfer";
      t.next_attempt_ms = now;
      RETURN_IF_ERROR(Transition(log, std::move(t), TargetState::kRetryWait));
      ++n;
    }
    return absl::OkStatus();
  }));
  return n;
}

// --- Audit trail and events.

absl::Status StateStore::RecordAudit(AuditEntry& entry, const absl::Status& outcome) {
  RETURN_IF_ERROR(Transact([&](ChangeLog& log) {
    return log.WriteAudit(entry, outcome, options_.audit_retention_ms);
  }));
  entry.recorded = true;
  return absl::OkStatus();
}

absl::StatusOr<std::vector<AuditRow>> StateStore::ListAudit(const AuditFilter& filter,
                                                            int64_t after, size_t limit) {
  std::vector<AuditRow> out;
  RETURN_IF_ERROR(Read([&](sqlite3* db, int64_t) -> absl::Status {
    ASSIGN_OR_RETURN(out, ReadAudit(db, filter, after, limit));
    return absl::OkStatus();
  }));
  return out;
}

absl::StatusOr<EventBatch> StateStore::ReadEvents(int64_t after, size_t limit, bool progress) {
  EventBatch batch;
  RETURN_IF_ERROR(Read([&](sqlite3* db, int64_t) -> absl::Status {
    // One snapshot: the progress rows are as of the last event read.
    RETURN_IF_ERROR(ExecSql(db, "BEGIN"));
    absl::Status s = ReadEventBatch(db, after, limit, &batch);
    if (s.ok() && progress && (limit == 0 || batch.events.size() < limit)) {
      Statement st(db, absl::StrCat("SELECT ", kTargetCols, ", j.package_label FROM targets t "
                                    "JOIN jobs j ON j.id = t.job_id "
                                    "WHERE t.state = 'transferring' ORDER BY t.job_id, t.agent"));
      while (s.ok()) {
        absl::StatusOr<bool> row = st.Step();
        if (!row.ok() || !*row) {
          s = row.status();
          break;
        }
        absl::StatusOr<TargetRow> t = ReadTarget(st);
        if (!t.ok()) {
          s = t.status();
          break;
        }
        EventRow e;
        e.seq = batch.events.empty() ? after : batch.events.back().seq;
        e.time_ms = t->updated_ms;
        e.kind = EventKind::kTargetProgress;
        e.job_id = t->job_id;
        e.agent = t->agent;
        e.package = st.Text(kAfterTargetCols);
        e.state = std::string(TargetStateName(t->state));
        e.target = *std::move(t);
        batch.progress.push_back(std::move(e));
      }
    }
    absl::Status end = ExecSql(db, "COMMIT");
    return s.ok() ? end : s;
  }));
  return batch;
}

int64_t StateStore::newest_event() {
  absl::MutexLock l(&version_mu_);
  return newest_event_;
}

int64_t StateStore::WaitForEvent(int64_t after, absl::Duration timeout,
                                 const std::atomic<bool>* stop) {
  struct Waiting {
    StateStore* store;
    int64_t after;
    const std::atomic<bool>* stop;
  } w{this, after, stop};
  absl::MutexLock l(&version_mu_);
  version_mu_.AwaitWithTimeout(
      absl::Condition(+[](Waiting* w) ABSL_NO_THREAD_SAFETY_ANALYSIS {
        return w->store->newest_event_ > w->after || (w->stop != nullptr && w->stop->load());
      }, &w),
      timeout);
  return newest_event_;
}

void StateStore::WakeWaiters() {
  // Releasing the mutex re-evaluates every waiter's condition.
  absl::MutexLock l(&version_mu_);
}

// --- Change notification.

uint64_t StateStore::version() {
  absl::MutexLock l(&version_mu_);
  return version_;
}

uint64_t StateStore::transactions() {
  absl::MutexLock l(&mu_);
  return transactions_;
}

uint64_t StateStore::WaitForChange(uint64_t seen, absl::Duration timeout,
                                   const std::atomic<bool>* stop) {
  struct Waiting {
    StateStore* store;
    uint64_t seen;
    const std::atomic<bool>* stop;
  } w{this, seen, stop};
  absl::MutexLock l(&version_mu_);
  version_mu_.AwaitWithTimeout(
      absl::Condition(+[](Waiting* w) ABSL_NO_THREAD_SAFETY_ANALYSIS {
        return w->store->version_ > w->seen || (w->stop != nullptr && w->stop->load());
      }, &w),
      timeout);
  return version_;
}

}  // namespace pkgdist
