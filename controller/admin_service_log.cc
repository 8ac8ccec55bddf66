// AdminService, continued: the audit trail (Authorize, Audited, ListAudit)
// and the event stream (WatchEvents).
#include <grpc/grpc_security_constants.h>

#include <algorithm>
#include <cstdint>
#include <limits>
#include <map>
#include <tuple>
#include <utility>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "controller/admin_service.h"
#include "controller/page_token.h"
#include "shared/logging.h"
#include "shared/tls.h"

namespace pkgdist {
namespace {

using grpc::Status;

constexpr size_t kDefaultAuditPage = 100, kMaxAuditPage = 1000;
constexpr size_t kMaxWho = 512;
// Events read per query; a follower far behind catches up in batches.
constexpr size_t kEventBatch = 500;
constexpr absl::Duration kProgressInterval = absl::Seconds(1);
// How often an idle stream looks whether its client went away.
constexpr absl::Duration kIdleCheck = absl::Seconds(1);

// What a caller's certificate presents, for the audit trail: its SPIFFE ID,
// or, when it has none that parses, why and what it has instead.
std::string PresentedIdentity(const grpc::ServerContextBase& ctx) {
  absl::StatusOr<SpiffeId> id = PeerIdentity(ctx);
  if (id.ok()) return id->ToString();
  std::string out = absl::StrCat("(", id.status().message(), ")");
  std::shared_ptr<const grpc::AuthContext> auth = ctx.auth_context();
  if (auth == nullptr) return out;
  for (const char* property : {GRPC_PEER_SPIFFE_ID_PROPERTY_NAME, GRPC_X509_CN_PROPERTY_NAME}) {
    std::vector<grpc::string_ref> values = auth->FindPropertyValues(property);
    if (values.empty()) continue;
    std::vector<std::string> texts;
    for (const grpc::string_ref& v : values) texts.emplace_back(v.data(), v.size());
    return absl::StrCat(out, " ", property, "=", absl::StrJoin(texts, ","));
  }
  return out;
}

Status OutOfRange(std::string what) {
  return Status(grpc::StatusCode::OUT_OF_RANGE,
                absl::StrCat(what, ". Re-read the state (ListJobs, GetJob, ListAgents), then "
                                   "follow from now (from_now, or pkgdistctl events --follow "
                                   "--from-now)"));
}

// One WatchEvents stream: where it is in the event log and what progress
// it has sent. Not thread-safe (the call's thread only).
class EventSender {
 public:
  EventSender(StateStore* store, grpc::ServerWriter<v1::Event>* writer,
              const v1::WatchEventsRequest& req)
      : store_(store),
        writer_(writer),
        progress_(req.include_progress()),
        from_start_(!req.from_now() && req.after_sequence() == 0),
        cursor_(req.from_now() ? store->newest_event()
                               : static_cast<int64_t>(req.after_sequence())) {}

  int64_t cursor() const { return cursor_; }
  // True once the client went away (a write failed).
  bool gone() const { return gone_; }
  // How long until progress is due (with progress), at most kIdleCheck.
  absl::Duration UntilProgress() const {
    return std::clamp(next_progress_ - absl::Now(), absl::ZeroDuration(), kIdleCheck);
  }

  // Sends what is new: stored events after the cursor, the caught_up marker
  // once, then progress if due and the store changed (`version`) since the
  // last. *more: a full batch was sent, read again. OUT_OF_RANGE if events
  // after the cursor are no longer kept.
  Status Send(uint64_t version, bool* more) {
    *more = false;
    const bool progress_due = progress_ && caught_up_ && absl::Now() >= next_progress_ &&
                              version != progress_version_;
    if (caught_up_ && !progress_due && store_->newest_event() <= cursor_) return Status::OK;
    absl::StatusOr<EventBatch> batch = store_->ReadEvents(cursor_, kEventBatch, progress_due);
    if (!batch.ok()) return ToGrpc(batch.status());
    if (Status s = CheckRange(*batch); !s.ok()) return s;
    from_start_ = false;
    for (const EventRow& e : batch->events) {
      if (!Write(EventToProto(e))) return Status::OK;
      cursor_ = e.seq;
    }
    *more = batch->events.size() == kEventBatch;
    if (*more) return Status::OK;
    if (!caught_up_) {
      caught_up_ = true;
      v1::Event marker;
      marker.set_sequence(static_cast<uint64_t>(cursor_));
      marker.set_time(FormatRfc3339(absl::ToUnixMillis(absl::Now())));
      marker.set_kind(std::string(EventKindName(EventKind::kCaughtUp)));
      if (!Write(marker)) return Status::OK;
    }
    if (progress_due) {
      progress_version_ = version;
      SendProgress(batch->progress);
    }
    return Status::OK;
  }

