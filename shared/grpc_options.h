// gRPC settings both sides must agree on, derived from one set of constants.
//
// The controller pings each agent every keepalive interval; the agent must
// accept pings at least that often or it answers GOAWAY "too_many_pings".
// So the agent's minimum accepted ping interval is kMinPingIntervalMs, and
// the controller never pings more often than that.
#ifndef PKGDIST_SHARED_GRPC_OPTIONS_H_
#define PKGDIST_SHARED_GRPC_OPTIONS_H_

#include <chrono>
#include <cstdint>
#include <string>

#include <grpcpp/grpcpp.h>

#include "absl/status/status.h"

namespace pkgdist {

inline constexpr int kMinPingIntervalMs = 1000;
// The largest gRPC message either side accepts by default: chunks carry at
// most 1 MiB, but an Offer carries the whole manifest (about 100 bytes per
// file plus 40 per chunk), so packages of many files need more
// (--max-message-bytes on the controller and the agent).
inline constexpr int kMaxMessageBytes = 3 << 20;
// Bounds of --max-message-bytes: room for a 1 MiB chunk and its framing.
inline constexpr int kMinMaxMessageBytes = 2 << 20;
inline constexpr int kMaxMaxMessageBytes = 1 << 30;
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
