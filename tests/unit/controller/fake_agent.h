// An in-process Agent service whose behaviour each test scripts, served over
// real mutual TLS on 127.0.0.1, for testing the controller's core (Engine,
// TransferCall, AgentPool, AdminService) without agent processes.
//
// Each Transfer call takes the next behaviour from the script (then the
// default): publish honestly, fail at once, hang until cancelled, publish
// with a wrong package id, or drop the stream after the first chunk.
// A manifest offered in parts (Offer.manifest_parts) is reassembled first;
// the first Need can be split (SplitFirstNeed). An Offer naming a source
// (a relay, docs/sites.md) is answered as an agent with peers answers it:
// every chunk listed as `peer`, then acknowledged by the agent itself as if
// fetched from the source, or (FailSource) asked of the controller again
// with source_failed. Thread-safe.
#ifndef PKGDIST_TESTS_UNIT_CONTROLLER_FAKE_AGENT_H_
#define PKGDIST_TESTS_UNIT_CONTROLLER_FAKE_AGENT_H_

#include <deque>
#include <memory>
#include <string>
#include <vector>

#include <grpcpp/grpcpp.h>

#include "absl/container/flat_hash_map.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "absl/time/time.h"
#include "pkgdist/v1/agent.grpc.pb.h"
#include "shared/tls.h"

namespace pkgdist::testing {

enum class Behaviour {
  kPublish,       // Need everything, Ack each chunk, Published on Commit
  kUnavailable,   // end the call with UNAVAILABLE after the Offer
  kHang,          // read the Offer, then answer nothing until cancelled
  kWrongId,       // as kPublish, but Published names another package id
  kDropMidWindow,  // Need everything, end with ABORTED after one chunk
  kEndOnSignal,    // Need everything, then end with ABORTED once EndHeldStreams()
  kHaveAll,        // Need nothing, Published on Commit
  kAnswerOnSignal,  // as kPublish, but the first Need waits for AnswerHeldOffers()
  kPublishOnSignal  // as kPublish, but Published waits for ReleasePublishes()
};

class FakeAgent final : public pkgdist::v1::Agent::WithCallbackMethod_Remove<pkgdist::v1::Agent::Service> {
 public:
  explicit FakeAgent(Behaviour default_behaviour = Behaviour::kPublish)
      : default_(default_behaviour) {}

  // The next Transfer calls' behaviours, in order.
  void Script(std::initializer_list<Behaviour> next);
  void SetDefault(Behaviour b);
  // Remove calls hang until cancelled instead of succeeding.
  void HangRemovals(bool hang);
  // The first Need goes out in messages of at most `per_message` indices
  // (Need.more on all but the last; 0: one message), and every
  // `local_every`-th chunk (0: none) is listed as local and acknowledged by
  // the agent itself right after the Need, as if copied from its chunk store.
  void SplitFirstNeed(size_t per_message, int local_every = 0);

  // Packages this agent holds as delta bases: to an Offer naming delta
  // bases, it asks for a delta of the first one it holds (or for the whole
  // manifest) and rebuilds the manifest from the parts.
  void HoldBase(const pkgdist::v1::Manifest& m);

  // What the latest Offer carried: the package id of the reassembled
  // manifest (PackageId), the number of ManifestPart messages read, the
  // delta base the agent asked for ("": none or the whole manifest) and the
  // bytes of the manifest's parts.
  std::string last_manifest_id();
  int last_manifest_parts();
  std::string last_manifest_base();
  uint64_t last_manifest_part_bytes();
  // The largest request (serialized) of any Offer or ManifestPart.
  size_t largest_manifest_message();

  // Blocks until at least `n` Transfer (or Remove) calls have arrived, or
  // `timeout` passed; false on timeout.
  bool WaitForTransfers(int n, absl::Duration timeout = absl::Seconds(10));
  bool WaitForRemovals(int n, absl::Duration timeout = absl::Seconds(10));
  // Likewise for hanging removals that their caller cancelled, and hanging
  // transfers whose stream the caller ended.
  bool WaitForRemovalsCancelled(int n, absl::Duration timeout = absl::Seconds(10));
  bool WaitForHangsEnded(int n, absl::Duration timeout = absl::Seconds(10));
  // Ends the streams of kEndOnSignal calls (now and later).
  void EndHeldStreams() { end_signal_.Notify(); }
  // Lets kAnswerOnSignal calls send their first Need, and kPublishOnSignal
  // calls answer Commit (now and later).
  void AnswerHeldOffers() { answer_signal_.Notify(); }
  void ReleasePublishes() { publish_signal_.Notify(); }
  // Offers naming a source: the agent cannot fetch from it, and asks the
  // controller for those chunks (Need.source_failed) right after its first Need.
  void FailSource(bool fail);
  // Every Offer received, in order, without its manifest.
  std::vector<pkgdist::v1::Offer> offers();
  // Blocks until at least `n` Offers were read (a call counts in
  // WaitForTransfers before its Offer is read); false on timeout.
  bool WaitForOffers(size_t n, absl::Duration timeout = absl::Seconds(10));
  // Blocks until `n` Transfer handlers have returned; false on timeout.
  bool WaitForTransfersEnded(int n, absl::Duration timeout = absl::Seconds(10));
  int transfers();
  int removals_cancelled();
  uint64_t chunk_bytes_received();
  uint64_t chunk_messages_received();