 private:
  Status CheckRange(const EventBatch& batch) const {
    if (cursor_ > batch.newest) {
      return OutOfRange(absl::StrCat("after_sequence ", cursor_, " is beyond the newest event (",
                                     batch.newest,
                                     "): the controller's state database was replaced"));
    }
    const bool gap = batch.events.empty() ? cursor_ < batch.newest
                                          : batch.events.front().seq != cursor_ + 1;
    if (gap && !from_start_) {
      return OutOfRange(absl::StrCat("the events after sequence ", cursor_,
                                     " are no longer kept (the oldest kept is ", batch.oldest,
                                     "; the controller keeps its newest --event-history)"));
    }
    return Status::OK;
  }

  // Progress of every transferring target whose bytes changed since sent.
  void SendProgress(const std::vector<EventRow>& rows) {
    next_progress_ = absl::Now() + kProgressInterval;
    std::map<std::pair<std::string, std::string>, Counters> now;
    for (const EventRow& p : rows) {
      auto key = std::make_pair(p.job_id, p.agent);
      Counters value{p.target->bytes_acked, p.target->bytes_sent, p.target->bytes_reused,
                     p.target->attempts};
      now.emplace(key, value);
      auto it = sent_.find(key);
      if (it != sent_.end() && it->second == value) continue;
      if (!Write(EventToProto(p))) return;
    }
    sent_ = std::move(now);  // forgets targets no longer transferring
  }

  bool Write(const v1::Event& e) {
    if (!gone_ && !writer_->Write(e)) gone_ = true;
    return !gone_;
  }

