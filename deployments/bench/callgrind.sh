#!/usr/bin/env bash
# Per-request cost of the gateway and of nginx over a fixed number of
# proxied HTTP/1.1 keep-alive requests (see BENCHMARKS.md, "How each
# figure is measured"):
#
#   deployments/bench/callgrind.sh                 # instructions/request, gateway and nginx
#   deployments/bench/callgrind.sh -mode strace    # syscalls/request
#   deployments/bench/callgrind.sh -mode pprof -targets gateway -n 100000
#   deployments/bench/callgrind.sh -proto h2 -targets gateway,nginx,caddy
#   deployments/bench/callgrind.sh -mode tail     # where the latency tail comes from
#
# Flags go to deployments/bench/callgrind (-n, -c, -warmup, -targets, -dir).
set -euo pipefail
cd "$(dirname "$0")/../.."
for tool in valgrind:valgrind h2load:nghttp2-client nginx:nginx strace:strace; do
	command -v "${tool%%:*}" >/dev/null || PATH=$PATH:/usr/sbin command -v "${tool%%:*}" >/dev/null ||
		{ apt-get install -y "${tool##*:}" >/dev/null; }
done
make build >/dev/null
go build -o bin/per-request-bench ./deployments/bench/callgrind
# Caddy, built once from its Go module and cached, is the last line.
caddy=$(bash deployments/install/bench-deps.sh | tail -n 1)
exec bin/per-request-bench -bin bin/switchyard -caddy "$caddy" "$@"
