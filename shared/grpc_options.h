// gRPC settings both sides must agree on, derived from one set of constants.
//
// The controller pings each agent every keepalive interval; the agent must
// accept pings at least that often or it answers GOAWAY "too_many_pings".
// So the agent's minimum accepted ping interval is kMinPingIntervalMs, and
// the controller never pings more often than that.
#ifndef PKGDIST_SHARED_GRPC_OPTIONS_H_
#define PKGDIST_SHARED_GRPC_OPTIONS_H_

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <string>

#include <grpcpp/grpcpp.h>

#include "absl/status/status.h"

namespace pkgdist {

inline constexpr int kMinPingIntervalMs = 1000;
// The largest gRPC message either side accepts by default: a chunk carries
// at most 1 MiB, a manifest part at most about kManifestPartBytes.
inline constexpr int kMaxMessageBytes = 3 << 20;
// Bounds of --max-message-bytes: room for a 1 MiB chunk and its framing.
inline constexpr int kMinMaxMessageBytes = 2 << 20;
inline constexpr int kMaxMaxMessageBytes = 1 << 30;
// A manifest (about 100 bytes per file plus 45 per chunk) whose serialized
// size exceeds this goes out as an Offer and ManifestPart messages of about
// this size each (agent.proto). Well under kMinMaxMessageBytes, so that any
// configured --max-message-bytes carries the parts with the Offer's other
// fields (signature, ids) and the framing, and packages of a million files
// need no setting raised.
inline constexpr size_t kManifestPartBytes = size_t{1} << 20;
// One Chunk message carries a run of consecutive chunks of one file of at
// most this many bytes (agent.proto): with content-defined chunks of 32 KiB
// on average, a message per chunk made 1 GiB to one agent take 2.1x as long
// as 1 MiB chunks did (bench/analysis.md). A run is also at most a quarter
// of the transfer's window, so that several messages are in flight; the
// agent's flush rule counts on a message of MaxRunBytes(window) (or one
// chunk larger than that).
inline constexpr uint64_t kMaxRunBytes = uint64_t{1} << 20;
inline constexpr uint64_t MaxRunBytes(uint64_t window_bytes) {
  return window_bytes / 4 < kMaxRunBytes ? window_bytes / 4 : kMaxRunBytes;
}
inline constexpr int kDefaultDetectSeconds = 15;

// Channel arguments for the controller's channel to one agent. A silent peer
// is detected within `detect_seconds`: pings every third of it, each
// allowed a third to be answered.
grpc::ChannelArguments AgentChannelArgs(int detect_seconds = kDefaultDetectSeconds,
                                        int max_reconnect_backoff_ms = 5000,
                                        int max_message_bytes = kMaxMessageBytes);

// Applies the agent-side (server) settings matching AgentChannelArgs.
void ConfigureAgentServer(grpc::ServerBuilder& builder, int max_message_bytes = kMaxMessageBytes);

// Channel arguments for an admin client (pkgdistctl, tests).
grpc::ChannelArguments AdminChannelArgs();

// absl::Status <-> grpc::Status, at the RPC edge only.
grpc::Status ToGrpc(const absl::Status& s);
absl::Status FromGrpc(const grpc::Status& s);

}  // namespace pkgdist

#endif  // PKGDIST_SHARED_GRPC_OPTIONS_H_
