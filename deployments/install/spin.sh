#!/usr/bin/env bash
# Installs Spin (the model checker) and gcc, which compiles the verifiers
# Spin writes, from the distribution's packages when either is missing.
# controller/model_test.go checks controller/model/switch.pml with them.
set -euo pipefail
if command -v spin >/dev/null && command -v gcc >/dev/null; then
  exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null && sudo -n true 2>/dev/null; then
    exec sudo -n "$0" "$@"
  fi
  echo "Spin or gcc is missing. Install them as root: apt-get update && apt-get install -y spin gcc" >&2
  exit 1
fi
echo "installing Spin and gcc from the distribution's packages" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq spin gcc >/dev/null
