// `pkgdistctl events`: reading to the caught_up marker, and following
// across broken streams from the last sequence, each event handed on once.
#include "controller/cli/event_follow.h"

#include <sstream>
#include <string>
#include <vector>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "tests/unit/cli/fake_admin.h"

namespace pkgdist::cli {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using testing::EventScript;
using testing::FakeAdminServer;

pkgdist::v1::Event Ev(uint64_t seq, const std::string& kind = "target_changed") {
  pkgdist::v1::Event e;
  e.set_sequence(seq);
  e.set_kind(kind);
  return e;
}

class EventFollowTest : public ::testing::Test {
 protected:
  absl::Status Follow(EventFollowOptions o) {
    o.sleep = [this](absl::Duration d) { sleeps_.push_back(d); };
    return FollowEvents(server_.client(), o,
                        [this](const pkgdist::v1::Event& e) {
                          seen_.push_back(absl::StrCat(e.kind() == "target_changed" ? "" : e.kind(),
                                                       e.sequence()));
                        },
                        err_);
  }
  std::vector<std::string> Afters() {
    std::vector<std::string> out;
    for (const auto& r : server_.admin().event_requests()) {
      out.push_back(r.from_now() ? "now" : absl::StrCat(r.after_sequence()));
    }
    return out;
  }

  FakeAdminServer server_;
  std::vector<std::string> seen_;
  std::vector<absl::Duration> sleeps_;
  std::ostringstream err_;
};

TEST_F(EventFollowTest, WithoutFollowItEndsAtTheCaughtUpMarker) {
  // The stored events are handed on, the marker ends the call with OK
  // although the stream would go on.
  server_.admin().AddEvents(EventScript{{Ev(4), Ev(5), Ev(5, "caught_up")}, grpc::Status::OK,
                                        /*hang=*/true});
  EventFollowOptions o;
  o.after = 3;
  EXPECT_TRUE(Follow(o).ok());
  EXPECT_THAT(seen_, ElementsAre("4", "5"));
  EXPECT_THAT(Afters(), ElementsAre("3"));
}

TEST_F(EventFollowTest, FollowReconnectsAfterTheLastSequenceAndHandsEachEventOnce) {
  // A stream that breaks is resumed after the last event received; an
  // event sent again is not handed on twice; an error that reconnecting
  // cannot mend ends the follow.
  server_.admin().AddEvents(EventScript{{Ev(1), Ev(2), Ev(3)},
                                        grpc::Status(grpc::StatusCode::UNAVAILABLE, "restart")});
  server_.admin().AddEvents(EventScript{{Ev(3), Ev(4), Ev(4, "caught_up"), Ev(5)},
                                        grpc::Status(grpc::StatusCode::INTERNAL, "oops")});
  server_.admin().AddEvents(EventScript{{Ev(6)},
                                        grpc::Status(grpc::StatusCode::OUT_OF_RANGE, "too old")});
  EventFollowOptions o;
  o.follow = true;
  absl::Status s = Follow(o);
  EXPECT_EQ(s.code(), absl::StatusCode::kOutOfRange);
  EXPECT_THAT(seen_, ElementsAre("1", "2", "3", "4", "5", "6"));
  EXPECT_THAT(Afters(), ElementsAre("0", "3", "5"));
  EXPECT_THAT(err_.str(), HasSubstr("UNAVAILABLE: restart); reconnecting after sequence 3"));
  // Backoff restarts after an event arrived.
  EXPECT_THAT(sleeps_, ElementsAre(o.min_backoff, o.min_backoff));
}

TEST_F(EventFollowTest, FromNowResumesAfterTheCaughtUpSequence) {
  // A follower that starts from now learns its position from the marker,
  // and progress events do not move it.
  server_.admin().AddEvents(EventScript{{Ev(7, "caught_up"), Ev(7, "target_progress")},
                                        grpc::Status(grpc::StatusCode::UNAVAILABLE, "gone")});
  server_.admin().AddEvents(EventScript{{Ev(8)},
                                        grpc::Status(grpc::StatusCode::PERMISSION_DENIED, "no")});
  EventFollowOptions o;
  o.follow = true;
  o.from_now = true;
  EXPECT_EQ(Follow(o).code(), absl::StatusCode::kPermissionDenied);
  EXPECT_THAT(seen_, ElementsAre("target_progress7", "8"));
  EXPECT_THAT(Afters(), ElementsAre("now", "7"));
}

TEST_F(EventFollowTest, AFailureBeforeAnyMessageIsReturnedAtOnce) {
  // An unreachable or refusing controller is reported, not retried.
  server_.admin().AddEvents(EventScript{{}, grpc::Status(grpc::StatusCode::UNAVAILABLE, "down")});
  EventFollowOptions o;
  o.follow = true;
  absl::Status s = Follow(o);
  EXPECT_EQ(s.code(), absl::StatusCode::kUnavailable);
  EXPECT_TRUE(sleeps_.empty());
  EXPECT_THAT(Afters(), ElementsAre("0"));
}

TEST_F(EventFollowTest, WithoutFollowABrokenStreamIsAnError) {
  // History that ends before its marker is not reported as complete.
  server_.admin().AddEvents(EventScript{{Ev(1)}, grpc::Status::OK});
  EXPECT_EQ(Follow(EventFollowOptions{}).code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT(seen_, ElementsAre("1"));
}

}  // namespace
}  // namespace pkgdist::cli
