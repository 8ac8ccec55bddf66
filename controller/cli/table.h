// Human-readable output (`--output table`): aligned text tables and
// key/value blocks. Every renderer returns the text, ending in a newline.
#ifndef PKGDIST_CONTROLLER_CLI_TABLE_H_
#define PKGDIST_CONTROLLER_CLI_TABLE_H_

#include <string>
#include <vector>

#include "pkgdist/v1/controller.pb.h"

namespace pkgdist::cli {

// Columns left-aligned and separated by two spaces; the last column is not
// padded. Cells are made one-line. Widths count UTF-8 code points.
class TextTable {
 public:
  explicit TextTable(std::vector<std::string> header);
  // Rows shorter than the header are padded with empty cells.
  void AddRow(std::vector<std::string> cells);
  std::string Render() const;

 private:
  std::vector<std::vector<std::string>> rows_;  // rows_[0] is the header
};

// "12.0 MiB/26.7 MiB 45%", or "-" when the total is unknown (0).
std::string ProgressCell(uint64_t acked, uint64_t total);

// A job: an id/kind/package/state/created block, then its targets table.
std::string RenderJob(const pkgdist::v1::JobStatus& job);
// One line per job: id, kind, package, state, done/total targets, created.
std::string RenderJobList(const pkgdist::v1::ListJobsResponse& jobs);

// "k1=v1,k2=v2", sorted by key; "" for none.
std::string LabelsText(const google::protobuf::Map<std::string, std::string>& labels);
std::string RenderAgentList(const pkgdist::v1::ListAgentsResponse& agents);
std::string RenderAgentDetail(const pkgdist::v1::AgentDetail& detail);

// A site: its policy, what is in force now, its agents and traffic.
std::string RenderSite(const pkgdist::v1::SiteInfo& site);
// One line per site: name, agents, relay, rate in force, measured rate,
// bytes sent.
std::string RenderSiteList(const pkgdist::v1::ListSitesResponse& sites);
std::string RenderEgress(const pkgdist::v1::EgressInfo& egress);

std::string RenderPackage(const pkgdist::v1::PackageInfo& pkg);
std::string RenderPackageList(const pkgdist::v1::ListPackagesResponse& packages);

// One line per record: time, who (the identity without its spiffe://TD/),
// method, request, code, message.
std::string RenderAuditList(const pkgdist::v1::ListAuditResponse& audit);

// `events` prints a stream, so its columns have fixed widths: the header,
// then one line per event (time, sequence, kind, subject, state/detail).
std::string EventHeaderLine();
std::string RenderEventLine(const pkgdist::v1::Event& e);

}  // namespace pkgdist::cli

#endif  // PKGDIST_CONTROLLER_CLI_TABLE_H_
