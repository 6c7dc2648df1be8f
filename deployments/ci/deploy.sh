#!/usr/bin/env bash
# Blue/green deploy with switchyard, for any CI: deploy the idle color, wait
# for its instances to register, switch to it, smoke-check through the
# gateway, and roll back if the smoke check fails. The GitHub Actions
# workflow in github-actions/deploy.yml runs the same flow step by step.
# deployments/ci_test.go checks every switchyard call here against the CLI.
#
# Configuration (environment):
#   SWITCHYARD_ZK, SWITCHYARD_REGISTRY   where ZooKeeper and the registry are (required)
#   SWITCHYARD_TOKEN, SWITCHYARD_ZK_AUTH secrets from the CI's secret store (required; never printed)
#   SERVICE                              the service to deploy, as it registers (required)
#   SMOKE_URL                            a URL through the gateway that must answer 2xx (required)
#   DEPLOY_HOOK      ./deploy-idle.sh    run as: DEPLOY_HOOK COLOR VERSION; starts the new version on COLOR
#   DEPLOY_VERSION   (empty)             if set, wait for instances reporting this version
#   MIN_INSTANCES    1                   idle instances that must be ready before the switch
#   REGISTER_TIMEOUT 300                 seconds to wait for them
#   SWITCH_TIMEOUT   2m                  switchyard's --timeout for switch and rollback
#   SMOKE_ATTEMPTS   10, SMOKE_INTERVAL 3  smoke check retries and seconds between them
#   SMOKE_COLOR_HEADER (empty)           if set (X-Switchyard-Color for hello), the
#                                        smoke response must carry the new color in it
#   ASKED_BY         ci@HOST             who asked, as switchyard history shows it
#
# Exits 0 when the new color serves and passed the smoke check; otherwise
# non-zero, after putting routing back where it was when that is safe.
set -euo pipefail

die() {
	echo "deploy: $*" >&2
	exit 1
}

need() {
	local name
	for name in "$@"; do
		[ -n "${!name:-}" ] || die "$name is not set (see the top of $0)"
	done
}

need SWITCHYARD_ZK SWITCHYARD_REGISTRY SWITCHYARD_TOKEN SWITCHYARD_ZK_AUTH SERVICE SMOKE_URL
command -v switchyard >/dev/null || die "switchyard is not on PATH (go install github.com/switchyard/switchyard/cmd/switchyard@VERSION)"
command -v jq >/dev/null || die "jq is not on PATH"
command -v curl >/dev/null || die "curl is not on PATH"

DEPLOY_HOOK=${DEPLOY_HOOK:-./deploy-idle.sh}
DEPLOY_VERSION=${DEPLOY_VERSION:-}
MIN_INSTANCES=${MIN_INSTANCES:-1}
REGISTER_TIMEOUT=${REGISTER_TIMEOUT:-300}
SWITCH_TIMEOUT=${SWITCH_TIMEOUT:-2m}
SMOKE_ATTEMPTS=${SMOKE_ATTEMPTS:-10}
SMOKE_INTERVAL=${SMOKE_INTERVAL:-3}
SMOKE_COLOR_HEADER=${SMOKE_COLOR_HEADER:-}
ASKED_BY=${ASKED_BY:-ci@$(hostname)}
# The CLI reads both secrets from the environment; they never appear on a
# command line, where ps or a CI log could show them.
export SWITCHYARD_ZK SWITCHYARD_REGISTRY SWITCHYARD_TOKEN SWITCHYARD_ZK_AUTH

# 1. The idle color. Deploying while a switch is in flight or pending (the
# wanted color is not the one serving) would race it, so that stops here.
status=$(switchyard status --json) || die "switchyard status failed (exit $?)"
active=$(jq -r '.active_color' <<<"$status")
valid=$(jq -r '.active_color_valid' <<<"$status")
serving=$(jq -r '.serving // empty' <<<"$status")
phase=$(jq -r '.switch.phase // empty' <<<"$status")
[ "$valid" = true ] || die "/active_color holds \"$active\", not blue or green; fix it first"
if [ -n "$serving" ] && [ "$serving" != "$active" ]; then
	die "a switch to $active is pending (serving $serving); finish or revert it first"
