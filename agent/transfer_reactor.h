// The bridge between one Agent.Transfer call, served by gRPC's callback API
// with raw ByteBuffers, and the blocking TransferStream a TransferSession
// reads and writes on a thread of its own.
//
// Served raw, a received Chunk's data stays in the slices gRPC received it
// in (shared/chunk_wire.h): the session hashes and writes from them, and
// protobuf never copies a chunk into a string of its own. The session stays
// blocking code: each Read starts one gRPC read and waits for its reaction
// (OnReadDone), each Write one gRPC write (OnWriteDone). Nothing here
// blocks a gRPC thread: reactions only record their outcome and wake the
// waiter, and no lock is held while a read, write or Finish is started, so
// a reaction that gRPC ran inline would not deadlock either.
#ifndef PKGDIST_AGENT_TRANSFER_REACTOR_H_
#define PKGDIST_AGENT_TRANSFER_REACTOR_H_

#include <cstdint>

#include <grpcpp/grpcpp.h>

#include "absl/functional/function_ref.h"
#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "agent/transfer_session.h"
#include "pkgdist/v1/agent.pb.h"
#include "shared/chunk_wire.h"

namespace pkgdist {

// Thread-safety: Read is called by one thread at a time (the session's);
// Write by any number of threads (the session's, the writer's task thread
// sending Acks), one write in flight at a time. Lifetime: created for a
// call and handed to gRPC; its owner runs Serve() once, on a thread other
// than gRPC's, and frees it only after Serve() returned, which is after
// OnDone (gRPC is done with it).
class TransferReactor final : public grpc::ServerBidiReactor<grpc::ByteBuffer, grpc::ByteBuffer>,
                              public TransferStream {
 public:
  TransferReactor() = default;
  TransferReactor(const TransferReactor&) = delete;
  TransferReactor& operator=(const TransferReactor&) = delete;

  // Runs `session`, which reads and writes through this stream, then
  // finishes the call with the status it returned (a TransferSession's,
  // read_error() included); returns that status once gRPC has called OnDone.
  absl::Status Serve(absl::FunctionRef<absl::Status()> session);

  // TransferStream. Read blocks until a request arrives or the call ends
  // (half-close, cancellation, a request that does not parse); Write until
  // gRPC has taken the response, or the call is gone.
  bool Read(ReceivedRequest* request) override ABSL_LOCKS_EXCLUDED(mu_);
  bool Write(const pkgdist::v1::TransferResponse& response) override ABSL_LOCKS_EXCLUDED(mu_);
  // Why Read returned false if it was not the call's end: INVALID_ARGUMENT
  // for a request that did not parse. OK otherwise.
  absl::Status read_error() override ABSL_LOCKS_EXCLUDED(mu_);

  // grpc::ServerBidiReactor.
  void OnReadDone(bool ok) override ABSL_LOCKS_EXCLUDED(mu_);
  void OnWriteDone(bool ok) override ABSL_LOCKS_EXCLUDED(mu_);
  void OnDone() override;

 private:
  absl::Mutex mu_;
  // The read buffer belongs to gRPC while reading_, to Read otherwise.
  grpc::ByteBuffer read_buffer_;
  bool reading_ ABSL_GUARDED_BY(mu_) = false;
  bool read_ok_ ABSL_GUARDED_BY(mu_) = true;  // false: no read will succeed again
  absl::Status parse_error_ ABSL_GUARDED_BY(mu_);
  // Writes started and finished; the one in flight (if they differ) owns
  // write_buffer_.
  grpc::ByteBuffer write_buffer_ ABSL_GUARDED_BY(mu_);
  uint64_t writes_started_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t writes_done_ ABSL_GUARDED_BY(mu_) = 0;
  bool write_ok_ ABSL_GUARDED_BY(mu_) = true;  // false: the call is gone
  // OnDone's only act: after it, nothing of gRPC's touches this reactor.
  absl::Notification done_;
};

}  // namespace pkgdist

#endif  // PKGDIST_AGENT_TRANSFER_REACTOR_H_
