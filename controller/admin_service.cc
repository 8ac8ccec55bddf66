#include "controller/admin_service.h"

#include <algorithm>
#include <chrono>
#include <optional>
#include <set>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "controller/page_token.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "shared/grpc_options.h"
#include "shared/logging.h"
#include "shared/manifest.h"
#include "shared/paths.h"
#include "shared/sha256.h"
#include "shared/signing.h"
#include "shared/status_macros.h"
#include "shared/tls.h"

namespace pkgdist {
namespace {

using grpc::Status;

absl::Status ValidateAddress(absl::string_view address) {
  size_t colon = address.rfind(':');
  int port = 0;
  if (address.empty() || colon == absl::string_view::npos || colon == 0 ||
      !absl::SimpleAtoi(address.substr(colon + 1), &port) || port <= 0 || port > 65535) {
    return absl::InvalidArgumentError(
        absl::StrCat("address \"", address, "\" must be HOST:PORT with a port from 1 to 65535"));
  }
  return absl::OkStatus();
}

void FillPackageInfo(const PackageRow& p, v1::PackageInfo* out) {
  out->set_name(p.name);
  out->set_version(p.version);
  out->set_id(p.id);
  out->set_size(p.size);
  out->set_files(p.files);
  out->set_chunks(p.chunks);
  out->set_created_at(FormatRfc3339(p.created_ms));
  v1::PackageSignature sig;
  v1::SignatureBody body;
  if (!p.signature.empty() && sig.ParseFromString(p.signature) && body.ParseFromString(sig.body())) {
    auto* summary = out->mutable_signature();
    summary->set_key_id(sig.key_id());
    summary->set_sequence(body.sequence());
    summary->set_expires_at(FormatRfc3339(body.expires_unix_seconds() * 1000));
    summary->set_signed_at(FormatRfc3339(body.signed_unix_seconds() * 1000));
  }
}

// The signature a client sent for `id` (hex) of name@version, serialized;
// INVALID_ARGUMENT if it does not name that package. The controller cannot
// tell a good signature from a forged one and does not try: agents do.
absl::StatusOr<std::string> AcceptSignature(const v1::PackageSignature& sig,
                                            const std::string& id_hex, const std::string& name,
                                            const std::string& version) {
  std::optional<std::string> id_raw = FromHex(id_hex);
  if (!id_raw.has_value()) return absl::InternalError("bad stored package id");
  RETURN_IF_ERROR(CheckSignatureNamesPackage(sig, *id_raw, name, version).status());
  return sig.SerializeAsString();
}

}  // namespace

std::string OneLineBounded(absl::string_view s) {
  constexpr size_t kMax = 256;
  std::string out(s.substr(0, kMax));
  for (char& c : out) {
    if (static_cast<unsigned char>(c) < 0x20 || c == 0x7f || c == ' ') c = '_';
  }
  if (s.size() > kMax) out += "...";
  return out;
}

namespace {

// "key K sequence N" (with sep "=": "key=K sequence=N"): what a signature
// says of itself, for events and the audit trail.
std::string SignatureDetail(const v1::PackageSignature& sig, absl::string_view sep = " ") {
  v1::SignatureBody body;
  std::string out = absl::StrCat("key", sep, OneLineBounded(sig.key_id()));
  if (body.ParseFromString(sig.body())) absl::StrAppend(&out, " sequence", sep, body.sequence());
  return out;
}

// "package=N@V agents=A,B" (or agents=all): a job request's essentials; at
// most 50 agents are named, then how many there were.
std::string JobRequest(const std::string& package,
                       const google::protobuf::RepeatedPtrField<std::string>& agents, bool all,
                       const std::string& selector) {
  constexpr int kMaxNamed = 50;
  std::string out = absl::StrCat("package=", OneLineBounded(package), " agents=");
  if (all) absl::StrAppend(&out, "all", agents.empty() ? "" : "+");
  for (int i = 0; i < agents.size() && i < kMaxNamed; ++i) {
    absl::StrAppend(&out, i > 0 ? "," : "", OneLineBounded(agents[i]));
  }
  if (agents.size() > kMaxNamed) absl::StrAppend(&out, ",... (", agents.size(), " agents)");
  if (!selector.empty()) absl::StrAppend(&out, " select=", OneLineBounded(selector));
  return out;
}

// The labels of a request, validated.
absl::StatusOr<Labels> RequestLabels(const google::protobuf::Map<std::string, std::string>& in) {
  Labels out;
  for (const auto& [key, value] : in) {
    RETURN_IF_ERROR(ValidateLabel(key, value));
    out[key] = value;
  }
  return out;
}

// "job=ID" or "job=ID agent=A".
std::string TargetRequest(const std::string& job, const std::string& agent) {
  std::string out = absl::StrCat("job=", OneLineBounded(job));
  if (!agent.empty()) absl::StrAppend(&out, " agent=", OneLineBounded(agent));
  return out;
}

// A deadline beyond this (100 years) would overflow the millisecond clock.
constexpr uint64_t kMaxDeadlineSeconds = uint64_t{100} * 365 * 86400;

}  // namespace

void TargetToProto(const TargetRow& t, v1::TargetStatus* o) {
  o->set_agent(t.agent);
  o->set_state(std::string(TargetStateName(t.state)));
  o->set_attempts(t.attempts);
  o->set_last_error(t.last_error);
  if (t.state == TargetState::kRetryWait) o->set_next_attempt_at(FormatRfc3339(t.next_attempt_ms));
  o->set_bytes_acked(t.bytes_acked);
  o->set_bytes_total(t.bytes_total);
  o->set_bytes_sent(t.bytes_sent);
  o->set_bytes_reused(t.bytes_reused);
  o->set_bytes_from_peer(t.bytes_from_peer);
  o->set_updated_at(FormatRfc3339(t.updated_ms));
}

v1::JobStatus JobToProto(const JobView& job) {
  v1::JobStatus out;
  out.set_id(job.job.id);
  out.set_kind(std::string(JobKindName(job.job.kind)));
  out.set_package(job.job.package);
  out.set_state(std::string(JobStateName(job.state)));
  out.set_created_at(FormatRfc3339(job.job.created_ms));
  for (const TargetRow& t : job.targets) TargetToProto(t, out.add_targets());
  return out;
}

v1::JobStatus AdminService::JobStatusOf(const JobView& job) {
  v1::JobStatus out = JobToProto(job);
  Engine::StoreHealth h = engine_->store_health();
  if (!h.error.empty()) {
    out.set_store_error(absl::StrCat(h.error, " (since ", FormatRfc3339(h.since_ms), "; ",
                                     h.unrecorded, " ended attempt(s) not yet recorded)"));
  }
  return out;
}

void AdminService::FillAgentInfo(const AgentRow& row, v1::AgentInfo* out) {
  out->set_name(row.name);
  out->set_address(row.address);
  out->set_connection(pool_->State(row.name));
  AgentPool::Info info = pool_->GetInfo(row.name);
  out->set_last_contact(FormatRfc3339(info.last_contact_ms));
  out->set_last_error(info.last_error);
  for (const auto& [key, value] : row.labels) (*out->mutable_labels())[key] = value;
  out->set_rate(FormatRate(row.rate));
}

Status AdminService::AddAgent(Ctx* ctx, const v1::AddAgentRequest* req, v1::AgentInfo* resp) {
  std::string request = absl::StrCat("agent=", OneLineBounded(req->name()),
                                     " address=", OneLineBounded(req->address()));
  auto labels = RequestLabels(req->labels());
  if (labels.ok() && !labels->empty()) {
    absl::StrAppend(&request, " labels=", OneLineBounded(FormatLabels(*labels)));
  }
  return Audited(ctx, "AddAgent", std::move(request), [&](AuditEntry& audit) -> Status {
    if (auto s = ValidateName(req->name(), "name"); !s.ok()) return ToGrpc(s);
    if (auto s = ValidateAddress(req->address()); !s.ok()) return ToGrpc(s);
    if (!labels.ok()) return ToGrpc(labels.status());
    std::optional<Labels> replace;
    if (!labels->empty()) replace = *labels;
    if (auto s = store_->AddAgent(req->name(), req->address(), &audit, replace); !s.ok()) {
      return ToGrpc(s);
    }
    auto row = store_->GetAgent(req->name());
    if (!row.ok()) return ToGrpc(row.status());
    spdlog::info("agent {} registered at {}", req->name(), req->address());
    engine_->AgentChanged(*row);
    engine_->Kick();
    FillAgentInfo(*row, resp);
    return Status::OK;
  });
}

Status AdminService::SetAgentLabels(Ctx* ctx, const v1::SetAgentLabelsRequest* req,
                                    v1::AgentInfo* resp) {
  auto set = RequestLabels(req->set());
  std::string request = absl::StrCat("agent=", OneLineBounded(req->name()));
  if (set.ok() && !set->empty()) absl::StrAppend(&request, " set=", OneLineBounded(FormatLabels(*set)));
  if (!req->remove().empty()) {
    absl::StrAppend(&request, " remove=", OneLineBounded(absl::StrJoin(req->remove(), ",")));
  }
  return Audited(ctx, "SetAgentLabels", std::move(request), [&](AuditEntry& audit) -> Status {
    if (!set.ok()) return ToGrpc(set.status());
    std::vector<std::string> remove;
    for (const std::string& key : req->remove()) {
      if (auto s = ValidateLabelKey(key); !s.ok()) return ToGrpc(s);
      if (set->count(key) > 0) {
        return Status(grpc::StatusCode::INVALID_ARGUMENT,
                      absl::StrCat("label ", key, " is both set and removed"));
      }
      remove.push_back(key);
    }
    auto row = store_->SetAgentLabels(req->name(), *set, remove, &audit);
    if (!row.ok()) return ToGrpc(row.status());
    engine_->AgentChanged(*row);  // its site may have changed
    FillAgentInfo(*row, resp);
    return Status::OK;
  });
}

namespace {

constexpr size_t kDefaultPage = 500, kMaxPage = 1000;
constexpr size_t kDefaultJobPage = 50, kMaxJobPage = 500;

// Adds items to a List response while it stays within `budget` bytes; false
// once the next item would not fit (it is not added).
class PageBudget {
 public:
  explicit PageBudget(size_t budget) : left_(budget) {}
  bool Fits(const google::protobuf::Message& item) {
    size_t bytes = item.ByteSizeLong() + 8;  // field tag and length
    if (bytes > left_) return false;
    left_ -= bytes;
    return true;
  }

