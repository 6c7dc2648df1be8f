#!/usr/bin/env bash
# Installs what switchyard's demo and tests need and a fresh Debian machine
# lacks: ZooKeeper from the distribution, Consul built from its Go module,
# Spin and gcc for the switch model check, nginx and curl for the gateway's
# tests, and the Go modules. Safe to run
# again: each step is skipped when done.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
what="${1:-all}"

bash "$here/zookeeper.sh"
if [ "$what" = all ]; then
  # Spin and gcc for the switch protocol's model check (controller/model).
  bash "$here/spin.sh"
  # nginx for the gateway's conformance suite and deployments/bench's
  # config test; its service is left stopped.
  bash "$here/nginx.sh"
  # curl with HTTP/2 for the gateway's TLS and h2c tests.
  bash "$here/clients.sh"
  # Node.js and Python 3 for switchyard agent's end-to-end tests.
  bash "$here/node.sh"
  # promtool for deployments/monitoring's alert rules test; the
  # Prometheus server's service is left stopped.
  bash "$here/prometheus.sh"
  # Chromium and axe-core for the dashboard's browser test.
  bash "$here/browser.sh" >/dev/null
  bash "$here/consul.sh" >/dev/null
fi
(cd "$here/../.." && go mod download)
