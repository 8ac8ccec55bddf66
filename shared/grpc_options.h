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
// Chunks carry at most 1 MiB; leave room for framing, stay below 4 MiB.
inline constexpr int kMaxMessageBytes = 3 << 20;
inline constexpr int kDefaultDetectSeconds = 15;

// Channel arguments for the controller's channel to one agent. A silent peer
// is detected within `detect_seconds`: pings every third of it, each
// allowed a third to be answered.
grpc::ChannelArguments AgentChannelArgs(int detect_seconds = kDefaultDetectSeconds,
                                        int max_reconnect_backoff_ms = 5000);

// Applies the agent-side (server) settings matching AgentChannelArgs.
void ConfigureAgentServer(grpc::ServerBuilder& builder);

// Channel arguments for an admin client (pkgdistctl, tests).
grpc::ChannelArguments AdminChannelArgs();

// absl::Status <-> grpc::Status, at the RPC edge only.
grpc::Status ToGrpc(const absl::Status& s);
absl::Status FromGrpc(const grpc::Status& s);

}  // namespace pkgdist

#endif  // PKGDIST_SHARED_GRPC_OPTIONS_H_
