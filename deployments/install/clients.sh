#!/usr/bin/env bash
# Installs the real clients the gateway's tests drive it with, from the
# distribution's packages when one is missing: curl (HTTP/2 over TLS and
# h2c with prior knowledge; Debian's curl is built with nghttp2) and
# ca-certificates for it, and script(1) from bsdutils, which gives the CLI
# a terminal in its progress test, and shellcheck, which lints the CI
# deploy script (deployments/ci). The gRPC and WebSocket clients are Go
# modules.
set -euo pipefail
. "$(dirname "$0")/lib.sh"
if command -v curl >/dev/null && curl --version | grep -q HTTP2 && command -v script >/dev/null && command -v shellcheck >/dev/null; then
  exit 0
fi
become_root "curl with HTTP/2, script(1) or shellcheck" "apt-get update && apt-get install -y curl ca-certificates bsdutils shellcheck" "$@"
echo "installing curl, bsdutils and shellcheck from the distribution's packages" >&2
apt_install curl ca-certificates bsdutils shellcheck
