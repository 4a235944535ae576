# llmtap — see README.md. `make help` lists the targets.
SHELL := /bin/bash
GO    ?= go
BIN   := bin
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)

.PHONY: help build run demo chaos test test-short bench fuzz-short services dashboards fmt vet clean

help: ## list targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-12s %s\n", $$1, $$2}'

build: ## build bin/llmtap and bin/vllm-sim
	$(GO) build -ldflags "-X main.version=$(VERSION)" -o $(BIN)/llmtap ./cmd/llmtap
	$(GO) build -o $(BIN)/vllm-sim ./cmd/vllm-sim

services: ## install/start PostgreSQL and ClickHouse for tests
	./scripts/services.sh

run: build ## run llmtap serve in front of vllm-sim (or UPSTREAM=http://host:port)
	./scripts/run.sh

demo: ## send mixed demo traffic through a running `make run`
	./scripts/demo.sh

chaos: build services ## the full reliability scenarios (RELIABILITY.md)
	./scripts/chaos.sh

test: services ## run the whole suite against real PostgreSQL and ClickHouse
	$(GO) vet ./...
	$(GO) test -count=1 -timeout 14m ./...

test-short: ## unit tests only (no services)
	$(GO) test -short -count=1 ./...

bench: build services ## run every benchmark and rewrite BENCHMARKS.md
	./scripts/bench.sh

fuzz-short: services ## run each fuzz target briefly (some targets open the real stores)
	./scripts/fuzz.sh $(or $(FUZZTIME),10s)

dashboards: ## regenerate the committed dashboard JSON (dashboards/generated)
	$(GO) test ./dashboards -run 'Generated' -update

fmt: ## gofmt the tree
	gofmt -w $$(git ls-files '*.go')

clean:
	rm -rf $(BIN)
