#!/usr/bin/env bash
# Installs Node.js and Python 3 from the distribution's packages when one is
# missing: `switchyard agent`'s end-to-end tests run real applications in
# both (examples/node-hello with the plain http module, and
# examples/python-hello with http.server), which need nothing from npm or
# pip. Safe to run again: nothing happens when both are there.
set -euo pipefail
. "$(dirname "$0")/lib.sh"
if command -v node >/dev/null && command -v python3 >/dev/null; then
  exit 0
fi
become_root "node or python3" "apt-get update && apt-get install -y nodejs python3" "$@"
echo "installing nodejs and python3 from the distribution's packages" >&2
apt_install --no-install-recommends nodejs python3
