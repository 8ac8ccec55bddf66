// The controller's side of one agent TransferSession in a test: requests
// queued by the test (or by `on_write`, to react like a controller),
// responses recorded. Acks come from the agent's flush thread, so both sides
// lock mu; `on_write` runs with mu held. With `wait_for_more`, Read waits
// (10 s at most) for a request instead of ending the stream. A request
// comes through as ParseTransferRequest gives a message protobuf parsed: a
// chunk's data as Pieces viewing request.chunk().data() (SetReceived).
#ifndef PKGDIST_TESTS_UNIT_AGENT_FAKE_TRANSFER_STREAM_H_
#define PKGDIST_TESTS_UNIT_AGENT_FAKE_TRANSFER_STREAM_H_

#include <deque>
#include <functional>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "agent/transfer_session.h"
#include "pkgdist/v1/agent.pb.h"

namespace pkgdist::testing {

class FakeStream : public TransferStream {
 public:
  bool Read(ReceivedRequest* request) override {
    absl::MutexLock l(&mu);
    auto has_requests = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu) { return !requests.empty(); };
    if (wait_for_more) mu.AwaitWithTimeout(absl::Condition(&has_requests), absl::Seconds(10));
    if (requests.empty()) return false;
    SetReceived(std::move(requests.front()), request);
    requests.pop_front();
    return true;
  }
  bool Write(const pkgdist::v1::TransferResponse& response) override {
    absl::MutexLock l(&mu);
    responses.push_back(response);
    if (on_write) on_write(response);
    return true;
  }
  // Blocks until `pred` (called with mu held) holds; false after 10 s.
  bool WaitUntil(const std::function<bool()>& pred) {
    absl::MutexLock l(&mu);
    return mu.AwaitWithTimeout(absl::Condition(&pred), absl::Seconds(10));
  }

  absl::Mutex mu;
  std::deque<pkgdist::v1::TransferRequest> requests;
  std::vector<pkgdist::v1::TransferResponse> responses;
  std::function<void(const pkgdist::v1::TransferResponse&)> on_write;
  bool wait_for_more = false;
};

}  // namespace pkgdist::testing

#endif  // PKGDIST_TESTS_UNIT_AGENT_FAKE_TRANSFER_STREAM_H_
