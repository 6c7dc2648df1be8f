# switchyard: `make demo` shows a switch, `make test` runs every test.
SHELL := /bin/bash
GO    ?= go
export PATH := $(PATH):/usr/local/go/bin

.PHONY: all build deps test demo bench vet clean fuzz chaos soak

all: build

build:
	$(GO) build -o bin/switchyard ./cmd/switchyard
	$(GO) build -o bin/hello ./examples/hello
	$(GO) build -o bin/hello-grpc ./examples/hello-grpc
	$(GO) build -o bin/demo ./cmd/demo

# ZooKeeper (Debian's package) and a cached Consul built from its module.
deps:
	bash deployments/install/deps.sh

# Static checks: go vet, staticcheck (pinned, run from its module), gofmt,
# and go.mod/go.sum exactly as go mod tidy leaves them.
STATICCHECK ?= honnef.co/go/tools/cmd/staticcheck@v0.8.2
vet:
	$(GO) vet ./...
	$(GO) run $(STATICCHECK) ./...
	$(GO) vet -tags soak ./deployments/local/
	$(GO) mod tidy -diff
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || { gofmt -l $$(git ls-files '*.go'); echo "gofmt needed"; exit 1; }

# Native fuzzing: each target runs FUZZEXECS inputs (a few seconds each);
# -fuzz takes one target per go test. A count, not a duration, so that a
# slow input at the end of the time cannot fail the run. The generated
# corpus is cleared first, so that each run starts from the committed
# seeds, as CI does. The seed corpora (f.Add and testdata/fuzz/) also run
# as plain tests.
FUZZEXECS ?= 10000x
fuzz:
	$(GO) clean -fuzzcache
	$(GO) test -run '^$$' -fuzz '^FuzzParseInstanceNode$$' -fuzztime $(FUZZEXECS) ./zkstate/
	$(GO) test -run '^$$' -fuzz '^FuzzParseColor$$' -fuzztime $(FUZZEXECS) ./zkstate/
	$(GO) test -run '^$$' -fuzz '^FuzzAPI$$' -fuzztime $(FUZZEXECS) ./registry/server/
	$(GO) test -run '^$$' -fuzz '^FuzzInstruction$$' -fuzztime $(FUZZEXECS) ./client-sdk/
	$(GO) test -run '^$$' -fuzz '^FuzzH1$$' -fuzztime $(FUZZEXECS) ./gateway/
	$(GO) test -run '^$$' -fuzz '^FuzzGuard$$' -fuzztime $(FUZZEXECS) ./gateway/
	$(GO) test -run '^$$' -fuzz '^FuzzEngine$$' -fuzztime $(FUZZEXECS) ./gateway/

# Unit and package tests with the race detector, then the end-to-end suite
# against real ZooKeeper, Consul and processes.
test: deps vet fuzz
	$(GO) test -race -count=1 -timeout 15m $$($(GO) list ./... | grep -v '/deployments/local$$')
	$(GO) test -count=1 -timeout 40m -v ./deployments/local/ 2>&1 | grep -E '^(=== RUN|--- |\s+[a-z_0-9]+_test.go|PASS|FAIL|ok|panic)' ; exit $${PIPESTATUS[0]}

# Side-by-side figures (gateway vs nginx and Caddy, propagation, scale,
# memory); see BENCHMARKS.md.
bench: build
	bash deployments/install/bench-deps.sh
	$(GO) test -run '^$$' -bench . -benchmem ./gateway/ ./registry/ ./controller/
	$(GO) run ./cmd/bench

# The fault suite alone (it also runs in make test): a 3-node ZooKeeper
# ensemble under load; the table of cases goes to $(CHAOS_REPORT), as
# docs/reliability.md shows it.
CHAOS_REPORT ?= bin/chaos.md
chaos: deps
	@mkdir -p $(dir $(CHAOS_REPORT))
	SWITCHYARD_CHAOS_REPORT=$(abspath $(CHAOS_REPORT)) $(GO) test -count=1 -run '^TestChaos' -timeout 20m -v ./deployments/local/
	@cat $(CHAOS_REPORT)

# Ten minutes under load, a flip every 5 s; every process must stay flat.
# Not part of make test. SWITCHYARD_SOAK_DURATION shortens or lengthens it.
soak: deps
	$(GO) test -tags soak -count=1 -run '^TestSoak$$' -timeout 60m -v ./deployments/local/

demo: build
	bash deployments/install/deps.sh zookeeper
	./bin/demo

clean:
	rm -rf bin
