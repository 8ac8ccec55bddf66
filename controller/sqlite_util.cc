#include "controller/sqlite_util.h"

#include <sqlite3.h>

#include "absl/strings/str_cat.h"
#include "shared/status_macros.h"

namespace pkgdist {

void DbCloser::operator()(sqlite3* db) const { sqlite3_close_v2(db); }

absl::Status SqliteStatus(sqlite3* db, int rc, absl::string_view what) {
  std::string msg = absl::StrCat("state database: ", what, ": ",
                                 db != nullptr ? sqlite3_errmsg(db) : sqlite3_errstr(rc));
  switch (rc & 0xff) {
    case SQLITE_BUSY:
    case SQLITE_LOCKED:
      return absl::UnavailableError(msg);
    case SQLITE_FULL:
      return absl::ResourceExhaustedError(msg);
    case SQLITE_CORRUPT:
    case SQLITE_NOTADB:
      return absl::DataLossError(msg);
    case SQLITE_CANTOPEN:
    case SQLITE_READONLY:
    case SQLITE_PERM:
      return absl::FailedPreconditionError(msg);
    default:
      return absl::InternalError(msg);
  }
}

absl::Status ExecSql(sqlite3* db, const char* sql) {
  int rc = sqlite3_exec(db, sql, nullptr, nullptr, nullptr);
  if (rc != SQLITE_OK) return SqliteStatus(db, rc, "exec");
  return absl::OkStatus();
}

Statement::Statement(sqlite3* db, absl::string_view sql) : db_(db) {
  int rc = sqlite3_prepare_v2(db, sql.data(), static_cast<int>(sql.size()), &stmt_, nullptr);
  if (rc != SQLITE_OK) status_ = SqliteStatus(db, rc, absl::StrCat("prepare \"", sql, "\""));
}

Statement::~Statement() { sqlite3_finalize(stmt_); }

Statement& Statement::BindInt(int64_t v) {
  if (status_.ok()) Check(sqlite3_bind_int64(stmt_, next_++, v));
  return *this;
}

Statement& Statement::BindText(absl::string_view v) {
  if (status_.ok()) {
    Check(sqlite3_bind_text64(stmt_, next_++, v.data(), v.size(), SQLITE_TRANSIENT, SQLITE_UTF8));
  }
  return *this;
}

Statement& Statement::BindBlob(absl::string_view v) {
  // A null pointer would bind NULL, not an empty blob.
  const char* data = v.data() != nullptr ? v.data() : "";
  if (status_.ok()) Check(sqlite3_bind_blob64(stmt_, next_++, data, v.size(), SQLITE_TRANSIENT));
  return *this;
}

absl::StatusOr<bool> Statement::Step() {
  RETURN_IF_ERROR(status_);
  int rc = sqlite3_step(stmt_);
  if (rc == SQLITE_ROW) return true;
  if (rc == SQLITE_DONE) return false;
  return SqliteStatus(db_, rc, "step");
}

absl::Status Statement::Run() {
  ASSIGN_OR_RETURN(bool row, Step());
  if (row) return absl::InternalError("state database: statement returned an unexpected row");
  return absl::OkStatus();
}

void Statement::Reset() {
  sqlite3_reset(stmt_);
  sqlite3_clear_bindings(stmt_);
  next_ = 1;
}

bool Statement::IsNull(int col) const { return sqlite3_column_type(stmt_, col) == SQLITE_NULL; }

int64_t Statement::Int(int col) const { return sqlite3_column_int64(stmt_, col); }

std::string Statement::Text(int col) const {
  const unsigned char* p = sqlite3_column_text(stmt_, col);
  return p == nullptr ? std::string()
                      : std::string(reinterpret_cast<const char*>(p),
                                    static_cast<size_t>(sqlite3_column_bytes(stmt_, col)));
}

std::string Statement::Blob(int col) const {
  const void* p = sqlite3_column_blob(stmt_, col);
  return p == nullptr ? std::string()
                      : std::string(static_cast<const char*>(p),
                                    static_cast<size_t>(sqlite3_column_bytes(stmt_, col)));
}

void Statement::Check(int rc) {
  if (rc != SQLITE_OK) status_ = SqliteStatus(db_, rc, "bind");
}

}  // namespace pkgdist
