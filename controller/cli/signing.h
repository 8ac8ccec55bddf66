// Signing packages on the client (shared/signing.h): the terms a release
// owner signs with, from the command line, and `key generate` /
// `package sign`. The private key is read here and never sent anywhere.
#ifndef PKGDIST_CONTROLLER_CLI_SIGNING_H_
#define PKGDIST_CONTROLLER_CLI_SIGNING_H_

#include <cstdint>
#include <functional>
#include <ostream>
#include <string>

#include "CLI/CLI.hpp"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "controller/cli/command.h"
#include "controller/cli/package_import.h"
#include "shared/signing.h"

namespace pkgdist::cli {

inline constexpr absl::Duration kDefaultSignatureLifetime = absl::Hours(24 * 90);

// --sequence, --expires as typed.
struct SignFlags {
  std::string key;  // private key file
  std::string sequence;
  std::string expires;
};

// Adds --sequence and --expires to `cmd`.
void AddSignTermFlags(CLI::App* cmd, SignFlags& flags);

// The terms at `now`: --sequence N, else the time in milliseconds since the
// epoch (so a later signing is always higher); --expires DURATION from now
// or an RFC 3339 time, else 90 days from now. A time already past is
// accepted with a warning on `err` (it signs a package no agent accepts).
absl::StatusOr<SignTerms> ResolveSignTerms(const SignFlags& flags, absl::Time now,
                                           std::ostream& err);

// Loads the key and terms once and returns what signs a manifest with them.
absl::StatusOr<SignManifestFn> MakeManifestSigner(const SignFlags& flags, std::ostream& err);

// `key generate`, which needs no controller.
void AddKeyCommands(CLI::App& app, LocalAction& local);
// `package sign NAME@VERSION --key FILE`.
void AddPackageSignCommand(CLI::App* package, Action& selected);

}  // namespace pkgdist::cli

#endif  // PKGDIST_CONTROLLER_CLI_SIGNING_H_