  StateStore* store_;
  grpc::ServerWriter<v1::Event>* writer_;
  const bool progress_;
  bool from_start_;  // after_sequence 0: whatever is kept, no gap check
  int64_t cursor_;
  bool caught_up_ = false;
  bool gone_ = false;
  absl::Time next_progress_ = absl::InfinitePast();
  uint64_t progress_version_ = 0;
  // A target's bytes acked, sent and reused, and its attempts.
  using Counters = std::tuple<uint64_t, uint64_t, uint64_t, uint32_t>;
  std::map<std::pair<std::string, std::string>, Counters> sent_;
};

}  // namespace

v1::Event EventToProto(const EventRow& e) {
  v1::Event out;
  out.set_sequence(static_cast<uint64_t>(e.seq));
  out.set_time(FormatRfc3339(e.time_ms));
  out.set_kind(std::string(EventKindName(e.kind)));
  out.set_job_id(e.job_id);
  out.set_job_kind(e.job_kind);
  out.set_package(e.package);
  out.set_package_id(e.package_id);
  out.set_agent(e.agent);
  out.set_address(e.address);
  out.set_state(e.state);
  if (e.target.has_value()) TargetToProto(*e.target, out.mutable_target());
  out.set_detail(e.detail);
  return out;
}

v1::AuditRecord AuditToProto(const AuditRow& r) {
  v1::AuditRecord out;
  out.set_sequence(static_cast<uint64_t>(r.seq));
  out.set_time(FormatRfc3339(r.time_ms));
  out.set_identity(r.identity);
  out.set_peer(r.peer);
  out.set_method(r.method);
  out.set_request(r.request);
  out.set_code(r.code);
  out.set_message(r.message);
  return out;
}

Status AdminService::Authorize(Ctx* ctx, absl::string_view method) {
  Status s = AuthorizePeer(*ctx, trust_domain_, "admin");
  if (s.error_code() != grpc::StatusCode::PERMISSION_DENIED) return s;
  AuditEntry refused{PresentedIdentity(*ctx), ctx->peer(), std::string(method)};
  if (absl::Status r = store_->RecordAudit(refused, FromGrpc(s)); !r.ok()) {
    spdlog::error("audit trail: cannot record the refused {} of {}: {}", method,
                  refused.identity, r);
  }
  return s;
}

Status AdminService::Audited(Ctx* ctx, absl::string_view method, std::string request,
                             absl::FunctionRef<Status(AuditEntry& audit)> body) {
  AuditEntry audit{PresentedIdentity(*ctx), ctx->peer(), std::string(method), std::move(request)};
  Status s = AuthorizePeer(*ctx, trust_domain_, "admin");
  if (s.ok()) s = body(audit);
  if (!audit.recorded) {
    if (absl::Status r = store_->RecordAudit(audit, FromGrpc(s)); !r.ok()) {
      spdlog::error("audit trail: cannot record {} by {} ({}): {}", method, audit.identity,
                    absl::StatusCodeToString(FromGrpc(s).code()), r);
    }
  }
  return s;
}

void AdminService::Shutdown() {
  stopping_.store(true);
  store_->WakeWaiters();
}

Status AdminService::ListAudit(Ctx* ctx, const v1::ListAuditRequest* req,
                               v1::ListAuditResponse* resp) {
  if (Status s = Authorize(ctx, "ListAudit"); !s.ok()) return s;
  AuditFilter filter;
  if (!req->since().empty()) {
    absl::Time since;
    std::string why;
    if (!absl::ParseTime(absl::RFC3339_full, req->since(), &since, &why)) {
      return Status(grpc::StatusCode::INVALID_ARGUMENT,
                    absl::StrCat("since \"", req->since().substr(0, 64),
                                 "\" is not an RFC 3339 time such as 2026-11-24T21:00:00Z (",
                                 why, ")"));
    }
    filter.since_ms = absl::ToUnixMillis(since);
  }
  if (req->who().size() > kMaxWho) {
    return Status(grpc::StatusCode::INVALID_ARGUMENT,
                  absl::StrCat("who is longer than ", kMaxWho, " bytes"));
  }
  filter.who = req->who();
  auto token = DecodePageToken("audit", req->page_token());
  if (!token.ok()) return ToGrpc(token.status());
  int64_t after = 0;
  if (!token->empty() && !absl::SimpleAtoi(*token, &after)) {
    return Status(grpc::StatusCode::INVALID_ARGUMENT, "page_token: not an audit cursor");
  }
  size_t size = PageSize(req->page_size(), kDefaultAuditPage, kMaxAuditPage);
  auto rows = store_->ListAudit(filter, after, size + 1);
  if (!rows.ok()) return ToGrpc(rows.status());
  size_t budget = max_response_bytes_;
  for (size_t i = 0; i < rows->size(); ++i) {
    v1::AuditRecord record = AuditToProto((*rows)[i]);
    const size_t bytes = record.ByteSizeLong() + 8;  // field tag and length
    if (i == size || (bytes > budget && i > 0)) {
      resp->set_next_page_token(EncodePageToken("audit", absl::StrCat((*rows)[i - 1].seq)));
      break;
    }
    budget -= std::min(budget, bytes);
    *resp->add_records() = std::move(record);
  }
  return Status::OK;
}

Status AdminService::WatchEvents(Ctx* ctx, const v1::WatchEventsRequest* req,
                                 grpc::ServerWriter<v1::Event>* writer) {
  if (Status s = Authorize(ctx, "WatchEvents"); !s.ok()) return s;
  if (req->after_sequence() > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
    return OutOfRange(absl::StrCat("after_sequence ", req->after_sequence(),
                                   " is beyond any event"));
  }
  uint64_t seen = store_->version();
  EventSender sender(store_, writer, *req);
  for (;;) {
    if (stopping_.load()) {
      return Status(grpc::StatusCode::UNAVAILABLE,
                    absl::StrCat("the controller is shutting down; reconnect with after_sequence ",
                                 sender.cursor()));
    }
    if (ctx->IsCancelled()) return Status(grpc::StatusCode::CANCELLED, "watch cancelled");
    bool more = false;
    if (Status s = sender.Send(seen, &more); !s.ok()) return s;
    if (sender.gone()) return Status::OK;  // The client went away.
    if (more) continue;
    if (req->include_progress()) {
      seen = store_->WaitForChange(seen, sender.UntilProgress(), &stopping_);
    } else {
      store_->WaitForEvent(sender.cursor(), kIdleCheck, &stopping_);
    }
  }
}

}  // namespace pkgdist
