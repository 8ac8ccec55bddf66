#!/usr/bin/env bash
# The demo: installs what is missing, builds, creates development
# certificates, starts a controller and three agents on 127.0.0.1, imports a
# sample package of about 100 MiB, distributes it to all three, shows the
# progress until complete, verifies the bytes on every agent; then a new
# version with one byte inserted, which the agents mostly copy from the old
# one (delta transfer); and stops everything it started. Leaves nothing
# behind.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/setup.sh
build_dir=$(bash scripts/build.sh | tail -n 1)
bin="$PWD/$build_dir/bin"

work=$(mktemp -d "${TMPDIR:-/tmp}/pkgdist-demo.XXXXXX")
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT

say() { printf '\n== %s\n' "$*"; }

wait_for_file() {  # FILE WHAT LOG
  for _ in $(seq 1 200); do
    [ -s "$1" ] && return 0
    sleep 0.1
  done
  echo "demo: $2 did not start; its log:" >&2
  tail -n 20 "$3" >&2
  exit 1
}

say "certificates (development CA, controller, admin, agents dp1 dp2 dp3)"
bash certs/gen-dev-certs.sh "$work/certs" dp1 dp2 dp3 >/dev/null
ls "$work/certs"

say "controller"
"$bin/pkgdist-controller" --listen 127.0.0.1:0 --port-file "$work/controller.port" \
  --state-dir "$work/controller" --ca "$work/certs/ca.pem" \
  --cert "$work/certs/controller.pem" --key "$work/certs/controller.key" \
  2>"$work/controller.log" &
pids+=($!)
wait_for_file "$work/controller.port" controller "$work/controller.log"
cport=$(cat "$work/controller.port")
echo "listening on 127.0.0.1:$cport"

ctl() {
  "$bin/pkgdistctl" --controller "127.0.0.1:$cport" --ca "$work/certs/ca.pem" \
    --cert "$work/certs/admin.pem" --key "$work/certs/admin.key" "$@"
}

say "agents"
for a in dp1 dp2 dp3; do
  "$bin/pkgdist-agent" --name "$a" --listen 127.0.0.1:0 --port-file "$work/$a.port" \
    --root "$work/agents/$a" --ca "$work/certs/ca.pem" \
    --cert "$work/certs/$a.pem" --key "$work/certs/$a.key" 2>"$work/$a.log" &
  pids+=($!)
done
for a in dp1 dp2 dp3; do
  wait_for_file "$work/$a.port" "agent $a" "$work/$a.log"
  ctl agent add "$a" "127.0.0.1:$(cat "$work/$a.port")"
done
ctl agent list

say "a sample package of about 100 MiB"
src="$work/sample"
mkdir -p "$src/bin" "$src/share/data" "$src/etc"
head -c $((40 << 20)) /dev/urandom >"$src/bin/tool"
chmod 0755 "$src/bin/tool"
head -c $((30 << 20)) /dev/urandom >"$src/share/data/blob-1"
head -c $((30 << 20)) /dev/urandom >"$src/share/data/blob-2"
echo "sample package for the pkgdist demo" >"$src/README"
: >"$src/etc/empty.conf"
ln -s ../bin/tool "$src/share/tool"
ctl package import "$src" --name sample --version 1.0

say "distribute sample@1.0 to dp1, dp2, dp3"
job=$(ctl --output json distribute sample@1.0 --to dp1,dp2,dp3 |
  python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])')
echo "job $job"
ctl job watch "$job"
ctl job status "$job"
state=$(ctl --output json job status "$job" |
  python3 -c 'import json,sys; print(json.load(sys.stdin)["state"])')
if [ "$state" != complete ]; then
  echo "demo: job ended $state" >&2
  exit 1
fi

say "verify the bytes on every agent"
for a in dp1 dp2 dp3; do
  dest="$work/agents/$a/packages/sample/1.0"
  if diff -r --no-dereference "$src" "$dest" >/dev/null; then
    sum=$(cd "$dest" && find . -type f -print0 | sort -z | xargs -0 sha256sum | sha256sum | cut -c1-16)
    echo "$a: identical to the source (tree digest $sum)"
  else
    echo "$a: DIFFERS from the source" >&2
    exit 1
  fi
done

say "a new version: one byte inserted near the start of bin/tool, a new file"
src2="$work/sample-1.1"
cp -a "$src" "$src2"
{ head -c 4096 "$src/bin/tool"; printf 'X'; tail -c +4097 "$src/bin/tool"; } >"$src2/bin/tool"
echo "added in 1.1" >"$src2/share/data/NEWS"
ctl package import "$src2" --name sample --version 1.1

say "distribute sample@1.1: each agent copies what it holds of 1.0 (REUSED), receives the rest (SENT)"
job=$(ctl --output json distribute sample@1.1 --to dp1,dp2,dp3 --wait |
  python3 -c 'import json,sys; d=json.load(sys.stdin); assert d["state"] == "complete", d; print(d["id"])')
ctl job status "$job"
for a in dp1 dp2 dp3; do
  if ! diff -r --no-dereference "$src2" "$work/agents/$a/packages/sample/1.1" >/dev/null; then
    echo "$a: sample@1.1 DIFFERS from the source" >&2
    exit 1
  fi
done
echo "sample@1.1 identical to its source on dp1, dp2, dp3"

say "done: sample@1.0 and 1.1 verified on all three agents; stopping everything"
