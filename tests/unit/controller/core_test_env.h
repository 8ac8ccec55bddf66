// A controller core in one process for tests: a state store and package
// store in a temporary directory, an AgentPool over real mutual TLS (with
// certificates made by certs/gen-dev-certs.sh for this test binary), fake
// agents on 127.0.0.1, and a FakeClock that drives backoff, deadlines and
// silent-agent detection, so that no test sleeps.
#ifndef PKGDIST_TESTS_UNIT_CONTROLLER_CORE_TEST_ENV_H_
#define PKGDIST_TESTS_UNIT_CONTROLLER_CORE_TEST_ENV_H_

#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>

#include "absl/time/time.h"
#include "controller/agent_pool.h"
#include "controller/engine.h"
#include "controller/package_store.h"
#include "controller/state_store.h"
#include "gtest/gtest.h"
#include "shared/clock.h"
#include "shared/file_util.h"
#include "tests/unit/controller/fake_agent.h"

namespace pkgdist::testing {

class CoreTest : public ::testing::Test {
 protected:
  // Makes the certificates once per test binary (dp1..dp4, controller, admin).
  static void SetUpTestSuite();
  static void TearDownTestSuite();
  void SetUp() override;
  void TearDown() override;

  static TlsFiles Tls(const std::string& stem);
  // Engine options for tests: fast ticks, progress written every pass.
  static Engine::Options TestOptions();

  // Starts a fake agent `name` (dp1..dp4) and registers it in the store.
  FakeAgent& AddAgent(const std::string& name, Behaviour default_behaviour = Behaviour::kPublish);
  // Imports a one-file package of `size` deterministic bytes; returns its id.
  std::string ImportPackage(const std::string& name, const std::string& version, size_t size);
  std::string Distribute(const std::string& package_id, const std::vector<std::string>& agents,
                         JobPolicy policy = {});
  void StartEngine(Engine::Options options = TestOptions());
  void StopEngine();

  // Waits (bounded, on store changes) until `pred` holds for the target;
  // returns the last row read, or nullopt on timeout.
  std::optional<TargetRow> WaitForTarget(const std::string& job, const std::string& agent,
                                         const std::function<bool(const TargetRow&)>& pred,
                                         absl::Duration timeout = absl::Seconds(15));
  TargetRow Target(const std::string& job, const std::string& agent);
  // A transfer of package `id` to dp1 for job "job", reading on `pool`,
  // with a 5 s silence bound.
  TransferParams TransferParamsFor(const std::string& id, ReadPool* pool);
  JobState JobStateOf(const std::string& job);

  FakeClock clock_;
  std::optional<TempDir> state_dir_;
  std::unique_ptr<StateStore> store_;
  std::unique_ptr<PackageStore> packages_;
  std::unique_ptr<AgentPool> pool_;
  std::map<std::string, std::unique_ptr<FakeAgent>> agents_;
  std::map<std::string, std::unique_ptr<FakeAgentServer>> servers_;
  std::unique_ptr<Engine> engine_;

 private:
  static std::optional<TempDir>* certs_;
};

}  // namespace pkgdist::testing

#endif  // PKGDIST_TESTS_UNIT_CONTROLLER_CORE_TEST_ENV_H_
