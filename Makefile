# The targets CI runs; `make test` is the README's test command and what
# .ci/run calls on a fresh machine.

GO        ?= go
TOOLS     := $(CURDIR)/.tools
GRPCURL   := github.com/fullstorydev/grpcurl/cmd/grpcurl@v1.9.4
STATICCHECK_VERSION := v0.8.2
# Fuzz budgets are execution counts, not durations: with a duration, Go
# 1.26's fuzz coordinator can report a spurious "context deadline exceeded"
# when the time runs out mid-execution (golang/go#75804, fixed in 1.27).
FUZZ_FAST ?= 300000x
FUZZ_SLOW ?= 20000x
export PATH := $(TOOLS):$(PATH)

.PHONY: run test deps tools vet lint unit nested fuzz bench bench-smoke build release FORCE

# Run Keygate on its embedded defaults: ./keygate.db, loopback listeners.
run:
	$(GO) run ./cmd/keygate serve

# The whole suite: tools the tests drive, vet, staticcheck, race tests,
# short fuzzing.
test: deps vet lint unit nested fuzz bench-smoke

# System packages the tests drive: nginx and Caddy, which the proxy
# end-to-end tests (cmd/keygate/proxy_e2e_test.go) run in front of Keygate;
# redis-server, which the shared rate limiter's tests
# (authz/ratelimit/redislimit) run; and etcd and etcdctl (Debian's
# etcd-server and etcd-client), which internal/testetcd runs as clusters of
# separate processes beside its embedded member; and chromium, which the
# key console's browser test (cmd/keygate/console_e2e_test.go) drives
# headless through chromedp. Installs the missing ones
# from Debian as root on a fresh machine, is a no-op where all are on PATH,
# and stops `make test` when it cannot. (The nginx package may start a
# system nginx on port 80, redis-server a system Redis on 6379 and
# etcd-server, through its init script where no policy-rc.d forbids it, a
# system etcd on 2379; the tests never use them: they run their own on
# loopback ports with their own pid files, data and temp files.)
# Each entry is command:package, since etcd's commands are not named after
# their packages.
DEPS := nginx:nginx caddy:caddy redis-server:redis-server etcd:etcd-server etcdctl:etcd-client chromium:chromium

deps: tools
	@missing=; cmds=; for d in $(DEPS); do c=$${d%%:*}; p=$${d#*:}; \
	  command -v $$c >/dev/null 2>&1 || { cmds="$$cmds $$c"; case " $$missing " in *" $$p "*) ;; *) missing="$$missing $$p";; esac; }; done; \
	if [ -n "$$missing" ]; then \
	  echo "deps: installing$$missing from Debian packages (for$$cmds)"; \
	  if [ "$$(id -u)" != 0 ]; then echo "deps: installing$$missing needs root (apt-get); install them or run make as root" >&2; exit 1; fi; \
	  if ! command -v apt-get >/dev/null 2>&1; then echo "deps: no apt-get here: install$$missing yourself" >&2; exit 1; fi; \
	  apt-get update || { echo "deps: apt-get update failed" >&2; exit 1; }; \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends $$missing || { echo "deps: apt-get install$$missing failed" >&2; exit 1; }; \
	  for c in $$cmds; do command -v $$c >/dev/null 2>&1 || { echo "deps: $$c installed but not on PATH (Debian puts nginx in /usr/sbin)" >&2; exit 1; }; done; \
	fi
	@nginx -v
	@echo "caddy $$(caddy version)"
	@redis-server --version
	@etcd --version | head -1
	@chromium --version 2>/dev/null

tools:
	@mkdir -p $(TOOLS)
	@test -x $(TOOLS)/grpcurl || GOBIN=$(TOOLS) $(GO) install $(GRPCURL)
	@$(TOOLS)/grpcurl -version

vet:
	@unformatted=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	  if [ -n "$$unformatted" ]; then echo "gofmt needed: $$unformatted"; exit 1; fi
	$(GO) vet ./...

# staticcheck at a pinned version, installed into ./.tools like grpcurl (and
# replaced when another version is there, since checks differ between
# versions). Where the code means to use something deprecated (Envoy's
# append field, which older Envoy versions still read), a //lint:ignore
# directive on that line says why.
lint:
	@mkdir -p $(TOOLS)
	@$(TOOLS)/staticcheck -version 2>/dev/null | grep -qF '($(STATICCHECK_VERSION:v%=%))' || \
	  GOBIN=$(TOOLS) $(GO) install honnef.co/go/tools/cmd/staticcheck@$(STATICCHECK_VERSION)
	$(TOOLS)/staticcheck ./...

unit:
	$(GO) test -race -count=1 -timeout=30m ./...

# The modules nested under examples/ (the Helm chart's and Envoy Gateway's
# checks): they hold Kubernetes', Helm's and Envoy Gateway's types, which
# the product's go.mod leaves out. `go test ./...` at the top does not
# enter them, so each is vetted, linted and tested here.
NESTED := $(patsubst %/go.mod,%,$(shell find examples -mindepth 2 -name go.mod 2>/dev/null))
nested: lint
	@for m in $(NESTED); do echo "== $$m"; \
	  (cd $$m && $(GO) vet ./... && $(TOOLS)/staticcheck ./... && $(GO) test -count=1 -timeout=30m ./...) || exit 1; done

