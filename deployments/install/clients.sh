#!/usr/bin/env bash
# Installs the real clients the gateway's tests drive it with, from the
# distribution's packages when one is missing: curl (HTTP/2 over TLS and
# h2c with prior knowledge; Debian's curl is built with nghttp2) and
# ca-certificates for it, and script(1) from bsdutils, which gives the CLI
# a terminal in its progress test. The gRPC and WebSocket clients are Go
# modules.
set -euo pipefail
. "$(dirname "$0")/lib.sh"
if command -v curl >/dev/null && curl --version | grep -q HTTP2 && command -v script >/dev/null; then
  exit 0
fi
become_root "curl with HTTP/2, or script(1)" "apt-get update && apt-get install -y curl ca-certificates bsdutils" "$@"
echo "installing curl and bsdutils from the distribution's packages" >&2
apt_install curl ca-certificates bsdutils
