#include "shared/grpc_options.h"

#include <algorithm>

namespace pkgdist {
namespace {

void SetFlowControl(grpc::ChannelArguments& args, int max_message_bytes) {
  // BDP probing lets each stream's window grow to hundreds of MiB of memory;
  // a fixed lookahead keeps memory bounded and one stream fast.
  args.SetInt("grpc.http2.bdp_probe", 0);
  args.SetInt("grpc.http2.lookahead_bytes", 8 << 20);
  args.SetMaxReceiveMessageSize(max_message_bytes);
  args.SetMaxSendMessageSize(max_message_bytes);
}

}  // namespace

grpc::ChannelArguments AgentChannelArgs(int detect_seconds, int max_reconnect_backoff_ms,
                                        int max_message_bytes) {
  grpc::ChannelArguments args;
  int third_ms = std::max(kMinPingIntervalMs, detect_seconds * 1000 / 3);
  args.SetInt(GRPC_ARG_KEEPALIVE_TIME_MS, third_ms);
  args.SetInt(GRPC_ARG_KEEPALIVE_TIMEOUT_MS, third_ms);
  args.SetInt(GRPC_ARG_KEEPALIVE_PERMIT_WITHOUT_CALLS, 1);
  args.SetInt(GRPC_ARG_HTTP2_MAX_PINGS_WITHOUT_DATA, 0);
  args.SetInt(GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS, 500);
  args.SetInt(GRPC_ARG_MIN_RECONNECT_BACKOFF_MS, 500);
  args.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, max_reconnect_backoff_ms);
  // One channel per agent: never share subchannels between agents' channels,
  // whose credentials differ in the identity they expect.
  args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
  SetFlowControl(args, max_message_bytes);
  return args;
}

void ConfigureAgentServer(grpc::ServerBuilder& builder, int max_message_bytes) {
  builder.AddChannelArgument(GRPC_ARG_HTTP2_MIN_RECV_PING_INTERVAL_WITHOUT_DATA_MS,
                             kMinPingIntervalMs);
  builder.AddChannelArgument(GRPC_ARG_KEEPALIVE_PERMIT_WITHOUT_CALLS, 1);
  builder.AddChannelArgument(GRPC_ARG_HTTP2_MAX_PING_STRIKES, 0);
  builder.AddChannelArgument("grpc.http2.bdp_probe", 0);
  builder.AddChannelArgument("grpc.http2.lookahead_bytes", 8 << 20);
  builder.SetMaxReceiveMessageSize(max_message_bytes);
  builder.SetMaxSendMessageSize(max_message_bytes);
}

grpc::ChannelArguments AdminChannelArgs() {
  grpc::ChannelArguments args;
  args.SetMaxReceiveMessageSize(kMaxMessageBytes);
  args.SetMaxSendMessageSize(kMaxMessageBytes);
  return args;
}

grpc::Status ToGrpc(const absl::Status& s) {
  if (s.ok()) return grpc::Status::OK;
  return grpc::Status(static_cast<grpc::StatusCode>(s.code()), std::string(s.message()));
}

absl::Status FromGrpc(const grpc::Status& s) {
  if (s.ok()) return absl::OkStatus();
  return absl::Status(static_cast<absl::StatusCode>(s.error_code()), s.error_message());
}

}  // namespace pkgdist
