#include "controller/cli/signing.h"

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "controller/cli/duration.h"
#include "controller/cli/table.h"
#include "shared/manifest.h"
#include "shared/sha256.h"
#include "shared/status_macros.h"

namespace pkgdist::cli {
namespace {

struct SignOptions {
  std::string package;  // name@version
  std::string source;   // optional: the tree to check the id against
  SignFlags flags;
};

absl::StatusOr<absl::Time> ParseExpiry(const std::string& text, absl::Time now) {
  if (text.empty()) return now + kDefaultSignatureLifetime;
  if (auto d = ParseDuration(text); d.ok()) return now + *d;
  absl::Time t;
  std::string err;
  if (absl::ParseTime(absl::RFC3339_full, text, &t, &err)) return t;
  return absl::InvalidArgumentError(absl::StrCat(
      "--expires \"", text, "\": expected a duration from now (90d, 12h) or an RFC 3339 time "
      "(2027-01-31T00:00:00Z)"));
}

int RunSign(CommandEnv& env, const SignOptions& o) {
  auto key = SigningKey::Load(o.flags.key);
  if (!key.ok()) return ReportError(env, key.status());
  auto terms = ResolveSignTerms(o.flags, absl::Now(), env.err);
  if (!terms.ok()) return ReportError(env, terms.status());
  auto info = env.client.GetPackage(o.package);
  if (!info.ok()) return ReportError(env, info.status());
  if (!o.source.empty()) {
    auto built = BuildManifestFromPath(o.source, info->name(), info->version());
    if (!built.ok()) return ReportError(env, built.status());
    if (PackageIdHex(*built) != info->id()) {
      return ReportError(env, absl::FailedPreconditionError(absl::StrCat(
                                  "the controller's ", o.package, " (id ", info->id(),
                                  ") is not the tree at ", o.source, " (id ",
                                  PackageIdHex(*built), "): not signing")));
    }
  } else {
    env.err << "pkgdistctl: signing the package id the controller reports (" << info->id()
            << "); pass --source PATH to check it against your own tree first\n";
  }
  std::optional<std::string> id_raw = FromHex(info->id());
  if (!id_raw.has_value()) {
    return ReportError(env, absl::DataLossError(absl::StrCat(
                                "the controller reported a malformed package id ", info->id())));
  }
  auto sig = SignPackage(*key, *id_raw, info->name(), info->version(), *terms);
  if (!sig.ok()) return ReportError(env, sig.status());
  auto signed_info = env.client.SignPackage(o.package, *sig);
  if (!signed_info.ok()) return ReportError(env, signed_info.status());
  Emit(env, PackageToJson(*signed_info), RenderPackage(*signed_info));
  return kExitOk;
}

int RunKeyGenerate(std::ostream& out, std::ostream& err, const std::string& prefix) {
  auto key = GenerateKeyPair(prefix + ".key", prefix + ".pub");
  if (!key.ok()) {
    err << "pkgdistctl: " << absl::StatusCodeToString(key.status().code()) << ": "
        << key.status().message() << "\n";
    return kExitCallFailed;
  }
  out << "key " << key->id << "\n"
      << "  private: " << prefix << ".key (mode 0600: keep it with the release pipeline, never "
      << "on the controller)\n"
      << "  public:  " << prefix << ".pub (copy into each agent's --trusted-keys directory)\n";
  return kExitOk;
}

}  // namespace

void AddSignTermFlags(CLI::App* cmd, SignFlags& flags) {
  cmd->add_option("--sequence", flags.sequence,
                  "Release sequence for this package name; agents refuse a lower one than they "
                  "published (default: the time in milliseconds since 1970)");
  cmd->add_option("--expires", flags.expires,
                  "When agents stop accepting the signature: a duration from now or an RFC 3339 "
                  "time (default 90d)");
}

absl::StatusOr<SignTerms> ResolveSignTerms(const SignFlags& flags, absl::Time now,
                                           std::ostream& err) {
  SignTerms terms;
  terms.now = now;
  if (flags.sequence.empty()) {
    terms.sequence = static_cast<uint64_t>(absl::ToUnixMillis(now));
  } else if (!absl::SimpleAtoi(flags.sequence, &terms.sequence)) {
    return absl::InvalidArgumentError(
        absl::StrCat("--sequence \"", flags.sequence, "\": expected a non-negative integer"));
  }
  ASSIGN_OR_RETURN(terms.expires, ParseExpiry(flags.expires, now));
  if (terms.expires <= now) {
    err << "pkgdistctl: warning: the signature expires at "
        << absl::FormatTime(absl::RFC3339_sec, terms.expires, absl::UTCTimeZone())
        << ", already past: every agent will refuse it\n";
  }
  return terms;
}

absl::StatusOr<SignManifestFn> MakeManifestSigner(const SignFlags& flags, std::ostream& err) {
  ASSIGN_OR_RETURN(SigningKey key, SigningKey::Load(flags.key));
  ASSIGN_OR_RETURN(SignTerms terms, ResolveSignTerms(flags, absl::Now(), err));
  return SignManifestFn([key, terms](const pkgdist::v1::Manifest& m) {
    return SignPackage(key, PackageId(m), m.name(), m.version(), terms);
  });
}

void AddKeyCommands(CLI::App& app, LocalAction& local) {
  CLI::App* key = app.add_subcommand("key", "Make package signing keys (no controller needed)");
  key->require_subcommand(1);
  auto prefix = std::make_shared<std::string>();
  CLI::App* generate = key->add_subcommand(
      "generate", "Make an Ed25519 key pair: PREFIX.key (private, mode 0600) and PREFIX.pub");
  generate->add_option("PREFIX", *prefix, "Path without extension, e.g. keys/release")->required();
  generate->callback([&local, prefix] {
    local = [prefix](std::ostream& out, std::ostream& err) {
      return RunKeyGenerate(out, err, *prefix);
    };
  });
}

void AddPackageSignCommand(CLI::App* package, Action& selected) {
  auto o = std::make_shared<SignOptions>();
  CLI::App* sign = package->add_subcommand(
      "sign", "Sign an imported package with a release key (the key stays on this machine)");
  sign->add_option("PACKAGE", o->package, "NAME@VERSION")->required()->check(PackageRefValidator());
  sign->add_option("--key", o->flags.key, "Private key file (PEM, mode 0600)")
      ->required()
      ->check(CLI::ExistingFile);
  sign->add_option("--source", o->source,
                   "The package's file or directory: sign only if the controller's package is "
                   "exactly this tree")
      ->check(CLI::ExistingPath);
  AddSignTermFlags(sign, o->flags);
  OnRun(sign, selected, [o](CommandEnv& env) { return RunSign(env, *o); });
}

}  // namespace pkgdist::cli
