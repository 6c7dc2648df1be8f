#!/usr/bin/env bash
# Installs ZooKeeper from the distribution's package when it is missing.
# switchyard's harness and demo run it from /usr/share/zookeeper.
set -euo pipefail
if [ -x /usr/share/zookeeper/bin/zkCli.sh ] && [ -r /usr/share/java/zookeeper.jar ] && command -v java >/dev/null; then
  exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null && sudo -n true 2>/dev/null; then
    exec sudo -n "$0" "$@"
  fi
  echo "ZooKeeper is missing. Install it as root: apt-get update && apt-get install -y zookeeper" >&2
  exit 1
fi
echo "installing ZooKeeper from the distribution's package" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq zookeeper >/dev/null
