// The peer side of FetchChunks (agent.proto, docs/sites.md "Relays"): one
// agent fetching the chunks of a package from the agent of its site that the
// controller named in the Offer (its source), over mutual TLS that accepts
// only that agent's identity.
//
// The fetch is bounded by silence, not by time: the source sends a chunk or
// a Waiting at least every second while it lives, so a source that is
// killed, frozen or cut off is given up after `silence` (the controller's
// detection bound), and the caller asks the controller instead. Content is
// never trusted: the caller verifies every chunk against its manifest.
#ifndef PKGDIST_AGENT_PEER_FETCH_H_
#define PKGDIST_AGENT_PEER_FETCH_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include <grpcpp/grpcpp.h>

#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "pkgdist/v1/agent.grpc.pb.h"
#include "shared/tls.h"

namespace pkgdist {

// Indices per FetchChunks call: 100,000 varints of at most 5 bytes is under
// 1 MB, inside any --max-message-bytes; more are fetched in further calls.
inline constexpr size_t kFetchIndicesPerCall = 100'000;

class PeerFetch;

// Makes the fetches of one agent: its certificate, and the trust domain a
// source's identity must be in. Thread-safe.
class PeerFetcher {
 public:
  PeerFetcher(TlsFiles tls, std::string trust_domain, int max_message_bytes);

  // Starts fetching `indices` (ascending) of package `package_id` from
  // `source`; `cancelled` (polled) ends it early.
  std::unique_ptr<PeerFetch> Fetch(const pkgdist::v1::PeerSource& source, std::string package_id,
                                   std::vector<uint32_t> indices, absl::Duration silence,
                                   std::function<bool()> cancelled);

 private:
  const TlsFiles tls_;
  const std::string trust_domain_;
  const int max_message_bytes_;
  std::shared_ptr<grpc::experimental::CertificateProviderInterface> provider_;
};

// One fetch: the source's messages in order. Not thread-safe (one reader);
// its watchdog thread cancels the call on silence or `cancelled`.
class PeerFetch {
 public:
  PeerFetch(std::shared_ptr<grpc::Channel> channel, std::string source, std::string package_id,
            std::vector<uint32_t> indices, absl::Duration silence,
            std::function<bool()> cancelled);
  ~PeerFetch();
  PeerFetch(const PeerFetch&) = delete;
  PeerFetch& operator=(const PeerFetch&) = delete;

  // The next message (a Chunk or a Waiting); false once every chunk asked
  // for came (status() OK) or the fetch failed (status() says why, naming
  // the source).
  bool Next(pkgdist::v1::FetchChunksResponse* response);
  absl::Status status() const { return status_; }
  // Gives up on the source (a chunk failed its hash, say): `why`, prefixed
  // with the source's name, becomes status() and the call is cancelled.
  void Abandon(absl::Status why);

 private:
  // Starts the call for the next kFetchIndicesPerCall indices.
  void StartCall();
  void Watch();

  std::unique_ptr<pkgdist::v1::Agent::Stub> stub_;
  const std::string source_;
  const std::string package_id_;
  const std::vector<uint32_t> indices_;
  const absl::Duration silence_;
  const std::function<bool()> cancelled_;
  size_t next_ = 0;  // indices_ asked for so far
  std::unique_ptr<grpc::ClientReader<pkgdist::v1::FetchChunksResponse>> reader_;
  absl::Status status_;

  absl::Mutex mu_;
  std::unique_ptr<grpc::ClientContext> ctx_ ABSL_GUARDED_BY(mu_);
  absl::Time last_heard_ ABSL_GUARDED_BY(mu_);
  std::string gave_up_ ABSL_GUARDED_BY(mu_);  // why the watchdog cancelled
  bool done_ ABSL_GUARDED_BY(mu_) = false;
  std::thread watchdog_;
};

}  // namespace pkgdist

#endif  // PKGDIST_AGENT_PEER_FETCH_H_
