// The SQLite plumbing the state store and its migrations share: one RAII
// prepared statement, one RAII connection, and SQLite result codes as
// absl::Status. Nothing here knows the schema.
//
// Not thread-safe: a connection and its statements belong to whoever holds
// the connection's lock (StateStore keeps one per connection).
#ifndef PKGDIST_CONTROLLER_SQLITE_UTIL_H_
#define PKGDIST_CONTROLLER_SQLITE_UTIL_H_

#include <cstdint>
#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

struct sqlite3;
struct sqlite3_stmt;

namespace pkgdist {

// Closes a connection (sqlite3_close_v2).
struct DbCloser {
  void operator()(sqlite3* db) const;
};
using DbHandle = std::unique_ptr<sqlite3, DbCloser>;

// Runs `sql` (statements without results) on `db`.
absl::Status ExecSql(sqlite3* db, const char* sql);

// A SQLite result code as a Status naming `what` and the connection's last
// error message: BUSY/LOCKED -> UNAVAILABLE, FULL -> RESOURCE_EXHAUSTED,
// CORRUPT/NOTADB -> DATA_LOSS, CANTOPEN/READONLY/PERM -> FAILED_PRECONDITION,
// the rest -> INTERNAL.
absl::Status SqliteStatus(sqlite3* db, int rc, absl::string_view what);

// One prepared statement, finalized on destruction. Parameters are bound in
// order (BindInt, BindText, ...); a failure to prepare or bind is reported
// by the next Step or Run.
class Statement {
 public:
  Statement(sqlite3* db, absl::string_view sql);
  ~Statement();
  Statement(const Statement&) = delete;
  Statement& operator=(const Statement&) = delete;

  Statement& BindInt(int64_t v);
  Statement& BindText(absl::string_view v);
  Statement& BindBlob(absl::string_view v);

  // Advances to the next row: true if there is one, false when done.
  absl::StatusOr<bool> Step();
  // Runs a statement that returns no rows.
  absl::Status Run();
  // Makes the statement ready to run again with new parameters.
  void Reset();

  bool IsNull(int col) const;
  int64_t Int(int col) const;
  std::string Text(int col) const;
  std::string Blob(int col) const;

 private:
  void Check(int rc);

  sqlite3* db_;
  sqlite3_stmt* stmt_ = nullptr;
  int next_ = 1;
  absl::Status status_;
};

}  // namespace pkgdist

#endif  // PKGDIST_CONTROLLER_SQLITE_UTIL_H_
