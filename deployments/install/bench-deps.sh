#!/usr/bin/env bash
# Installs what `make bench` compares switchyard against and a fresh Debian
# machine lacks: wrk, h2load (nghttp2-client) and nginx from the
# distribution (nginx.sh leaves its service stopped), and Caddy built from
# its Go module (Debian's Caddy is older, and only the Go module proxy is
# reachable). Safe to run again: each step is skipped when done, so a
# machine that has everything answers in well under a second. Prints the
# Caddy binary's path last.
#
# Caddy is pinned to the newest release whose go.mod the local toolchain
# accepts with GOTOOLCHAIN=local (v2.11.9 asks for go 1.26.0; switchyard
# builds with go 1.26.8). Override with CADDY_VERSION.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)

bash "$here/zookeeper.sh"
bash "$here/nginx.sh"

# The load generators: wrk (HTTP/1.1, with or without TLS) and h2load
# (HTTP/2 over TLS and h2c, from nghttp2-client).
missing=()
command -v wrk >/dev/null || missing+=(wrk)
command -v h2load >/dev/null || missing+=(nghttp2-client)
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null && sudo -n true 2>/dev/null; then
      sudo -n env DEBIAN_FRONTEND=noninteractive sh -c "apt-get update -qq && apt-get install -y -qq --no-install-recommends ${missing[*]} >/dev/null"
    else
      echo "${missing[*]} missing. Install as root: apt-get update && apt-get install -y ${missing[*]}" >&2
      exit 1
    fi
  else
    echo "installing ${missing[*]} from the distribution's packages" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  fi
fi

version="${CADDY_VERSION:-v2.11.9}"
cache="${SWITCHYARD_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/switchyard}"
bin="$cache/caddy-$version/caddy"

# `caddy version` says "unknown" for a go-installed main module; the build
# info names the module version reliably.
if [ -x "$bin" ] && go version -m "$bin" 2>/dev/null | grep -Eq "^[[:space:]]+mod[[:space:]]+github.com/caddyserver/caddy/v2[[:space:]]+${version}[[:space:]]"; then
  echo "$bin"
  exit 0
fi

echo "building Caddy $version from its Go module (a few minutes, once per machine)" >&2
work=$(mktemp -d)
trap 'chmod -R u+w "$work" 2>/dev/null; rm -rf "$work"' EXIT
mkdir -p "$(dirname "$bin")"
# go install in module mode builds exactly the versions Caddy's go.mod pins.
GOTOOLCHAIN=local GOFLAGS=-mod=mod CGO_ENABLED=0 GOBIN="$work" \
  go install -trimpath "github.com/caddyserver/caddy/v2/cmd/caddy@$version"
mv "$work/caddy" "$bin.tmp"
mv "$bin.tmp" "$bin"
echo "$bin"
