// `pkgdistctl events`: reading the controller's event stream from a
// sequence number and, with --follow, reconnecting after a broken stream
// (a controller restart, a network cut) from the last sequence received,
// so that every event is handed on exactly once and in order.
#ifndef PKGDIST_CONTROLLER_CLI_EVENT_FOLLOW_H_
#define PKGDIST_CONTROLLER_CLI_EVENT_FOLLOW_H_

#include <cstdint>
#include <functional>
#include <ostream>

#include "absl/status/status.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "controller/cli/admin_client.h"
#include "pkgdist/v1/controller.pb.h"

namespace pkgdist::cli {

struct EventFollowOptions {
  uint64_t after = 0;     // start after this sequence (0: every event kept)
  bool from_now = false;  // start after the newest event instead
  // Without: end once every stored event was handed on (the caught_up
  // marker). With: keep following, reconnecting when the stream breaks.
  bool follow = false;
  bool include_progress = false;
  // The pause before reconnecting doubles from `min_backoff` to
  // `max_backoff`, and starts again at `min_backoff` after an event.
  absl::Duration min_backoff = absl::Milliseconds(200);
  absl::Duration max_backoff = absl::Seconds(5);
  std::function<void(absl::Duration)> sleep = [](absl::Duration d) { absl::SleepFor(d); };
};

// Reads the event stream, handing each event except caught_up markers to
// `on_event`. Without follow, returns OK after the caught_up marker, or the
// error that ended the stream first. With follow, returns only on an error
// that reconnecting cannot mend (OUT_OF_RANGE: the history moved past us;
// PERMISSION_DENIED; INVALID_ARGUMENT; ...); every other end of the stream
// is reported on `err` as one line and followed by a reconnect with the
// last sequence received. A failure before the first message (an
// unreachable controller) is returned at once.
absl::Status FollowEvents(AdminClient& client, const EventFollowOptions& options,
                          const std::function<void(const pkgdist::v1::Event&)>& on_event,
                          std::ostream& err);

}  // namespace pkgdist::cli

#endif  // PKGDIST_CONTROLLER_CLI_EVENT_FOLLOW_H_
