#!/usr/bin/env bash
# Creates a development CA and the mutual-TLS certificates pkgdist uses:
# one for the controller, one for an operator (admin) and one per agent.
# Every certificate carries exactly one SPIFFE-style URI SAN, which is the
# identity the processes authorize on (see docs/architecture.md, "Identities").
#
# Production users bring their own PKI; this script is for development,
# demos and tests. Requires bash and the openssl command-line tool (3.x).

set -euo pipefail

usage() {
  cat <<'EOF'
usage: gen-dev-certs.sh [OPTIONS] OUT_DIR [AGENT...]

Writes into OUT_DIR (created, mode 0700, if missing):
  ca.pem, ca.key                  the development CA (reused if both exist)
  controller.pem, controller.key  URI:spiffe://TD/controller, DNS:localhost,
                                  IP:127.0.0.1; serverAuth + clientAuth
  ADMIN.pem, ADMIN.key            URI:spiffe://TD/admin/ADMIN; clientAuth
  AGENT.pem, AGENT.key            URI:spiffe://TD/agent/AGENT, DNS:AGENT,
                                  DNS:localhost, IP:127.0.0.1;
                                  serverAuth + clientAuth
Keys are EC P-256 (mode 0600), certificates are signed with SHA-256 (0644).

Safe to run again: an existing CA is reused, so agents can be added later;
an existing key is never replaced without --force, and an existing
certificate is kept if it is signed by the CA, matches its key and names the
expected identities (otherwise it is re-issued for the existing key).
To start over with a new CA, use a new OUT_DIR.

Options:
  --trust-domain TD   SPIFFE trust domain (default pkgdist.dev)
  --admin NAME        admin identity name, also the file name (default admin)
  --days N            validity of the issued certificates (default 365)
  --ca-days N         validity of a newly created CA (default 3650)
  --not-before T      notBefore of the issued certificates, YYYYMMDDHHMMSSZ
                      (default: now)
  --not-after T       notAfter of the issued certificates, YYYYMMDDHHMMSSZ
                      (default: now + --days); with --not-before, lets tests
                      make expired or not-yet-valid certificates
  --force             replace existing keys and certificates (not the CA)
  -h, --help          print this help

Names (agents, admin) are 1..128 of [A-Za-z0-9._+-], not "." or "..",
not starting with '-'. On success, prints the absolute OUT_DIR path.
EOF
}

die() {
  echo "gen-dev-certs.sh: $*" >&2
  exit 1
}

