#!/usr/bin/env bash
# Installs promtool from the distribution's prometheus package when it is
# missing: deployments/monitoring's test checks the alert rules with it.
# The package's Prometheus server is left stopped and disabled; nothing here
# scrapes anything. Safe to run again: nothing happens when promtool is there.
set -euo pipefail
. "$(dirname "$0")/lib.sh"
if command -v promtool >/dev/null; then
  exit 0
fi
become_root promtool "apt-get update && apt-get install -y prometheus, then stop its service" "$@"
echo "installing promtool from the distribution's prometheus package (its service stays stopped)" >&2
export DEBIAN_FRONTEND=noninteractive
# invoke-rc.d and deb-systemd-invoke ask policy-rc.d before starting a
# service; 101 means "not now", so the package's postinst starts nothing.
policy=/usr/sbin/policy-rc.d
if [ ! -e "$policy" ]; then
  printf '#!/bin/sh\nexit 101\n' >"$policy"
  chmod 755 "$policy"
  trap 'rm -f "$policy"' EXIT
fi
apt-get update -qq
# Without recommends: the node exporter and the web console are not needed.
apt-get install -y -qq --no-install-recommends prometheus >/dev/null
if [ -d /run/systemd/system ] && command -v systemctl >/dev/null; then
  systemctl disable --now prometheus >/dev/null 2>&1 || true
else
  update-rc.d prometheus disable >/dev/null 2>&1 || true
  if [ -s /run/prometheus/prometheus.pid ] && kill -0 "$(cat /run/prometheus/prometheus.pid)" 2>/dev/null; then
    kill "$(cat /run/prometheus/prometheus.pid)" 2>/dev/null || true
  fi
fi
