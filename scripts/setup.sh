#!/usr/bin/env bash
# Installs the Debian 12 packages pkgdist needs to build, test and run its demo.
# Idempotent: installs only what is missing; non-interactive.
set -euo pipefail

PACKAGES=(
  build-essential cmake ninja-build ccache pkg-config
  libgrpc++-dev libgrpc-dev protobuf-compiler-grpc libprotobuf-dev protobuf-compiler
  libssl-dev openssl libsqlite3-dev libgtest-dev libgmock-dev libbenchmark-dev
  libcli11-dev libspdlog-dev libfmt-dev nlohmann-json3-dev
  fiu-utils
  clang-14 libclang-rt-14-dev
  python3 python3-grpcio python3-protobuf
  iproute2 procps iptables
  prometheus-cpp-dev libsystemd-dev
  # the operations tests: a real Prometheus scrapes both programs (promtool
  # checks the exposition), the .debs are built, linted and installed
  prometheus dpkg-dev fakeroot lintian systemd
  adduser man-db  # the .debs' postinst makes the pkgdist user; verify checks man pages
  rsync  # the peer of bench/delta.sh, whose smoke run is a ctest test
)

# bench/run.sh also needs the peer it compares against, and perf.
if [ "${1:-}" = "--bench" ]; then
  PACKAGES+=(nginx curl linux-perf)
fi

missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done

if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi

echo "setup: installing ${missing[*]}" >&2
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
