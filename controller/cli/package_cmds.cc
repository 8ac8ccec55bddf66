// pkgdistctl package import | list | show | delete | remove-from (sign is in
// signing.cc).
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/time/clock.h"
#include "controller/cli/command.h"
#include "controller/cli/package_import.h"
#include "controller/cli/signing.h"
#include "controller/cli/table.h"

namespace pkgdist::cli {
namespace {

struct PackageOptions {
  std::string path;
  std::string name;
  std::string version;
  std::string package;  // name@version
  bool force = false;
  std::vector<std::string> agents;
  bool all = false;
  std::vector<std::string> select;  // remove-from --select
  bool wait = false;
  std::string timeout;
  SignFlags sign;  // import --sign-key
  bool local = false;  // import --local: `path` is on the controller's host
};

// "uploading 1.2 GiB/3.4 GiB 35%", redrawn on a terminal at most ten
// times a second.
ImportProgressFn UploadProgress(CommandEnv& env, uint64_t total) {
  if (!env.err_is_terminal || env.output == OutputFormat::kJson) return nullptr;
  auto last = std::make_shared<absl::Time>(absl::InfinitePast());
  return [&env, total, last](uint64_t sent) {
    absl::Time now = absl::Now();
    if (sent < total && now - *last < absl::Milliseconds(100)) return;
    *last = now;
    env.err << "\ruploading " << ProgressCell(sent, total) << "\x1b[K" << std::flush;
  };
}

// `package import --local PATH`: the controller reads PATH itself.
int RunImportLocal(CommandEnv& env, const PackageOptions& o) {
  pkgdist::v1::ImportLocalRequest req;
  req.set_name(o.name);
  req.set_version(o.version);
  req.set_path(o.path);
  auto pkg = env.client.ImportLocal(req);
  if (!pkg.ok()) return ReportError(env, pkg.status());
  Emit(env, PackageToJson(*pkg), RenderPackage(*pkg));
  return kExitOk;
}

int RunImport(CommandEnv& env, const PackageOptions& o) {
  if (o.local) return RunImportLocal(env, o);
  auto items = CollectImportItems(o.path);
  if (!items.ok()) return ReportError(env, items.status());
  const uint64_t total = TotalImportBytes(*items);
  SignManifestFn sign;
  if (!o.sign.key.empty()) {
    auto signer = MakeManifestSigner(o.sign, env.err);
    if (!signer.ok()) return ReportError(env, signer.status());
    sign = *std::move(signer);
  }
  ImportProgressFn progress = UploadProgress(env, total);
  auto pkg = UploadPackage(env.client, o.name, o.version, *items, progress, sign);
  if (progress) env.err << "\r\x1b[K" << std::flush;
  if (!pkg.ok()) return ReportError(env, pkg.status());
  Emit(env, PackageToJson(*pkg), RenderPackage(*pkg));
  return kExitOk;
}

int RunList(CommandEnv& env) {
  auto packages = env.client.ListPackages();
  if (!packages.ok()) return ReportError(env, packages.status());
  Emit(env, PackageListToJson(*packages), RenderPackageList(*packages));
  return kExitOk;
}

int RunShow(CommandEnv& env, const PackageOptions& o) {
  auto pkg = env.client.GetPackage(o.package);
  if (!pkg.ok()) return ReportError(env, pkg.status());
  Emit(env, PackageToJson(*pkg), RenderPackage(*pkg));
  return kExitOk;
}

int RunDelete(CommandEnv& env, const PackageOptions& o) {
  absl::Status s = env.client.DeletePackage(o.package, o.force);
  if (!s.ok()) return ReportError(env, s);
  Json j;
  j["package"] = o.package;
  j["deleted"] = true;
  Emit(env, j, absl::StrCat("package ", o.package, " deleted\n"));
  return kExitOk;
}

int RunRemoveFrom(CommandEnv& env, const PackageOptions& o) {
  pkgdist::v1::RemoveFromAgentsRequest req;
  req.set_package(o.package);
  for (const auto& a : o.agents) req.add_agents(a);
  req.set_all_agents(o.all);
  req.set_selector(absl::StrJoin(o.select, ","));
  auto job = env.client.RemoveFromAgents(req);
  if (!job.ok()) return ReportError(env, job.status());
  if (!o.wait || env.output == OutputFormat::kTable) {
    Json j;
    j["id"] = job->id();
    Emit(env, j,
         absl::StrCat("job ", job->id(), " started: remove ", o.package, " from ",
                      job->targets_size(), " agent(s)\n"));
  }
  if (!o.wait) return kExitOk;
  std::optional<absl::Duration> timeout;
  if (!o.timeout.empty()) timeout = ParseValidatedDuration(o.timeout);
  return WaitForJob(env, job->id(), timeout);
}

}  // namespace

void AddPackageCommands(CLI::App& app, Action& selected) {
  CLI::App* package =
      app.add_subcommand("package", "Import, list, inspect and delete packages");
  package->require_subcommand(1);
  auto o = std::make_shared<PackageOptions>();

  CLI::App* import = package->add_subcommand(
      "import", "Upload a file or directory tree to the controller as NAME@VERSION");
  import->add_option("PATH", o->path,
                     "A regular file or a directory (with --local: an absolute path on the "
                     "controller's host)")
      ->required();
  CLI::Option* local = import->add_flag(
      "--local", o->local,
      "The controller reads PATH from its own disk instead of this machine sending it (no "
      "bytes sent; the controller must allow PATH with --import-root)");
  import->add_option("--name", o->name, "Package name")->required()->check(NameValidator());
  import->add_option("--version", o->version, "Package version")
      ->required()
      ->check(NameValidator());
  CLI::Option* sign_key =
      import->add_option("--sign-key", o->sign.key,
                         "Sign the manifest built here from the same bytes with this private key "
                         "(PEM, mode 0600); the key never leaves this machine")
          ->check(CLI::ExistingFile);
  AddSignTermFlags(import, o->sign);
  for (const char* term : {"--sequence", "--expires"}) import->get_option(term)->needs(sign_key);
  local->excludes(sign_key);
  OnRun(import, selected, [o](CommandEnv& env) { return RunImport(env, *o); });
  AddPackageSignCommand(package, selected);

  CLI::App* list = package->add_subcommand("list", "List the controller's packages");
  OnRun(list, selected, [](CommandEnv& env) { return RunList(env); });

  CLI::App* show = package->add_subcommand("show", "Show one package");
  show->add_option("PACKAGE", o->package, "NAME@VERSION")
      ->required()
      ->check(PackageRefValidator());
  OnRun(show, selected, [o](CommandEnv& env) { return RunShow(env, *o); });

  CLI::App* del = package->add_subcommand(
      "delete", "Delete a package from the controller's store");
  del->add_option("PACKAGE", o->package, "NAME@VERSION")->required()->check(PackageRefValidator());
  del->add_flag("--force", o->force,
                "Delete even while unfinished jobs need it (their unfinished targets are "
                "cancelled)");
  OnRun(del, selected, [o](CommandEnv& env) { return RunDelete(env, *o); });

  CLI::App* remove = package->add_subcommand(
      "remove-from", "Start a job that deletes a package from agents");
  remove->add_option("PACKAGE", o->package, "NAME@VERSION")
      ->required()
      ->check(PackageRefValidator());
  CLI::Option* from =
      remove->add_option("--from", o->agents, "Agents to remove it from (A,B,...)")
          ->delimiter(',');
  CLI::Option* all = remove->add_flag("--all", o->all, "Remove it from every registered agent");
  from->excludes(all);
  remove->add_option("--select", o->select,
                     "Also remove it from the agents whose labels match SELECTOR "
                     "(docs/labels.md); repeated: all must match")
      ->excludes(all);
  CLI::Option* wait =
      remove->add_flag("--wait", o->wait, "Wait until the job is final; exit 0 only if complete");
  remove->add_option("--timeout", o->timeout, "With --wait: give up after DURATION (exit 4)")
      ->check(DurationValidator())
      ->needs(wait);
  remove->callback([&selected, o] {
    if (o->agents.empty() && !o->all && o->select.empty()) {
      throw CLI::RequiredError("--from A,B, --select SELECTOR or --all");
    }
    selected = [o](CommandEnv& env) { return RunRemoveFrom(env, *o); };
  });
}

}  // namespace pkgdist::cli
