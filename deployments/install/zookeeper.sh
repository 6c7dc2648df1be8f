#!/usr/bin/env bash
# Installs ZooKeeper from the distribution's package when it is missing.
# switchyard's harness and demo run it from /usr/share/zookeeper.
set -euo pipefail
. "$(dirname "$0")/lib.sh"
if [ -x /usr/share/zookeeper/bin/zkCli.sh ] && [ -r /usr/share/java/zookeeper.jar ] && command -v java >/dev/null; then
  exit 0
fi
become_root ZooKeeper "apt-get update && apt-get install -y zookeeper" "$@"
echo "installing ZooKeeper from the distribution's package" >&2
apt_install zookeeper