fi
[ "$phase" != switching ] || die "a switch to $active is in progress; wait for it (switchyard status)"
case $active in
blue) idle=green ;;
green) idle=blue ;;
esac
echo "deploy: $active serves $SERVICE; deploying ${DEPLOY_VERSION:-the new version} to $idle"

# 2. Deploy to the idle color: the hook is yours (kubectl, nomad, ssh, ...).
[ -x "$DEPLOY_HOOK" ] || die "DEPLOY_HOOK $DEPLOY_HOOK is not an executable file"
"$DEPLOY_HOOK" "$idle" "$DEPLOY_VERSION"

# 3. Wait for the idle instances: in ZooKeeper and the registry, not
# quarantined, and OUT_OF_SERVICE, which the SDK reports once it is healthy
# and held out of traffic (STARTING and DOWN are not ready).
ready() {
	switchyard status --json | jq --arg s "$SERVICE" --arg c "$idle" --arg v "$DEPLOY_VERSION" '
		[.instances[] | select(.service == $s and .color == $c and .in_zookeeper and .registered
			and (.quarantined // "") == "" and .status == "OUT_OF_SERVICE"
			and ($v == "" or .version == $v))] | length'
}
deadline=$((SECONDS + REGISTER_TIMEOUT))
while :; do
	n=$(ready) || n=0
	[ "$n" -ge "$MIN_INSTANCES" ] && break
	[ "$SECONDS" -lt "$deadline" ] || die "only $n of $MIN_INSTANCES $idle instances of $SERVICE ready after ${REGISTER_TIMEOUT}s; routing untouched"
	echo "deploy: $n of $MIN_INSTANCES $idle instances ready; waiting"
	sleep 5
done
echo "deploy: $n $idle instances ready"

# 4. Switch. The exit code says what happened (README, "Exit codes").
rc=0
switchyard switch "$idle" --wait --timeout "$SWITCH_TIMEOUT" --asked-by "$ASKED_BY" || rc=$?
case $rc in
0) ;;
1 | 3)
	# Refused (routing unchanged) or timed out (the switch goes on). Either
	# way the idle color stays wanted and would go live later on its own,
	# so ask for the old one again.
	outcome=refused
	[ "$rc" = 1 ] || outcome="timed out"
	echo "deploy: switch to $idle $outcome; asking for $active again" >&2
	switchyard switch "$active" --wait --timeout "$SWITCH_TIMEOUT" --asked-by "$ASKED_BY" ||
		echo "deploy: putting $active back failed (exit $?); check switchyard status" >&2
	exit "$rc"
	;;
2)
	# Failed, or superseded by a later write: someone else has asked for a
	# color since, so this script leaves routing to them.
	echo "deploy: switch to $idle failed or was superseded; not touching routing (switchyard history)" >&2
	exit 2
	;;
*)
	echo "deploy: switch could not run (exit $rc: 4 = ZooKeeper/registry unreachable or no permission, 64 = usage)" >&2
	exit "$rc"
	;;
esac

# 5. Smoke check through the gateway, with a bounded retry.
smoke() {
	local headers
	headers=$(curl -fsS --max-time 10 -o /dev/null -D - "$SMOKE_URL") || return 1
	[ -z "$SMOKE_COLOR_HEADER" ] && return 0
	grep -qi "^$SMOKE_COLOR_HEADER: *$idle" <<<"$headers"
}
for ((i = 1; i <= SMOKE_ATTEMPTS; i++)); do
	if smoke; then
		echo "deploy: $idle serves $SERVICE and passed the smoke check"
		exit 0
	fi
	echo "deploy: smoke check $i/$SMOKE_ATTEMPTS failed" >&2
	if [ "$i" -lt "$SMOKE_ATTEMPTS" ]; then
		sleep "$SMOKE_INTERVAL"
	fi
done

# 6. Roll back: the old color is still running, held out of traffic.
echo "deploy: smoke check failed; rolling back to $active" >&2
rc=0
switchyard rollback --wait --timeout "$SWITCH_TIMEOUT" --asked-by "$ASKED_BY" || rc=$?
[ "$rc" = 0 ] || echo "deploy: rollback exited $rc; check switchyard status" >&2
exit 1
