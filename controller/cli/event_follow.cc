#include "controller/cli/event_follow.h"

#include <algorithm>

#include "absl/strings/str_cat.h"

namespace pkgdist::cli {
namespace {

constexpr absl::string_view kCaughtUp = "caught_up";
constexpr absl::string_view kProgress = "target_progress";

// Whether a stream that ended with `s` may be resumed by reconnecting.
bool Resumable(const absl::Status& s) {
  switch (s.code()) {
    case absl::StatusCode::kOk:  // the server ended a stream that never ends
    case absl::StatusCode::kUnavailable:
    case absl::StatusCode::kCancelled:
    case absl::StatusCode::kDeadlineExceeded:
    case absl::StatusCode::kAborted:
    case absl::StatusCode::kInternal:
    case absl::StatusCode::kUnknown:
    case absl::StatusCode::kResourceExhausted:
      return true;
    default:
      return false;
  }
}

}  // namespace

absl::Status FollowEvents(AdminClient& client, const EventFollowOptions& options,
                          const std::function<void(const pkgdist::v1::Event&)>& on_event,
                          std::ostream& err) {
  // Where we are: the last sequence handed on, once known.
  bool positioned = !options.from_now;
  uint64_t last = options.after;
  bool received_any = false;
  absl::Duration backoff = options.min_backoff;
  for (;;) {
    pkgdist::v1::WatchEventsRequest req;
    req.set_after_sequence(last);
    req.set_from_now(!positioned);
    req.set_include_progress(options.include_progress);
    bool caught_up = false;
    absl::Status s = client.WatchEvents(
        req, /*wait_for_ready=*/received_any, [&](const pkgdist::v1::Event& e) {
          received_any = true;
          backoff = options.min_backoff;
          if (e.kind() == kCaughtUp) {
            caught_up = true;
            if (!positioned || e.sequence() > last) last = e.sequence();
            positioned = true;
            return options.follow;
          }
          if (e.kind() != kProgress) {
            // Never hand on an event twice, whatever the server does.
            if (positioned && e.sequence() <= last) return true;
            last = e.sequence();
            positioned = true;
          }
          on_event(e);
          return true;
        });
    if (!options.follow) {
      if (caught_up) return absl::OkStatus();
      if (s.ok()) return absl::UnavailableError("the event stream ended before it caught up");
      return s;
    }
    if (!received_any || !Resumable(s)) {
      return s.ok() ? absl::UnavailableError("the event stream ended at once") : s;
    }
    err << "pkgdistctl: event stream ended ("
        << (s.ok() ? std::string("OK") : absl::StatusCodeToString(s.code())) << ": "
        << s.message() << "); reconnecting"
        << (positioned ? absl::StrCat(" after sequence ", last) : std::string()) << std::endl;
    options.sleep(backoff);
    backoff = std::min(backoff * 2, options.max_backoff);
  }
}

}  // namespace pkgdist::cli
