#!/usr/bin/env bash
# Installs what the dashboard's browser test needs: Chromium from the
# distribution's packages (chromedp drives it headless), and axe-core, the
# accessibility checker the test runs inside the page, fetched once from the
# npm registry, checked against its published integrity and cached. Prints
# the path of axe.min.js.
set -euo pipefail
. "$(dirname "$0")/lib.sh"

if ! command -v chromium >/dev/null; then
  become_root "Chromium" "apt-get update && apt-get install -y chromium" "$@"
  echo "installing chromium from the distribution's packages" >&2
  apt_install chromium
fi

version=4.14.1
integrity="sha512-FHfa+lmNjQZfJz1q8wKqIDwC6DExcHt/pkjNQb09a3NPjCKg2rhu5qb2S4r76ASyFNNtuFooJpZe37OgudVGtQ=="
cache="${SWITCHYARD_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/switchyard}"
axe="$cache/axe-core-$version/axe.min.js"
if [ ! -s "$axe" ]; then
  work=$(mktemp -d)
  trap 'rm -rf "$work"' EXIT
  echo "fetching axe-core $version from the npm registry" >&2
  curl -fsSL -o "$work/axe.tgz" "https://registry.npmjs.org/axe-core/-/axe-core-$version.tgz"
  got="sha512-$(openssl dgst -sha512 -binary "$work/axe.tgz" | base64 -w0)"
  if [ "$got" != "$integrity" ]; then
    echo "axe-core $version: integrity $got, want $integrity" >&2
    exit 1
  fi
  tar -xzf "$work/axe.tgz" -C "$work" package/axe.min.js
  mkdir -p "$(dirname "$axe")"
  mv "$work/package/axe.min.js" "$axe"
fi
echo "$axe"