# Each fuzz target briefly (a few seconds each); run one longer with e.g.
#   go test -run='^$$' -fuzz=FuzzParse -fuzztime=50000000x ./keystore/apikey
fuzz:
	$(GO) test -run='^$$' -fuzz='^FuzzParse$$' -fuzztime=$(FUZZ_FAST) ./keystore/apikey
	$(GO) test -run='^$$' -fuzz='^FuzzExtract$$' -fuzztime=$(FUZZ_FAST) ./authz
	$(GO) test -run='^$$' -fuzz='^FuzzCleanPath$$' -fuzztime=$(FUZZ_FAST) ./authz
	$(GO) test -run='^$$' -fuzz='^FuzzRouteMatch$$' -fuzztime=$(FUZZ_FAST) ./authz
	$(GO) test -run='^$$' -fuzz='^FuzzRouteVariants$$' -fuzztime=$(FUZZ_FAST) ./authz
	$(GO) test -run='^$$' -fuzz='^FuzzCheckRequest$$' -fuzztime=100000x ./envoy
	$(GO) test -run='^$$' -fuzz='^FuzzWireRequest$$' -fuzztime=100000x ./envoy
	$(GO) test -run='^$$' -fuzz='^FuzzWire$$' -fuzztime=30000x ./envoy
	$(GO) test -run='^$$' -fuzz='^FuzzFoldHeaders$$' -fuzztime=100000x ./envoy
	$(GO) test -run='^$$' -fuzz='^FuzzDecodeKeyRecord$$' -fuzztime=100000x ./keystore
	$(GO) test -run='^$$' -fuzz='^FuzzDecode$$' -fuzztime=$(FUZZ_FAST) ./keystore/admin
	$(GO) test -run='^$$' -fuzz='^FuzzParseConfig$$' -fuzztime=$(FUZZ_SLOW) -fuzzminimizetime=2000x ./internal/config
	$(GO) test -run='^$$' -fuzz='^FuzzParseWindow$$' -fuzztime=$(FUZZ_FAST) ./authz/ratelimit
	$(GO) test -run='^$$' -fuzz='^FuzzLimitJSON$$' -fuzztime=30000x ./authz/ratelimit
	$(GO) test -run='^$$' -fuzz='^FuzzParseLimit$$' -fuzztime=30000x ./cmd/keygate
	$(GO) test -run='^$$' -fuzz='^FuzzParseRefill$$' -fuzztime=30000x ./cmd/keygate

build:
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags='-s -w' -o keygate ./cmd/keygate

# Release binaries, static (CGO_ENABLED=0) and free of this machine's paths
# (-trimpath), cross-compiled: Go needs no emulation or C toolchain for
# these. VERSION names the files and is stamped into `keygate version`; the
# commit comes from the VCS (debug.ReadBuildInfo). cmd/keygate's
# TestReleaseBuild runs the per-binary rule for one target.
VERSION  ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
DIST     ?= dist
PLATFORMS := linux/amd64 linux/arm64 darwin/arm64
RELEASE_BINS := $(foreach p,$(PLATFORMS),$(DIST)/keygate_$(VERSION)_$(subst /,_,$(p)))

# A fresh dist/, so that SHA256SUMS and the directory list the same files.
release:
	rm -rf $(DIST)
	$(MAKE) --no-print-directory VERSION=$(VERSION) DIST=$(DIST) $(RELEASE_BINS)
	cd $(DIST) && { command -v sha256sum >/dev/null && sha256sum $(notdir $(RELEASE_BINS)) || shasum -a 256 $(notdir $(RELEASE_BINS)); } > SHA256SUMS
	@cat $(DIST)/SHA256SUMS

# % is <os>_<arch>. FORCE: go build decides what is stale, not make.
# -buildvcs=auto overrides a GOFLAGS=-buildvcs=false in the environment: a
# release must record its commit, wherever git can tell it.
$(DIST)/keygate_$(VERSION)_%: FORCE
	@mkdir -p $(@D)
	CGO_ENABLED=0 GOOS=$(word 1,$(subst _, ,$*)) GOARCH=$(word 2,$(subst _, ,$*)) \
	  $(GO) build -trimpath -buildvcs=auto -ldflags='-s -w -X main.version=$(VERSION)' -o $@ ./cmd/keygate

FORCE:

# Every benchmark a hundred times: they keep compiling and running in CI.
# Times are not asserted; BENCHMARKS.md has measured runs.
bench-smoke:
	$(GO) test -run='^$$' -bench=. -benchtime=100x -benchmem ./...

# The benchmarks as BENCHMARKS.md reports them (add KEYGATE_BENCH_LARGE=1
# for the store of a million keys).
bench:
	$(GO) test -run='^$$' -bench=. -benchmem -count=5 ./...
