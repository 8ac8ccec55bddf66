// One gRPC channel per agent, created on first use and replaced when the
// agent's address changes. Each channel's credentials accept only the
// certificate of that agent (spiffe://TD/agent/NAME); a refusal is recorded
// here, because gRPC reports a failed handshake to the call only as
// UNAVAILABLE, and the operator needs the real reason.
//
// Thread-safe.
#ifndef PKGDIST_CONTROLLER_AGENT_POOL_H_
#define PKGDIST_CONTROLLER_AGENT_POOL_H_

#include <memory>
#include <string>

#include <grpcpp/grpcpp.h>
#include <grpcpp/security/tls_certificate_provider.h>

#include "absl/container/flat_hash_map.h"
#include "absl/synchronization/mutex.h"
#include "pkgdist/v1/agent.grpc.pb.h"
#include "pkgdist/v1/controller.pb.h"
#include "shared/clock.h"
#include "shared/grpc_options.h"
#include "shared/tls.h"

namespace pkgdist {

class AgentPool {
 public:
  struct Options {
    TlsFiles tls;
    std::string trust_domain;
    int detect_seconds = 15;
    int max_reconnect_backoff_ms = 5000;
    int max_message_bytes = kMaxMessageBytes;
  };

  AgentPool(Options options,
            std::shared_ptr<grpc::experimental::CertificateProviderInterface> provider,
            const Clock* clock);
  ~AgentPool();
  AgentPool(const AgentPool&) = delete;
  AgentPool& operator=(const AgentPool&) = delete;

  // The stub for `name` at `address` (a new channel if the address changed).
  std::shared_ptr<pkgdist::v1::Agent::StubInterface> Stub(const std::string& name,
                                                         const std::string& address);
  std::shared_ptr<grpc::Channel> Channel(const std::string& name, const std::string& address);

  // Connection state without starting a connection; UNSPECIFIED if unknown.
  pkgdist::v1::ConnectionState State(const std::string& name);
  // How many of the agents with a channel are in each connection state
  // (State()'s values); agents without one are idle and not counted. One
  // GetState per open channel, for the metrics.
  absl::flat_hash_map<pkgdist::v1::ConnectionState, int> CountOpenConnections();
  // Asks the channel to connect if idle; true if it is READY now.
  bool ConnectAndCheckReady(const std::string& name, const std::string& address);

  void RecordContact(const std::string& name);
  void RecordError(const std::string& name, const std::string& error);
  // The identity rejection recorded since `since_ms`, or "".
  std::string HandshakeErrorSince(const std::string& name, int64_t since_ms);

  struct Info {
    int64_t last_contact_ms = 0;
    std::string last_error;
  };
  Info GetInfo(const std::string& name);
  // Closes the agent's channel (its connection goes once no call uses it)
  // and keeps what is known of it; the next Stub() dials again. An idle
  // connection costs the controller about 220 KiB and keepalive pings, so
  // connections follow the transfers, not the fleet.
  void Disconnect(const std::string& name);
  // Disconnect, for an agent that was removed.
  void Forget(const std::string& name) { Disconnect(name); }

 private:
  struct Entry {
    std::string address;
    std::shared_ptr<grpc::Channel> channel;
    std::shared_ptr<pkgdist::v1::Agent::StubInterface> stub;
    int64_t last_contact_ms = 0;
    std::string last_error;
    std::string handshake_error;
    int64_t handshake_error_ms = 0;
  };
  Entry& GetOrCreate(const std::string& name, const std::string& address)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Called by a channel's TLS verifier when the agent's identity is wrong.
  void RecordHandshakeError(const std::string& name, const std::string& reason);

  // What the verifier callbacks hold instead of the pool: gRPC may still run
  // a verifier after the pool is gone (a handshake in flight at shutdown).
  // The destructor clears `pool` under the lock, so a callback either finishes
  // first or finds nullptr.
  struct CallbackTarget {
    absl::Mutex mu;
    AgentPool* pool ABSL_GUARDED_BY(mu);
  };

  const Options options_;
  std::shared_ptr<grpc::experimental::CertificateProviderInterface> provider_;
  const Clock* clock_;
  std::shared_ptr<CallbackTarget> callback_target_;
  absl::Mutex mu_;
  absl::flat_hash_map<std::string, std::unique_ptr<Entry>> agents_ ABSL_GUARDED_BY(mu_);
};

}  // namespace pkgdist

#endif  // PKGDIST_CONTROLLER_AGENT_POOL_H_
