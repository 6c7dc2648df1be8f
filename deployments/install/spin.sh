#!/usr/bin/env bash
# Installs Spin (the model checker) and gcc, which compiles the verifiers
# Spin writes, from the distribution's packages when either is missing.
# controller/model_test.go checks controller/model/switch.pml with them.
set -euo pipefail
. "$(dirname "$0")/lib.sh"
if command -v spin >/dev/null && command -v gcc >/dev/null; then
  exit 0
fi
become_root "Spin or gcc" "apt-get update && apt-get install -y spin gcc" "$@"
echo "installing Spin and gcc from the distribution's packages" >&2
apt_install spin gcc
