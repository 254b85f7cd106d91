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

.PHONY: all build test test-unit test-race test-e2e test-ipvs verify fmt vet staticcheck bench clean help

all: build

help:
	@echo "make build      build $(BIN)"
	@echo "make test       unit, race, e2e and ipvs-VM tests (the README's test command; CI runs it)"
	@echo "make test-ipvs  the ipvs backend's kernel tests in a qemu VM"
	@echo "make verify     gofmt, go vet, staticcheck"
	@echo "make bench      benchmarks (bench/run.sh)"

build:
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN) ./cmd/svcnet

# The whole suite: every package once (as root the dataplane, agent and e2e
# tests re-execute themselves in private network namespaces), -race on the
# concurrent ones, and the ipvs tests in a VM.
test: test-unit test-race test-ipvs

test-unit:
	$(GO) test -count=1 -timeout 12m ./...

test-race:
	$(GO) test -count=1 -race -timeout 8m $(RACE_PKGS)

# The ipvs backend's kernel tests in a VM (Debian kernel with IPVS, qemu
# software emulation, no network): this machine kind's kernel has no IPVS.
# Installs qemu-system-x86, linux-image-amd64 and busybox-static itself.
test-ipvs:
	bash hack/ipvs-vm.sh

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