# Same rule as ValidateName in shared/paths.cc.
valid_name() {
  local n=$1
  [[ ${#n} -ge 1 && ${#n} -le 128 ]] || return 1
  [[ $n != "." && $n != ".." && $n != -* ]] || return 1
  [[ $n =~ ^[A-Za-z0-9._+-]+$ ]]
}

valid_time() {
  [[ $1 =~ ^[0-9]{14}Z$ ]]
}

trust_domain=pkgdist.dev
admin="admin"
days=365
ca_days=3650
not_before=
not_after=
force=0

while [[ $# -gt 0 ]]; do
  case $1 in
    -h | --help) usage; exit 0 ;;
    --trust-domain) [[ $# -ge 2 ]] || die "$1 needs a value"; trust_domain=$2; shift 2 ;;
    --admin) [[ $# -ge 2 ]] || die "$1 needs a value"; admin=$2; shift 2 ;;
    --days) [[ $# -ge 2 ]] || die "$1 needs a value"; days=$2; shift 2 ;;
    --ca-days) [[ $# -ge 2 ]] || die "$1 needs a value"; ca_days=$2; shift 2 ;;
    --not-before) [[ $# -ge 2 ]] || die "$1 needs a value"; not_before=$2; shift 2 ;;
    --not-after) [[ $# -ge 2 ]] || die "$1 needs a value"; not_after=$2; shift 2 ;;
    --force) force=1; shift ;;
    --) shift; break ;;
    -*) die "unknown option $1 (see --help)" ;;
    *) break ;;
  esac
done

[[ $# -ge 1 ]] || { usage >&2; exit 2; }
out_dir=$1
shift
agents=("$@")

# SPIFFE trust domains: lowercase letters, digits, '.', '-' and '_'.
[[ $trust_domain =~ ^[a-z0-9._-]+$ ]] || die "invalid trust domain \"$trust_domain\""
[[ $days =~ ^[1-9][0-9]*$ ]] || die "--days must be a positive integer"
[[ $ca_days =~ ^[1-9][0-9]*$ ]] || die "--ca-days must be a positive integer"
[[ -z $not_before ]] || valid_time "$not_before" || die "--not-before must be YYYYMMDDHHMMSSZ"
[[ -z $not_after ]] || valid_time "$not_after" || die "--not-after must be YYYYMMDDHHMMSSZ"
valid_name "$admin" || die "invalid admin name \"$admin\""
for a in "${agents[@]}"; do
  valid_name "$a" || die "invalid agent name \"$a\""
  case $a in
    ca | controller | "$admin") die "agent name \"$a\" clashes with another certificate's file name" ;;
  esac
done

command -v openssl >/dev/null || die "openssl not found"

umask 077
mkdir -p -- "$out_dir"
out_dir=$(cd -- "$out_dir" && pwd -P)

work=$(mktemp -d "${TMPDIR:-/tmp}/gen-dev-certs.XXXXXX")
trap 'rm -rf -- "$work"' EXIT

# Runs openssl, showing its output only if it fails.
ossl() {
  if ! openssl "$@" >"$work/openssl.log" 2>&1; then
    cat "$work/openssl.log" >&2
    die "openssl $1 failed"
  fi
}

# new_key PATH: a fresh EC P-256 key, mode 0600, written atomically.
new_key() {
  ossl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 \
    -pkeyopt ec_param_enc:named_curve -out "$1.tmp"
  chmod 0600 "$1.tmp"
  mv -f -- "$1.tmp" "$1"
}

# --- CA -----------------------------------------------------------------
ca_pem=$out_dir/ca.pem
ca_key=$out_dir/ca.key
if [[ -f $ca_pem && -f $ca_key ]]; then
  : # reuse
elif [[ -e $ca_pem || -e $ca_key ]]; then
  die "$out_dir holds only one of ca.pem and ca.key; remove it or use another OUT_DIR"
else
  new_key "$ca_key"
  ossl req -x509 -new -sha256 -key "$ca_key" -days "$ca_days" \
    -subj "/O=pkgdist development/CN=pkgdist development CA ($trust_domain)" \
    -addext "basicConstraints=critical,CA:TRUE,pathlen:0" \
    -addext "keyUsage=critical,keyCertSign,cRLSign" \
    -addext "subjectKeyIdentifier=hash" \
    -out "$ca_pem.tmp"
  chmod 0644 "$ca_pem.tmp"
  mv -f -- "$ca_pem.tmp" "$ca_pem"
fi

# A throwaway `openssl ca` database: `openssl ca` (unlike `x509 -req`) can
# set notBefore/notAfter explicitly.
mkdir "$work/issued"
: >"$work/index.txt"
cat >"$work/ca.cnf" <<EOF
[ca]
default_ca = dev_ca
[dev_ca]
database = $work/index.txt
serial = $work/serial
new_certs_dir = $work/issued
policy = policy_any
default_md = sha256
unique_subject = no
email_in_dn = no
copy_extensions = none
[policy_any]
organizationName = optional
commonName = supplied
EOF

# expected_san KIND NAME: the subjectAltName value for a certificate.
expected_san() {
  local loopback="DNS:localhost,IP:127.0.0.1"
  case $1 in
    controller) echo "URI:spiffe://$trust_domain/controller,$loopback" ;;
    admin) echo "URI:spiffe://$trust_domain/admin/$2" ;;
    agent) echo "URI:spiffe://$trust_domain/agent/$2,DNS:$2,$loopback" ;;
  esac
}

extended_key_usage() {
  case $1 in
    admin) echo "clientAuth" ;;
    *) echo "serverAuth,clientAuth" ;;
  esac
}

# cert_is_current PEM KEY SAN: the certificate is signed by our CA, holds
# the public key of KEY and exactly the SAN expected.
cert_is_current() {
  local pem=$1 key=$2 san=$3 actual
  openssl verify -no_check_time -CAfile "$ca_pem" "$pem" >/dev/null 2>&1 || return 1
  [[ "$(openssl x509 -in "$pem" -noout -pubkey 2>/dev/null)" == \
     "$(openssl pkey -in "$key" -pubout 2>/dev/null)" ]] || return 1
  actual=$(openssl x509 -in "$pem" -noout -ext subjectAltName 2>/dev/null | sed -n '2p')
  # openssl prints "URI:a, DNS:b, IP Address:c"; normalise to "URI:a,DNS:b,IP:c".
  actual=$(echo "$actual" | sed -e 's/^ *//' -e 's/, /,/g' -e 's/IP Address:/IP:/g')
  [[ $actual == "$san" ]]
}

# issue KIND NAME FILE_STEM
issue() {
  local kind=$1 name=$2 stem=$3
  local pem=$out_dir/$stem.pem key=$out_dir/$stem.key
  local san cn
  san=$(expected_san "$kind" "$name")
  cn=${name:-controller}

  if [[ $force -eq 0 && -f $key ]]; then
    if [[ -f $pem ]] && cert_is_current "$pem" "$key" "$san"; then
      return 0
    fi
  else
    new_key "$key"
  fi

  cat >"$work/ext.cnf" <<EOF
[leaf]
basicConstraints = critical,CA:FALSE
keyUsage = critical,digitalSignature
extendedKeyUsage = $(extended_key_usage "$kind")
subjectAltName = $san
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
EOF
  ossl req -new -key "$key" -subj "/O=pkgdist development/CN=$cn" -out "$work/$stem.csr"
  local dates=(-days "$days")
  [[ -z $not_before ]] || dates+=(-startdate "$not_before")
  [[ -z $not_after ]] || dates+=(-enddate "$not_after")
  ossl ca -batch -config "$work/ca.cnf" -rand_serial -notext \
    -cert "$ca_pem" -keyfile "$ca_key" -in "$work/$stem.csr" \
    -extfile "$work/ext.cnf" -extensions leaf "${dates[@]}" -out "$pem.tmp"
  chmod 0644 "$pem.tmp"
  mv -f -- "$pem.tmp" "$pem"
}

issue controller "" controller
issue admin "$admin" "$admin"
for a in "${agents[@]}"; do
  issue agent "$a" "$a"
done

echo "$out_dir"
