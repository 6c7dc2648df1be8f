#!/usr/bin/env bash
# Installs nginx from the distribution's package when it is missing, and
# leaves no system nginx running: the tests and `make bench` only ever run
# their own nginx, in temp dirs on loopback ports, never the package's
# service on port 80. Safe to run again: nothing happens when nginx is there.
set -euo pipefail
. "$(dirname "$0")/lib.sh"
if command -v nginx >/dev/null || [ -x /usr/sbin/nginx ]; then
  exit 0
fi
become_root nginx "apt-get update && apt-get install -y nginx-light (or nginx), then stop its service" "$@"
echo "installing nginx from the distribution's package (its service stays stopped)" >&2
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
# nginx-light is enough (proxy and upstream keepalive are in the core);
# releases that dropped it have plain nginx.
apt-get install -y -qq --no-install-recommends nginx-light >/dev/null 2>&1 ||
  apt-get install -y -qq --no-install-recommends nginx >/dev/null
# Keep it from starting at boot too, and stop it should anything have
# started it regardless.
if [ -d /run/systemd/system ] && command -v systemctl >/dev/null; then
  systemctl disable --now nginx >/dev/null 2>&1 || true
else
  update-rc.d nginx disable >/dev/null 2>&1 || true
  if [ -s /run/nginx.pid ] && kill -0 "$(cat /run/nginx.pid)" 2>/dev/null; then
    nginx -s quit 2>/dev/null || true
  fi
fi