  grpc::Status Transfer(
      grpc::ServerContext* ctx,
      grpc::ServerReaderWriter<pkgdist::v1::TransferResponse, pkgdist::v1::TransferRequest>* stream)
      override;
  grpc::ServerUnaryReactor* Remove(grpc::CallbackServerContext* ctx,
                                   const pkgdist::v1::RemoveRequest* req,
                                   pkgdist::v1::RemoveResponse* resp) override;

 private:
  Behaviour Next();
  // Blocks until this->*count >= n or `timeout` passed; false on timeout.
  bool WaitFor(int FakeAgent::*count, int n, absl::Duration timeout);
  grpc::Status TransferImpl(
      grpc::ServerReaderWriter<pkgdist::v1::TransferResponse, pkgdist::v1::TransferRequest>* stream);
  // Reads the Offer and its ManifestParts; false (and `*error`) if the
  // stream does not hold them.
  bool ReadOffer(
      grpc::ServerReaderWriter<pkgdist::v1::TransferResponse, pkgdist::v1::TransferRequest>* stream,
      pkgdist::v1::Offer* offer, grpc::Status* error);
  // Sends the first Need of chunks [0, chunks) as SplitFirstNeed says;
  // returns the local ones.
  std::vector<uint32_t> SendFirstNeed(
      grpc::ServerReaderWriter<pkgdist::v1::TransferResponse, pkgdist::v1::TransferRequest>* stream,
      int chunks);
  void RemovalCancelled();

  absl::Mutex mu_;
  std::deque<Behaviour> script_ ABSL_GUARDED_BY(mu_);
  Behaviour default_ ABSL_GUARDED_BY(mu_);
  bool hang_removals_ ABSL_GUARDED_BY(mu_) = false;
  int transfers_ ABSL_GUARDED_BY(mu_) = 0;
  int removals_ ABSL_GUARDED_BY(mu_) = 0;
  int removals_cancelled_ ABSL_GUARDED_BY(mu_) = 0;
  int hangs_ended_ ABSL_GUARDED_BY(mu_) = 0;
  int transfers_ended_ ABSL_GUARDED_BY(mu_) = 0;
  absl::Notification end_signal_;
  absl::Notification answer_signal_;
  absl::Notification publish_signal_;
  bool fail_source_ ABSL_GUARDED_BY(mu_) = false;
  std::vector<pkgdist::v1::Offer> offers_ ABSL_GUARDED_BY(mu_);
  uint64_t chunk_bytes_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t chunk_messages_ ABSL_GUARDED_BY(mu_) = 0;
  size_t need_per_message_ ABSL_GUARDED_BY(mu_) = 0;
  int local_every_ ABSL_GUARDED_BY(mu_) = 0;
  std::string last_manifest_id_ ABSL_GUARDED_BY(mu_);
  int last_manifest_parts_ ABSL_GUARDED_BY(mu_) = 0;
  std::string last_manifest_base_ ABSL_GUARDED_BY(mu_);
  uint64_t last_manifest_part_bytes_ ABSL_GUARDED_BY(mu_) = 0;
  absl::flat_hash_map<std::string, pkgdist::v1::Manifest> bases_ ABSL_GUARDED_BY(mu_);
  size_t largest_manifest_message_ ABSL_GUARDED_BY(mu_) = 0;
};

// Serves one FakeAgent (or any Agent service a test writes) on 127.0.0.1:0
// with the agent's certificate; stops (cancelling what still runs) on
// destruction.
class FakeAgentServer {
 public:
  FakeAgentServer(const TlsFiles& tls, grpc::Service* agent);
  ~FakeAgentServer();
  FakeAgentServer(const FakeAgentServer&) = delete;
  FakeAgentServer& operator=(const FakeAgentServer&) = delete;
  // "127.0.0.1:PORT", or "" if the server did not start.
  const std::string& address() const { return address_; }

 private:
  std::unique_ptr<grpc::Server> server_;
  std::string address_;
};

}  // namespace pkgdist::testing

#endif  // PKGDIST_TESTS_UNIT_CONTROLLER_FAKE_AGENT_H_
