# The targets CI runs; `make test` is the README's test command and what
# .ci/run calls on a fresh machine.

GO        ?= go
TOOLS     := $(CURDIR)/.tools
GRPCURL   := github.com/fullstorydev/grpcurl/cmd/grpcurl@v1.9.4
FUZZTIME  ?= 10s
export PATH := $(TOOLS):$(PATH)

.PHONY: run test deps tools vet unit fuzz bench build

# Run Keygate on its embedded defaults: ./keygate.db, loopback listeners.
run:
	$(GO) run ./cmd/keygate serve

# The whole suite: tools the tests drive, vet, race tests, short fuzzing.
test: deps vet unit fuzz

# System packages the tests need (none yet beyond Go); installs as root on a
# fresh Debian machine and is a no-op where they are present.
deps: tools

tools:
	@mkdir -p $(TOOLS)
	@test -x $(TOOLS)/grpcurl || GOBIN=$(TOOLS) $(GO) install $(GRPCURL)
	@$(TOOLS)/grpcurl -version

vet:
	@unformatted=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	  if [ -n "$$unformatted" ]; then echo "gofmt needed: $$unformatted"; exit 1; fi
	$(GO) vet ./...

unit:
	$(GO) test -race -count=1 ./...

# Each fuzz target briefly; run one longer with e.g.
#   go test -run='^$$' -fuzz=FuzzParse -fuzztime=10m ./keystore/apikey
fuzz:
	$(GO) test -run='^$$' -fuzz='^FuzzParse$$' -fuzztime=$(FUZZTIME) ./keystore/apikey
	$(GO) test -run='^$$' -fuzz='^FuzzExtract$$' -fuzztime=$(FUZZTIME) ./authz
	$(GO) test -run='^$$' -fuzz='^FuzzCleanPath$$' -fuzztime=$(FUZZTIME) ./authz
	$(GO) test -run='^$$' -fuzz='^FuzzCheckRequest$$' -fuzztime=$(FUZZTIME) ./envoy
	$(GO) test -run='^$$' -fuzz='^FuzzParseConfig$$' -fuzztime=$(FUZZTIME) -fuzzminimizetime=5s ./cmd/keygate

build:
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags='-s -w' -o keygate ./cmd/keygate
