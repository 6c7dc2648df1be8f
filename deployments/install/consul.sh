#!/usr/bin/env bash
# Builds a pinned Consul from its Go module and caches the binary, because
# Debian does not package Consul and only the Go module proxy is reachable.
# Prints the binary's path. The first build takes about five minutes.
set -euo pipefail

version="${CONSUL_VERSION:-v1.20.6}"
cache="${SWITCHYARD_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/switchyard}"
bin="$cache/consul-$version/consul"

# Not a pipe: under pipefail, grep -q closing early would fail the check.
if [ -x "$bin" ] && grep -q "Consul ${version}" <<<"$("$bin" version 2>/dev/null)"; then
  echo "$bin"
  exit 0
fi

work=$(mktemp -d)
trap 'chmod -R u+w "$work" 2>/dev/null; rm -rf "$work"' EXIT

echo "building Consul $version from its Go module (about 5 minutes, once per machine)" >&2
dir=$(cd "$work" && GOFLAGS=-mod=mod go mod download -json "github.com/hashicorp/consul@$version" |
  sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')
cp -r "$dir" "$work/src"
chmod -R u+w "$work/src"
cd "$work/src"
# The module's go.mod points its own submodules at ./api, ./sdk, ... which a
# module zip does not contain; drop those lines so the published versions are used.
sed -i -E '/^[[:space:]]*github\.com\/hashicorp\/consul\/(api|sdk|envoyextensions|proto-public|troubleshoot) => \.\//d' go.mod
GOFLAGS=-mod=mod go mod tidy >/dev/null 2>&1 || true
mkdir -p "$(dirname "$bin")"
GOFLAGS=-mod=mod CGO_ENABLED=0 go build -trimpath \
  -ldflags "-X github.com/hashicorp/consul/version.GitCommit=module -X github.com/hashicorp/consul/version.Version=${version#v} -X github.com/hashicorp/consul/version.VersionPrerelease=" \
  -o "$bin.tmp" .
mv "$bin.tmp" "$bin"
echo "$bin"
