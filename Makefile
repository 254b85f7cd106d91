# svcnet build, test and verification. `make help` lists the targets.

GO      ?= go
BIN     := bin/svcnet
KUBE_VERSION := v1.37.2
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo v0.0.0-dev)

# kubectl's client version (svcnet kubectl version) comes from component-base
# and client-go, as in the upstream kubectl build.
LDFLAGS := -s -w \
	-X main.version=$(VERSION) \
	-X k8s.io/component-base/version.gitVersion=$(KUBE_VERSION) \
	-X k8s.io/component-base/version.gitMajor=1 \
	-X k8s.io/component-base/version.gitMinor=37 \
	-X k8s.io/client-go/pkg/version.gitVersion=$(KUBE_VERSION) \
	-X k8s.io/client-go/pkg/version.gitMajor=1 \
	-X k8s.io/client-go/pkg/version.gitMinor=37

# Packages whose tests run with -race: the ones with goroutines and shared
# state. The rest run without it to keep `make test` well under 15 minutes on
# two cores.
RACE_PKGS := ./internal/storage/... ./internal/auth/... ./internal/registry/service/... ./internal/apiserver/... ./internal/server/...

.PHONY: all build test test-unit test-race test-e2e verify fmt vet staticcheck bench clean help

all: build

help:
	@echo "make build      build $(BIN)"
	@echo "make test       unit tests, race tests, e2e tests (the README's test command; CI runs it)"
	@echo "make verify     gofmt, go vet, staticcheck"
	@echo "make bench      benchmarks (bench/run.sh)"

build:
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN) ./cmd/svcnet

# The whole suite: every package once, -race on the concurrent ones; the e2e
# tests in ./test/e2e build their own binary and need root only for what later
# issues add (they use loopback only).
test: test-unit test-race

test-unit:
	$(GO) test -count=1 -timeout 12m ./...

test-race:
	$(GO) test -count=1 -race -timeout 8m $(RACE_PKGS)

test-e2e:
	$(GO) test -count=1 -timeout 10m -v ./test/e2e/...

verify: fmt vet staticcheck

fmt:
	@out=$$(find . -name '*.go' -not -path './.git/*' -not -path './.cache/*' -not -path './_output/*' -print0 | xargs -0 gofmt -l); \
	if [ -n "$$out" ]; then echo "gofmt needed on:"; echo "$$out"; exit 1; fi

vet:
	$(GO) vet ./...

# staticcheck is pinned in go.mod as a tool dependency; staticcheck.conf
# says which checks run.
staticcheck:
	$(GO) tool staticcheck ./...

# bench/run.sh builds what it needs and prints a report (see bench/README.md).
bench:
	bash bench/run.sh

clean:
	rm -rf bin