 private:
  size_t left_;
};

}  // namespace

Status AdminService::ListAgents(Ctx* ctx, const v1::ListAgentsRequest* req,
                                v1::ListAgentsResponse* resp) {
  if (Status s = Authorize(ctx, "ListAgents"); !s.ok()) return s;
  auto after = DecodePageToken("agents", req->page_token());
  if (!after.ok()) return ToGrpc(after.status());
  size_t size = PageSize(req->page_size(), kDefaultPage, kMaxPage);
  auto rows = store_->ListAgents(req->name_prefix(), *after, size + 1);
  if (!rows.ok()) return ToGrpc(rows.status());
  PageBudget budget(max_response_bytes_);
  for (size_t i = 0; i < rows->size(); ++i) {
    v1::AgentInfo info;
    FillAgentInfo((*rows)[i], &info);
    if (i == size || (!budget.Fits(info) && i > 0)) {
      resp->set_next_page_token(EncodePageToken("agents", (*rows)[i - 1].name));
      break;
    }
    *resp->add_agents() = std::move(info);
  }
  return Status::OK;
}

Status AdminService::GetAgent(Ctx* ctx, const v1::GetAgentRequest* req, v1::AgentDetail* resp) {
  if (Status s = Authorize(ctx, "GetAgent"); !s.ok()) return s;
  auto row = store_->GetAgent(req->name());
  if (!row.ok()) return ToGrpc(row.status());
  grpc::ClientContext cctx;
  cctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
  grpc::Status s = pool_->Stub(row->name, row->address)
                       ->Inventory(&cctx, v1::InventoryRequest(), resp->mutable_inventory());
  if (!s.ok()) {
    resp->set_inventory_error(DescribeError(FromGrpc(s)));
  } else {
    pool_->RecordContact(row->name);
  }
  FillAgentInfo(*row, resp->mutable_agent());
  return Status::OK;
}

Status AdminService::RemoveAgent(Ctx* ctx, const v1::RemoveAgentRequest* req,
                                 v1::RemoveAgentResponse* resp) {
  return Audited(ctx, "RemoveAgent", absl::StrCat("agent=", OneLineBounded(req->name())),
                 [&](AuditEntry& audit) -> Status {
    auto n = store_->RemoveAgent(req->name(), "agent removed", &audit);
    if (!n.ok()) return ToGrpc(n.status());
    engine_->CancelActive("", req->name(), "agent removed");
    engine_->ForgetAgent(req->name());
    pool_->Forget(req->name());
    spdlog::info("agent {} removed; {} unfinished target(s) cancelled", req->name(), *n);
    resp->set_cancelled_targets(static_cast<uint32_t>(*n));
    return Status::OK;
  });
}

Status AdminService::ImportPackage(Ctx* ctx, grpc::ServerReader<v1::ImportPackageRequest>* reader,
                                   v1::PackageInfo* resp) {
  return Audited(ctx, "ImportPackage", "", [&](AuditEntry& audit) {
    return ReceivePackage(reader, resp, audit);
  });
}

Status AdminService::ReceivePackage(grpc::ServerReader<v1::ImportPackageRequest>* reader,
                                    v1::PackageInfo* resp, AuditEntry& audit) {
  auto session = packages_->BeginImport();
  if (!session.ok()) return ToGrpc(session.status());
  v1::ImportPackageRequest msg;
  v1::PackageSignature signature;
  uint64_t entries = 0, bytes = 0;
  while (reader->Read(&msg)) {
    if (msg.has_header() && audit.request.empty()) {
      audit.request = absl::StrCat("package=", OneLineBounded(msg.header().name()), "@",
                                   OneLineBounded(msg.header().version()));
    }
    entries += msg.has_entry() ? 1 : 0;
    bytes += msg.has_data() ? msg.data().data().size() : 0;
    if (msg.has_end() && msg.end().has_signature()) signature = msg.end().signature();
    // Moves the content out of msg (to the session's writer): no copy.
    if (absl::Status s = (*session)->Add(std::move(msg)); !s.ok()) {
      absl::StrAppend(&audit.request, " entries=", entries, " bytes=", bytes);
      return ToGrpc(s);
    }
  }
  absl::StrAppend(&audit.request, " entries=", entries, " bytes=", bytes);
  if (signature.ByteSizeLong() > 0) {
    absl::StrAppend(&audit.request, " key=", OneLineBounded(signature.key_id()));
  }
  if (!(*session)->ended()) {
    return Status(grpc::StatusCode::CANCELLED, "upload ended before its end message; nothing kept");
  }
  auto manifest = (*session)->Finish();
  if (!manifest.ok()) return ToGrpc(manifest.status());
  return StorePackage(**session, *manifest, signature, resp, audit);
}

Status AdminService::ImportLocalPackage(Ctx* ctx, const v1::ImportLocalRequest* req,
                                        v1::PackageInfo* resp) {
  return Audited(ctx, "ImportLocalPackage",
                 absl::StrCat("package=", OneLineBounded(req->name()), "@",
                              OneLineBounded(req->version()), " path=", OneLineBounded(req->path())),
                 [&](AuditEntry& audit) -> Status {
    if (absl::Status s = ValidateName(req->name(), "name"); !s.ok()) return ToGrpc(s);
    if (absl::Status s = ValidateName(req->version(), "version"); !s.ok()) return ToGrpc(s);
    absl::Time start = absl::Now();
    auto local = packages_->ImportLocal(req->path(), req->name(), req->version());
    if (!local.ok()) {
      spdlog::warn("local import of {} as {}@{} refused: {}", req->path(), req->name(),
                   req->version(), local.status().message());
      return ToGrpc(local.status());
    }
    std::string how = local->session->local_stats().Summary();
    absl::StrAppend(&audit.request, " entries=", local->manifest.files_size(),
                    " bytes=", local->manifest.total_size());
    spdlog::info("local import of {} as {}@{}: {} in {:.2f} s", local->resolved_path,
                 req->name(), req->version(), how, absl::ToDoubleSeconds(absl::Now() - start));
    return StorePackage(*local->session, local->manifest, v1::PackageSignature(), resp, audit);
  });
}

Status AdminService::StorePackage(ImportSession& session, const v1::Manifest& manifest,
                                  const v1::PackageSignature& signature, v1::PackageInfo* resp,
                                  AuditEntry& audit) {
  std::string id = PackageIdHex(manifest);
  std::string signature_bytes;
  if (signature.ByteSizeLong() > 0) {
    auto accepted = AcceptSignature(signature, id, manifest.name(), manifest.version());
    if (!accepted.ok()) {
      return ToGrpc(absl::InvalidArgumentError(absl::StrCat(
          accepted.status().message(),
          ": the client signed another manifest than the upload built; nothing kept")));
    }
    signature_bytes = *std::move(accepted);
  }
  auto existing = store_->FindPackage(manifest.name(), manifest.version());
  if (existing.ok()) {
    if (existing->id != id) {
      return Status(grpc::StatusCode::ALREADY_EXISTS,
                    absl::StrCat(manifest.name(), "@", manifest.version(),
                                 " already exists with other content (id ", existing->id,
                                 "); choose a new version"));
    }
    audit.result = absl::StrCat("id ", id, ": already imported");
    if (!signature_bytes.empty() && signature_bytes != existing->signature) {
      audit.result = absl::StrCat("id ", id, ": already imported; signature stored");
      if (absl::Status s = store_->SetPackageSignature(id, signature_bytes,
                                                       SignatureDetail(signature), &audit);
          !s.ok()) {
        return ToGrpc(s);
      }
      existing->signature = signature_bytes;
      spdlog::info("imported {}@{} again: signature by key {} stored", existing->name,
                   existing->version, signature.key_id());
    }
    FillPackageInfo(*existing, resp);
    return Status::OK;
  }
  if (existing.status().code() != absl::StatusCode::kNotFound) return ToGrpc(existing.status());
  if (absl::Status s = packages_->Commit(session, id); !s.ok()) return ToGrpc(s);
  PackageRow row;
  row.id = id;
  row.name = manifest.name();
  row.version = manifest.version();
  row.size = manifest.total_size();
  row.files = static_cast<uint32_t>(manifest.files_size());
  row.chunks = static_cast<uint32_t>(manifest.chunks_size());
  row.created_ms = clock_->NowMs();
  row.signature = signature_bytes;
  audit.result = absl::StrCat("id ", id, " imported");
  if (absl::Status s = store_->AddPackage(row, manifest.SerializeAsString(), &audit); !s.ok()) {
    return ToGrpc(s);
  }
  spdlog::info("imported {}@{}: {} bytes, {} entries, {} chunks, id {}{}", row.name, row.version,
               row.size, row.files, row.chunks, row.id,
               signature_bytes.empty() ? ", unsigned"
                                       : absl::StrCat(", signed by key ", signature.key_id()));
  auto stored = store_->GetPackageById(id);
  FillPackageInfo(stored.ok() ? *stored : row, resp);
  return Status::OK;
}

Status AdminService::ListPackages(Ctx* ctx, const v1::ListPackagesRequest* req,
                                  v1::ListPackagesResponse* resp) {
  if (Status s = Authorize(ctx, "ListPackages"); !s.ok()) return s;
  auto after = DecodePageToken("packages", req->page_token());
  if (!after.ok()) return ToGrpc(after.status());
  std::string after_name = *after, after_version;
  if (size_t at = after->find('@'); at != std::string::npos) {
    after_name = after->substr(0, at);
    after_version = after->substr(at + 1);
  }
  size_t size = PageSize(req->page_size(), kDefaultPage, kMaxPage);
  auto rows = store_->ListPackages(req->name(), after_name, after_version, size + 1);
  if (!rows.ok()) return ToGrpc(rows.status());
  PageBudget budget(max_response_bytes_);
  for (size_t i = 0; i < rows->size(); ++i) {
    v1::PackageInfo info;
    FillPackageInfo((*rows)[i], &info);
    if (i == size || (!budget.Fits(info) && i > 0)) {
      const PackageRow& last = (*rows)[i - 1];
      resp->set_next_page_token(EncodePageToken("packages", absl::StrCat(last.name, "@", last.version)));
      break;
    }
    *resp->add_packages() = std::move(info);
  }
  return Status::OK;
}

absl::StatusOr<PackageRow> AdminService::ResolvePackage(const std::string& label,
                                                        absl::string_view field) {
  size_t at = label.find('@');
  if (at == std::string::npos) {
    return absl::InvalidArgumentError(
        absl::StrCat(field, " \"", label, "\" must be NAME@VERSION"));
  }
  std::string name = label.substr(0, at), version = label.substr(at + 1);
  if (auto s = ValidateName(name, absl::StrCat(field, " name")); !s.ok()) return s;
  if (auto s = ValidateName(version, absl::StrCat(field, " version")); !s.ok()) return s;
  auto p = store_->FindPackage(name, version);
  if (p.status().code() == absl::StatusCode::kNotFound) {
    return absl::NotFoundError(absl::StrCat("package ", label, " is not imported"));
  }
  return p;
}

Status AdminService::SignPackage(Ctx* ctx, const v1::SignPackageRequest* req,
                                 v1::PackageInfo* resp) {
  return Audited(ctx, "SignPackage",
                 absl::StrCat("package=", OneLineBounded(req->package()), " ",
                              SignatureDetail(req->signature(), "=")),
                 [&](AuditEntry& audit) -> Status {
    auto p = ResolvePackage(req->package(), "package");
    if (!p.ok()) return ToGrpc(p.status());
    auto accepted = AcceptSignature(req->signature(), p->id, p->name, p->version);
    if (!accepted.ok()) return ToGrpc(accepted.status());
    if (absl::Status s = store_->SetPackageSignature(p->id, *accepted,
                                                     SignatureDetail(req->signature()), &audit);
        !s.ok()) {
      return ToGrpc(s);
    }
    p->signature = *std::move(accepted);
    spdlog::info("package {}@{} signed by key {}", p->name, p->version, req->signature().key_id());
    FillPackageInfo(*p, resp);
    return Status::OK;
  });
}

Status AdminService::GetPackage(Ctx* ctx, const v1::GetPackageRequest* req,
                                v1::PackageInfo* resp) {
  if (Status s = Authorize(ctx, "GetPackage"); !s.ok()) return s;
  auto p = ResolvePackage(req->package(), "package");
  if (!p.ok()) return ToGrpc(p.status());
  FillPackageInfo(*p, resp);
  return Status::OK;
}

Status AdminService::DeletePackage(Ctx* ctx, const v1::DeletePackageRequest* req,
                                   v1::DeletePackageResponse*) {
  return Audited(ctx, "DeletePackage",
                 absl::StrCat("package=", OneLineBounded(req->package()),
                              req->force() ? " force=true" : ""),
                 [&](AuditEntry& audit) -> Status {
    auto p = ResolvePackage(req->package(), "package");
    if (!p.ok()) return ToGrpc(p.status());
    auto cancelled = store_->DeletePackage(p->id, req->force(), &audit);
    if (!cancelled.ok()) return ToGrpc(cancelled.status());
    // Their targets are cancelled in the store; stop what is still sending.
    for (const std::string& job : *cancelled) engine_->CancelActive(job, "", "package deleted");
    if (absl::Status s = packages_->Delete(p->id); !s.ok()) {
      spdlog::warn("deleting content of {}: {}", req->package(), s);
    }
    engine_->Kick();
    spdlog::info("package {} deleted{}", req->package(), req->force() ? " (forced)" : "");
    return Status::OK;
  });
}

absl::StatusOr<std::vector<std::string>> AdminService::ResolveAgents(
    const google::protobuf::RepeatedPtrField<std::string>& names, bool all,
    const std::string& selector) {
  std::set<std::string> out;
  if (all || !selector.empty()) {
    std::optional<LabelSelector> select;
    if (!selector.empty()) {
      ASSIGN_OR_RETURN(select, LabelSelector::Parse(selector));
    }
    auto rows = store_->ListAgents();
    if (!rows.ok()) return rows.status();
    size_t matched = 0;
    for (const auto& r : *rows) {
      const bool hit = select.has_value() && select->Matches(r.labels);
      matched += hit ? 1 : 0;
      if (all || hit) out.insert(r.name);
    }
    if (all && rows->empty()) {
      return absl::FailedPreconditionError("all_agents: no agents are registered");
    }
    if (select.has_value() && matched == 0) {
      return absl::FailedPreconditionError(absl::StrCat(
          "selector ", select->ToString(), " matches none of the ", rows->size(),
          " registered agents"));
    }
  }
  for (const std::string& n : names) {
    auto row = store_->GetAgent(n);
    if (!row.ok()) {
      if (row.status().code() == absl::StatusCode::kNotFound) {
        return absl::NotFoundError(absl::StrCat("agent ", n, " is not registered"));
      }
      return row.status();
    }
    out.insert(n);
  }
  if (out.empty()) {
    return absl::InvalidArgumentError(
        "agents: name at least one agent, set all_agents or give a selector");
  }
  return std::vector<std::string>(out.begin(), out.end());
}

Status AdminService::StartJob(JobKind kind, const std::string& package,
                              const google::protobuf::RepeatedPtrField<std::string>& agents,
                              bool all, const std::string& selector, const JobPolicy& policy,
                              v1::JobStatus* resp, AuditEntry& audit) {
  auto p = ResolvePackage(package, "package");
  if (!p.ok()) return ToGrpc(p.status());
  auto names = ResolveAgents(agents, all, selector);
  if (!names.ok()) return ToGrpc(names.status());
  uint64_t total = kind == JobKind::kDistribute ? p->size : 0;
  auto job = store_->CreateJob(kind, p->id, *names, policy, total, &audit);
  if (!job.ok()) return ToGrpc(job.status());
  LogWith({.job = job->id, .package = package}, spdlog::level::info, "job {}: {} {} to {} agent(s)",
          job->id, JobKindName(kind), package, names->size());
  engine_->Kick();
  auto view = store_->GetJob(job->id);
  if (!view.ok()) return ToGrpc(view.status());
  *resp = JobStatusOf(*view);
  return Status::OK;
}

Status AdminService::Distribute(Ctx* ctx, const v1::DistributeRequest* req, v1::JobStatus* resp) {
  std::string request =
      JobRequest(req->package(), req->agents(), req->all_agents(), req->selector());
  if (req->max_attempts() > 0) absl::StrAppend(&request, " max_attempts=", req->max_attempts());
  if (req->deadline_seconds() > 0) {
    absl::StrAppend(&request, " deadline_seconds=", req->deadline_seconds());
  }
  return Audited(ctx, "Distribute", std::move(request), [&](AuditEntry& audit) -> Status {
    JobPolicy policy;
    policy.max_attempts = req->max_attempts();
    if (req->deadline_seconds() > 0) {
      if (req->deadline_seconds() > kMaxDeadlineSeconds) {
        return Status(grpc::StatusCode::INVALID_ARGUMENT,
                      absl::StrCat("deadline_seconds ", req->deadline_seconds(),
                                   " is more than ", kMaxDeadlineSeconds, " (100 years)"));
      }
      policy.deadline_ms = clock_->NowMs() + static_cast<int64_t>(req->deadline_seconds()) * 1000;
    }
    return StartJob(JobKind::kDistribute, req->package(), req->agents(), req->all_agents(),
                    req->selector(), policy, resp, audit);
  });
}

Status AdminService::RemoveFromAgents(Ctx* ctx, const v1::RemoveFromAgentsRequest* req,
                                      v1::JobStatus* resp) {
  return Audited(ctx, "RemoveFromAgents",
                 JobRequest(req->package(), req->agents(), req->all_agents(), req->selector()),
                 [&](AuditEntry& audit) {
                   return StartJob(JobKind::kRemove, req->package(), req->agents(),
                                   req->all_agents(), req->selector(), JobPolicy{}, resp, audit);
                 });
}

Status AdminService::ListJobs(Ctx* ctx, const v1::ListJobsRequest* req,
                              v1::ListJobsResponse* resp) {
  if (Status s = Authorize(ctx, "ListJobs"); !s.ok()) return s;
  JobFilter filter;
  if (!req->state().empty()) {
    auto st = ParseJobState(req->state());
    if (!st.ok()) {
      return Status(grpc::StatusCode::INVALID_ARGUMENT,
                    absl::StrCat("state \"", req->state(),
                                 "\" must be pending, in_progress, complete, failed or cancelled"));
    }
    filter.state = *st;
  }
  filter.package = req->package();
  filter.agent = req->agent();
  auto token = DecodePageToken("jobs", req->page_token());
  if (!token.ok()) return ToGrpc(token.status());
  std::optional<JobCursor> after;
  if (!token->empty()) {
    std::pair<std::string, std::string> parts = absl::StrSplit(*token, ':');
    JobCursor c;
    if (!absl::SimpleAtoi(parts.first, &c.created_ms) || !absl::SimpleAtoi(parts.second, &c.seq)) {
      return Status(grpc::StatusCode::INVALID_ARGUMENT, "page_token: not a job cursor");
    }
    after = c;
  }
  size_t size = PageSize(req->page_size(), kDefaultJobPage, kMaxJobPage);
  auto jobs = store_->ListJobs(filter, after, size + 1);
  if (!jobs.ok()) return ToGrpc(jobs.status());
  PageBudget budget(max_response_bytes_);
  for (size_t i = 0; i < jobs->size(); ++i) {
    v1::JobStatus status = JobStatusOf((*jobs)[i]);
    // The first job always goes out, so a page always makes progress (a
    // single job is bounded by its targets: see GetJob).
    if (i == size || (!budget.Fits(status) && i > 0)) {
      const JobRow& last = (*jobs)[i - 1].job;
      resp->set_next_page_token(EncodePageToken("jobs", absl::StrCat(last.created_ms, ":", last.seq)));
      break;
    }
    *resp->add_jobs() = std::move(status);
  }
  return Status::OK;
}

Status AdminService::GetJob(Ctx* ctx, const v1::GetJobRequest* req, v1::JobStatus* resp) {
  if (Status s = Authorize(ctx, "GetJob"); !s.ok()) return s;
  auto job = store_->GetJob(req->id());
  if (!job.ok()) return ToGrpc(job.status());
  *resp = JobStatusOf(*job);
  return Status::OK;
}

Status AdminService::WatchJob(Ctx* ctx, const v1::GetJobRequest* req,
                              grpc::ServerWriter<v1::JobStatus>* writer) {
  if (Status s = Authorize(ctx, "WatchJob"); !s.ok()) return s;
  constexpr absl::Duration kMinInterval = absl::Milliseconds(250);
  std::string last;
  uint64_t seen = store_->version();
  for (;;) {
    auto job = store_->GetJob(req->id());
    if (!job.ok()) return ToGrpc(job.status());
    v1::JobStatus status = JobStatusOf(*job);
    std::string bytes = status.SerializeAsString();
    if (bytes != last) {
      if (!writer->Write(status)) return Status::OK;  // The client went away.
      last = std::move(bytes);
    }
    if (job->state != JobState::kPending && job->state != JobState::kInProgress) {
      return Status::OK;
    }
    // Wait for a change, then coalesce bursts of progress into a few updates
    // a second; but the job's end goes out at once, since `--wait` callers
    // (pipelines, the benchmark) are waiting for exactly that.
    absl::Time next_update = absl::Now() + kMinInterval;
    bool changed = false;
    while (!ctx->IsCancelled()) {
      if (stopping_.load()) {
        return Status(grpc::StatusCode::UNAVAILABLE, "the controller is shutting down; watch again");
      }
      absl::Duration wait = changed ? next_update - absl::Now() : absl::Seconds(1);
      if (changed && wait <= absl::ZeroDuration()) break;
      uint64_t v = store_->WaitForChange(seen, wait, &stopping_);
      if (v == seen) continue;
      seen = v;
      changed = true;
      auto ended = store_->JobEnded(req->id());
      // On an error, GetJob at the top of the loop reports it to the caller.
      if (!ended.ok() || *ended) break;
    }
    if (ctx->IsCancelled()) return Status(grpc::StatusCode::CANCELLED, "watch cancelled");
  }
}

Status AdminService::CancelJob(Ctx* ctx, const v1::CancelJobRequest* req, v1::JobStatus* resp) {
  return Audited(ctx, "CancelJob", TargetRequest(req->id(), req->agent()),
                 [&](AuditEntry& audit) -> Status {
    auto n = store_->Cancel(req->id(), req->agent(), "cancelled by operator", &audit);
    if (!n.ok()) return ToGrpc(n.status());
    engine_->CancelActive(req->id(), req->agent(), "cancelled by operator");
    spdlog::info("job {}: {} target(s) cancelled by operator", req->id(), *n);
    auto job = store_->GetJob(req->id());
    if (!job.ok()) return ToGrpc(job.status());
    *resp = JobStatusOf(*job);
    return Status::OK;
  });
}

Status AdminService::RetryJob(Ctx* ctx, const v1::RetryJobRequest* req, v1::JobStatus* resp) {
  return Audited(ctx, "RetryJob", TargetRequest(req->id(), req->agent()),
                 [&](AuditEntry& audit) -> Status {
    auto n = store_->RetryNow(req->id(), req->agent(), &audit);
    if (!n.ok()) return ToGrpc(n.status());
    engine_->Kick();
    spdlog::info("job {}: {} target(s) retried by operator", req->id(), *n);
    auto job = store_->GetJob(req->id());
    if (!job.ok()) return ToGrpc(job.status());
    *resp = JobStatusOf(*job);
    return Status::OK;
  });
}

Status AdminService::DeleteJob(Ctx* ctx, const v1::DeleteJobRequest* req,
                               v1::DeleteJobResponse*) {
  return Audited(ctx, "DeleteJob", TargetRequest(req->id(), ""),
                 [&](AuditEntry& audit) -> Status {
    if (absl::Status s = store_->DeleteJob(req->id(), &audit); !s.ok()) return ToGrpc(s);
    spdlog::info("job {} deleted", req->id());
    return Status::OK;
  });
}

}  // namespace pkgdist
