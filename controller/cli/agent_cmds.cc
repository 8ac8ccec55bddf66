// pkgdistctl agent add | label | set | list | show | remove.
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "controller/cli/command.h"
#include "controller/cli/table.h"

namespace pkgdist::cli {
namespace {

struct AgentOptions {
  std::string name;
  std::string address;
  // add --label KEY=VALUE...; label's KEY=VALUE (set) and KEY- (remove).
  std::vector<std::string> labels;
  std::string rate;  // set --rate
};

// "KEY=VALUE" into `set`, or "KEY-" into `remove` if `allow_remove`;
// false with a message naming the argument otherwise (the server validates
// keys and values).
bool SplitLabelArg(const std::string& arg, bool allow_remove,
                   google::protobuf::Map<std::string, std::string>* set,
                   std::vector<std::string>* remove, std::string* error) {
  const size_t eq = arg.find('=');
  if (eq != std::string::npos && eq > 0) {
    (*set)[arg.substr(0, eq)] = arg.substr(eq + 1);
    return true;
  }
  if (allow_remove && arg.size() > 1 && arg.back() == '-') {
    remove->push_back(arg.substr(0, arg.size() - 1));
    return true;
  }
  *error = absl::StrCat("label \"", arg, "\" must be KEY=VALUE", allow_remove ? " or KEY-" : "");
  return false;
}

int RunAdd(CommandEnv& env, const AgentOptions& o) {
  pkgdist::v1::AddAgentRequest req;
  req.set_name(o.name);
  req.set_address(o.address);
  std::string error;
  for (const std::string& l : o.labels) {
    if (!SplitLabelArg(l, false, req.mutable_labels(), nullptr, &error)) {
      return ReportError(env, absl::InvalidArgumentError(error));
    }
  }
  auto agent = env.client.AddAgent(req);
  if (!agent.ok()) return ReportError(env, agent.status());
  const std::string labels = LabelsText(agent->labels());
  Emit(env, AgentToJson(*agent),
       absl::StrCat("agent ", agent->name(), " registered at ", agent->address(),
                    labels.empty() ? "" : " with labels ", labels, "\n"));
  return kExitOk;
}

int RunLabel(CommandEnv& env, const AgentOptions& o) {
  pkgdist::v1::SetAgentLabelsRequest req;
  req.set_name(o.name);
  std::vector<std::string> remove;
  std::string error;
  for (const std::string& l : o.labels) {
    if (!SplitLabelArg(l, true, req.mutable_set(), &remove, &error)) {
      return ReportError(env, absl::InvalidArgumentError(error));
    }
  }
  for (auto& key : remove) req.add_remove(std::move(key));
  auto agent = env.client.SetAgentLabels(req);
  if (!agent.ok()) return ReportError(env, agent.status());
  const std::string labels = LabelsText(agent->labels());
  Emit(env, AgentToJson(*agent),
       absl::StrCat("agent ", agent->name(), ": labels ", labels.empty() ? "(none)" : labels,
                    "\n"));
  return kExitOk;
}

int RunSet(CommandEnv& env, const AgentOptions& o) {
  auto agent = env.client.SetAgentRate(o.name, o.rate);
  if (!agent.ok()) return ReportError(env, agent.status());
  Emit(env, AgentToJson(*agent), absl::StrCat("agent ", agent->name(), ": rate ", agent->rate(), "\n"));
  return kExitOk;
}

int RunList(CommandEnv& env, const std::string& prefix) {
  auto agents = env.client.ListAgents(prefix);
  if (!agents.ok()) return ReportError(env, agents.status());
  Emit(env, AgentListToJson(*agents), RenderAgentList(*agents));
  return kExitOk;
}

int RunShow(CommandEnv& env, const AgentOptions& o) {
  auto detail = env.client.GetAgent(o.name);
  if (!detail.ok()) return ReportError(env, detail.status());
  Emit(env, AgentDetailToJson(*detail), RenderAgentDetail(*detail));
  return kExitOk;
}

int RunRemove(CommandEnv& env, const AgentOptions& o) {
  auto resp = env.client.RemoveAgent(o.name);
  if (!resp.ok()) return ReportError(env, resp.status());
  Json j;
  j["name"] = o.name;
  j["cancelled_targets"] = resp->cancelled_targets();
  Emit(env, j,
       absl::StrCat("agent ", o.name, " removed (", resp->cancelled_targets(),
                    " unfinished targets cancelled)\n"));
  return kExitOk;
}

}  // namespace

void AddAgentCommands(CLI::App& app, Action& selected) {
  CLI::App* agent = app.add_subcommand("agent", "Register, list, inspect and remove agents");
  agent->require_subcommand(1);

  auto o = std::make_shared<AgentOptions>();
  CLI::App* add = agent->add_subcommand(
      "add", "Register an agent (NAME must be the name in its certificate), or change its address");
  add->add_option("NAME", o->name, "Agent name")->required();
  add->add_option("ADDRESS", o->address, "HOST:PORT the agent listens on")->required();
  add->add_option("--label", o->labels,
                  "KEY=VALUE label (repeat for more; `site` groups agents by site); given, "
                  "they replace the agent's labels");
  OnRun(add, selected, [o](CommandEnv& env) { return RunAdd(env, *o); });

  CLI::App* label = agent->add_subcommand(
      "label", "Change an agent's labels: KEY=VALUE sets one, KEY- removes one");
  label->add_option("NAME", o->name, "Agent name")->required();
  label->add_option("LABEL", o->labels, "KEY=VALUE or KEY-")->required();
  OnRun(label, selected, [o](CommandEnv& env) { return RunLabel(env, *o); });

  CLI::App* set = agent->add_subcommand(
      "set", "Set an agent's own bandwidth limit (its site's and the egress limit apply too)");
  set->add_option("NAME", o->name, "Agent name")->required();
  set->add_option("--rate", o->rate, "RATE: e.g. 5MB/s, 1.5GiB/s, unlimited, paused")->required();
  OnRun(set, selected, [o](CommandEnv& env) { return RunSet(env, *o); });

  CLI::App* list = agent->add_subcommand("list", "List agents with their connection state");
  auto prefix = std::make_shared<std::string>();
  list->add_option("--prefix", *prefix, "Only agents whose name starts with PREFIX");
  OnRun(list, selected, [prefix](CommandEnv& env) { return RunList(env, *prefix); });

  CLI::App* show = agent->add_subcommand(
      "show", "Show an agent and its inventory (published and partial packages)");
  show->add_option("NAME", o->name, "Agent name")->required();
  OnRun(show, selected, [o](CommandEnv& env) { return RunShow(env, *o); });

  CLI::App* remove = agent->add_subcommand(
      "remove", "Unregister an agent; its unfinished targets are cancelled");
  remove->add_option("NAME", o->name, "Agent name")->required();
  OnRun(remove, selected, [o](CommandEnv& env) { return RunRemove(env, *o); });
}

}  // namespace pkgdist::cli
