# switchyard: `make demo` shows a switch, `make test` runs every test.
SHELL := /bin/bash
GO    ?= go
export PATH := $(PATH):/usr/local/go/bin

.PHONY: all build deps test demo bench vet clean

all: build

build:
	$(GO) build -o bin/switchyard ./cmd/switchyard
	$(GO) build -o bin/hello ./examples/hello
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
	$(GO) mod tidy -diff
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || { gofmt -l $$(git ls-files '*.go'); echo "gofmt needed"; exit 1; }

# Unit and package tests with the race detector, then the end-to-end suite
# against real ZooKeeper, Consul and processes.
test: deps vet
	$(GO) test -race -count=1 -timeout 15m $$($(GO) list ./... | grep -v '/deployments/local$$')
	$(GO) test -count=1 -timeout 40m -v ./deployments/local/ 2>&1 | grep -E '^(=== RUN|--- |\s+[a-z_0-9]+_test.go|PASS|FAIL|ok|panic)' ; exit $${PIPESTATUS[0]}

# Side-by-side figures (gateway vs nginx and Caddy, propagation, scale,
# memory); see BENCHMARKS.md.
bench: build
	bash deployments/install/bench-deps.sh
	$(GO) test -run '^$$' -bench . -benchmem ./gateway/ ./registry/ ./controller/
	$(GO) run ./cmd/bench

demo: build
	bash deployments/install/deps.sh zookeeper
	./bin/demo

clean:
	rm -rf bin
