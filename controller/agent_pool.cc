#include "controller/agent_pool.h"

#include <vector>

#include "shared/grpc_options.h"
#include "shared/logging.h"

namespace pkgdist {
namespace {

pkgdist::v1::ConnectionState StateOf(grpc::Channel& ch) {
  switch (ch.GetState(false)) {
    case GRPC_CHANNEL_READY:
      return pkgdist::v1::CONNECTION_STATE_READY;
    case GRPC_CHANNEL_CONNECTING:
      return pkgdist::v1::CONNECTION_STATE_CONNECTING;
    case GRPC_CHANNEL_TRANSIENT_FAILURE:
    case GRPC_CHANNEL_SHUTDOWN:
      return pkgdist::v1::CONNECTION_STATE_UNREACHABLE;
    default:
      return pkgdist::v1::CONNECTION_STATE_IDLE;
  }
}

}  // namespace

AgentPool::AgentPool(Options options,
                     std::shared_ptr<grpc::experimental::CertificateProviderInterface> provider,
                     const Clock* clock)
    : options_(std::move(options)),
      provider_(std::move(provider)),
      clock_(clock),
      callback_target_(std::make_shared<CallbackTarget>()) {
  absl::MutexLock l(&callback_target_->mu);
  callback_target_->pool = this;
}

AgentPool::~AgentPool() {
  absl::MutexLock l(&callback_target_->mu);
  callback_target_->pool = nullptr;
}

void AgentPool::RecordHandshakeError(const std::string& name, const std::string& reason) {
  spdlog::warn("agent {}: {}", name, reason);
  absl::MutexLock l(&mu_);
  auto it = agents_.find(name);
  if (it == agents_.end()) return;
  it->second->handshake_error = reason;
  it->second->handshake_error_ms = clock_->NowMs();
  it->second->last_error = reason;
}

AgentPool::Entry& AgentPool::GetOrCreate(const std::string& name, const std::string& address) {
  auto& slot = agents_[name];
  if (slot == nullptr) slot = std::make_unique<Entry>();
  Entry& e = *slot;
  if (e.channel == nullptr || e.address != address) {
    auto on_reject = [target = callback_target_, name](const std::string& reason) {
      absl::ReaderMutexLock l(&target->mu);
      if (target->pool != nullptr) target->pool->RecordHandshakeError(name, reason);
    };
    auto creds = MakeChannelCredentials(provider_, options_.tls,
                                        SpiffeId{options_.trust_domain, "agent", name}, on_reject);
    e.address = address;
    e.channel = grpc::CreateCustomChannel(
        address, creds, AgentChannelArgs(options_.detect_seconds, options_.max_reconnect_backoff_ms,
                                         options_.max_message_bytes));
    e.stub = pkgdist::v1::Agent::NewStub(e.channel);
  }
  return e;
}

std::shared_ptr<pkgdist::v1::Agent::StubInterface> AgentPool::Stub(const std::string& name,
                                                                  const std::string& address) {
  absl::MutexLock l(&mu_);
  return GetOrCreate(name, address).stub;
}

std::shared_ptr<grpc::Channel> AgentPool::Channel(const std::string& name,
                                                  const std::string& address) {
  absl::MutexLock l(&mu_);
  return GetOrCreate(name, address).channel;
}

pkgdist::v1::ConnectionState AgentPool::State(const std::string& name) {
  std::shared_ptr<grpc::Channel> ch;
  {
    absl::MutexLock l(&mu_);
    auto it = agents_.find(name);
    if (it == agents_.end() || it->second->channel == nullptr) {
      return pkgdist::v1::CONNECTION_STATE_IDLE;
    }
    ch = it->second->channel;
  }
  return StateOf(*ch);
}

absl::flat_hash_map<pkgdist::v1::ConnectionState, int> AgentPool::CountOpenConnections() {
  std::vector<std::shared_ptr<grpc::Channel>> channels;
  {
    absl::MutexLock l(&mu_);
    for (const auto& [name, e] : agents_) {
      if (e->channel != nullptr) channels.push_back(e->channel);
    }
  }
  absl::flat_hash_map<pkgdist::v1::ConnectionState, int> counts;
  for (const auto& ch : channels) ++counts[StateOf(*ch)];
  return counts;
}

bool AgentPool::ConnectAndCheckReady(const std::string& name, const std::string& address) {
  return Channel(name, address)->GetState(true) == GRPC_CHANNEL_READY;
}

void AgentPool::RecordContact(const std::string& name) {
  absl::MutexLock l(&mu_);
  auto it = agents_.find(name);
  if (it != agents_.end()) it->second->last_contact_ms = clock_->NowMs();
}

void AgentPool::RecordError(const std::string& name, const std::string& error) {
  absl::MutexLock l(&mu_);
  auto it = agents_.find(name);
  if (it != agents_.end()) it->second->last_error = error;
}

std::string AgentPool::HandshakeErrorSince(const std::string& name, int64_t since_ms) {
  absl::MutexLock l(&mu_);
  auto it = agents_.find(name);
  if (it == agents_.end() || it->second->handshake_error_ms < since_ms) return "";
  return it->second->handshake_error;
}

AgentPool::Info AgentPool::GetInfo(const std::string& name) {
  absl::MutexLock l(&mu_);
  auto it = agents_.find(name);
  if (it == agents_.end()) return {};
  return Info{it->second->last_contact_ms, it->second->last_error};
}

void AgentPool::Disconnect(const std::string& name) {
  absl::MutexLock l(&mu_);
  auto it = agents_.find(name);
  if (it == agents_.end()) return;
  it->second->channel.reset();
  it->second->stub.reset();
}

}  // namespace pkgdist
