#include "agent/transfer_reactor.h"

#include <grpcpp/impl/codegen/proto_utils.h>

#include "shared/grpc_options.h"

namespace pkgdist {

using pkgdist::v1::TransferResponse;

absl::Status TransferReactor::Serve(absl::FunctionRef<absl::Status()> session) {
  absl::Status s = session();
  Finish(ToGrpc(s));
  done_.WaitForNotification();
  return s;
}

bool TransferReactor::Read(ReceivedRequest* request) {
  {
    absl::MutexLock l(&mu_);
    if (!read_ok_) return false;
    reading_ = true;
  }
  StartRead(&read_buffer_);
  {
    absl::MutexLock l(&mu_);
    auto read = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return !reading_; };
    mu_.Await(absl::Condition(&read));
    if (!read_ok_) return false;
  }
  absl::Status s = ParseTransferRequest(read_buffer_, request);
  read_buffer_.Clear();  // request->slices hold what its data views
  if (s.ok()) return true;
  absl::MutexLock l(&mu_);
  read_ok_ = false;
  parse_error_ = s;
  return false;
}

bool TransferReactor::Write(const TransferResponse& response) {
  grpc::ByteBuffer buffer;
  bool own_buffer = false;
  if (!grpc::SerializationTraits<TransferResponse>::Serialize(response, &buffer, &own_buffer)
           .ok()) {
    return false;
  }
  const grpc::ByteBuffer* in_flight = nullptr;
  uint64_t ticket = 0;
  {
    absl::MutexLock l(&mu_);
    auto idle = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
      return writes_done_ == writes_started_;
    };
    mu_.Await(absl::Condition(&idle));
    if (!write_ok_) return false;
    write_buffer_.Swap(&buffer);
    in_flight = &write_buffer_;
    ticket = ++writes_started_;
  }
  StartWrite(in_flight);
  absl::MutexLock l(&mu_);
  auto written = [this, ticket]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    return writes_done_ >= ticket;
  };
  mu_.Await(absl::Condition(&written));
  return write_ok_;
}

absl::Status TransferReactor::read_error() {
  absl::MutexLock l(&mu_);
  return parse_error_;
}

void TransferReactor::OnReadDone(bool ok) {
  absl::MutexLock l(&mu_);
  if (!ok) read_ok_ = false;
  reading_ = false;
}

void TransferReactor::OnWriteDone(bool ok) {
  absl::MutexLock l(&mu_);
  if (!ok) write_ok_ = false;
  ++writes_done_;
}

void TransferReactor::OnDone() { done_.Notify(); }

}  // namespace pkgdist
