// Early-return helpers for absl::Status and absl::StatusOr<T>.
//
// Debian's abseil (20220623) ships no RETURN_IF_ERROR / ASSIGN_OR_RETURN, so
// these are the project's own, deliberately minimal.
#ifndef PKGDIST_SHARED_STATUS_MACROS_H_
#define PKGDIST_SHARED_STATUS_MACROS_H_

#include "absl/status/status.h"
#include "absl/status/statusor.h"

#define PKGDIST_CONCAT_INNER_(a, b) a##b
#define PKGDIST_CONCAT_(a, b) PKGDIST_CONCAT_INNER_(a, b)

// Evaluates `expr` (an absl::Status); returns it from the caller if not OK.
#define RETURN_IF_ERROR(expr)                  \
  do {                                         \
    ::absl::Status pkgdist_status_ = (expr);   \
    if (!pkgdist_status_.ok()) return pkgdist_status_; \
  } while (0)

// Evaluates `rexpr` (an absl::StatusOr<T>); returns its status from the caller
// if not OK, else moves the value into `lhs` (which may be a declaration).
#define ASSIGN_OR_RETURN(lhs, rexpr) \
  PKGDIST_ASSIGN_OR_RETURN_IMPL_(PKGDIST_CONCAT_(pkgdist_statusor_, __LINE__), lhs, rexpr)

#define PKGDIST_ASSIGN_OR_RETURN_IMPL_(statusor, lhs, rexpr) \
  auto statusor = (rexpr);                                  \
  if (!statusor.ok()) return std::move(statusor).status();  \
  lhs = std::move(statusor).value()

#endif  // PKGDIST_SHARED_STATUS_MACROS_H_
