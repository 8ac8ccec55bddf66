// Job statuses shared by the CLI's formatting tests.
#ifndef PKGDIST_TESTS_UNIT_CLI_TEST_JOBS_H_
#define PKGDIST_TESTS_UNIT_CLI_TEST_JOBS_H_

#include <cstdint>
#include <string>

#include "pkgdist/v1/controller.pb.h"

namespace pkgdist::cli::testing {

inline pkgdist::v1::TargetStatus Target(const std::string& agent, const std::string& state,
                                        uint32_t attempts, uint64_t acked, uint64_t total) {
  pkgdist::v1::TargetStatus t;
  t.set_agent(agent);
  t.set_state(state);
  t.set_attempts(attempts);
  t.set_bytes_acked(acked);
  t.set_bytes_total(total);
  t.set_bytes_sent(acked);
  t.set_updated_at("2026-01-02T03:04:05.000Z");
  return t;
}

// dp1 done, dp2 waiting to retry after "connection refused" (512 KiB of it
// filled from the agent's own chunks, 256 KiB fetched from its relay).
inline pkgdist::v1::JobStatus TwoTargetJob() {
  pkgdist::v1::JobStatus job;
  job.set_id("j-1");
  job.set_kind("distribute");
  job.set_package("app@1.0");
  job.set_state("in_progress");
  job.set_created_at("2026-01-02T03:00:00.000Z");
  *job.add_targets() = Target("dp1", "done", 1, 3 << 20, 3 << 20);
  auto* t = job.add_targets();
  *t = Target("dp2", "retry_wait", 3, 1 << 20, 3 << 20);
  t->set_bytes_sent(2 << 20);
  t->set_bytes_reused(512 << 10);
  t->set_bytes_from_peer(256 << 10);
  t->set_last_error("connection refused");
  t->set_next_attempt_at("2026-01-02T03:04:35.000Z");
  return job;
}

}  // namespace pkgdist::cli::testing

#endif  // PKGDIST_TESTS_UNIT_CLI_TEST_JOBS_H_
