# The P2P lazy-pulling image backend for containerd. `make help` lists the targets.

GO        ?= go
VERSION   ?= $(shell git describe --always --dirty 2>/dev/null || echo dev)
LDFLAGS   := -X main.version=$(VERSION)
BINARIES  := p2p-snapshotter p2p-scheduler p2pctl
# Short fuzz runs in `make test`; longer ones with `make fuzz FUZZTIME=10m`.
FUZZTIME  ?= 10s
FUZZ_TARGETS := ./layer:FuzzUnmarshal ./layer/ingest:FuzzBuild ./p2p/wire:FuzzReadRequest ./p2p/wire:FuzzParseTablePart ./p2p/wire:FuzzReadResponseHeader ./registry:FuzzTokenExpiry

# Generated gRPC code under proto/, committed. `make proto` regenerates it with pinned
# generators, installed by `go install` into bin/tools/<name>-<version>/ so a new pin takes
# effect by itself. protoc-gen-go must equal google.golang.org/protobuf in go.mod (checked).
# PROTOC_VERSION is the protoc CI gets (Debian 12's protobuf-compiler); another version
# works, with a notice, and only changes the version line in the generated headers.
PROTOC                     ?= protoc
PROTOC_VERSION             := 3.21.12
PROTOC_GEN_GO_VERSION      := v1.36.12
PROTOC_GEN_GO_GRPC_VERSION := v1.6.2
TOOLS              := $(CURDIR)/bin/tools
PROTOC_GEN_GO      := $(TOOLS)/protoc-gen-go-$(PROTOC_GEN_GO_VERSION)/protoc-gen-go
PROTOC_GEN_GO_GRPC := $(TOOLS)/protoc-gen-go-grpc-$(PROTOC_GEN_GO_GRPC_VERSION)/protoc-gen-go-grpc
PROTO_FILES := $(shell find proto -name '*.proto' 2>/dev/null | LC_ALL=C sort)
# $(call protoc_gen,DIR) writes the Go for every .proto into DIR, laid out as proto/ is.
# proto/ is the import root: proto/scheduler/v1/scheduler.proto is
# "scheduler/v1/scheduler.proto" in imports and descriptors.
protoc_gen = $(PROTOC) -I proto \
	--plugin=protoc-gen-go=$(PROTOC_GEN_GO) --go_out=$(1) --go_opt=paths=source_relative \
	--plugin=protoc-gen-go-grpc=$(PROTOC_GEN_GO_GRPC) --go-grpc_out=$(1) --go-grpc_opt=paths=source_relative \
	$(PROTO_FILES)

.PHONY: all build containerd-p2p test unit fuzz bench bench-dist demo lint clean help sim proto proto-check proto-tools proto-versions test-proto

all: build

help:
	@echo "build  write bin/p2p-snapshotter, bin/p2p-scheduler, bin/p2pctl"
	@echo "containerd-p2p  write bin/containerd-p2p: containerd with the p2p snapshotter built in (a module of its own)"
	@echo "test   lint, every test under the race detector (root-only ones run as root), short fuzz runs"
	@echo "bench  Go benchmarks and the integration harnesses"
	@echo "demo   a P2P cluster in one process (registry, scheduler, seed, 8 peers): distribute an image, nothing to set up"
	@echo "lint   gofmt and go vet"
	@echo "sim    the scheduler simulation: 10,000 peers, dag and tree"
	@echo "bench-dist  distribute a 256 MiB layer to 8, 16 and 32 peers in namespaces (root; tens of minutes)"
	@echo "proto  regenerate the Go code of proto/ with pinned generators (needs protoc)"
	@echo "proto-check  fail if the committed generated code differs from a fresh generation (part of test when protoc is installed)"

build:
	@mkdir -p bin
	$(GO) build -ldflags "$(LDFLAGS)" -o bin/ $(addprefix ./cmd/,$(BINARIES))

containerd-p2p:
	@mkdir -p bin
	cd cmd/containerd-p2p && GOWORK=off $(GO) build -o ../../bin/containerd-p2p .

test: lint test-proto unit fuzz

unit:
	$(GO) test -race -count=1 ./...

fuzz:
	@set -e; for t in $(FUZZ_TARGETS); do \
		pkg=$${t%%:*}; fn=$${t##*:}; \
		echo "fuzz $$fn in $$pkg for $(FUZZTIME)"; \
		$(GO) test -run '^$$' -fuzz "^$$fn$$" -fuzztime $(FUZZTIME) -fuzzminimizetime 5s $$pkg; \
	done

bench:
	$(GO) test -run '^$$' -bench . -benchmem -cpu 1,2 ./...
	$(GO) run ./integration/ingestbench

bench-dist:
	$(GO) run ./integration/distbench -peers 8,16,32 -size 256MiB -rate 160mbit -modes tree,dag

sim:
	$(GO) run ./scheduler/sim/cmd/schedsim -mode dag -peers 10000 -seed 1
	$(GO) run ./scheduler/sim/cmd/schedsim -mode tree -peers 10000 -seed 1

demo: build
	./bin/p2pctl demo

lint:
	@out=$$(gofmt -l $$(find . -name '*.go' -not -path './bin/*')); \
	if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...

# proto-check where protoc is installed; elsewhere a notice, except on CI, which must check.
test-proto:
	@if command -v $(PROTOC) >/dev/null 2>&1; then \
		$(MAKE) --no-print-directory proto-check; \
	elif [ -n "$${CI:-}" ]; then \
		echo "$(PROTOC) not found: CI must check the generated code (apt-get install protobuf-compiler)"; exit 1; \
	else \
		echo "notice: $(PROTOC) not found, skipping proto-check (apt-get install protobuf-compiler)"; \
	fi

proto: proto-tools
	$(call protoc_gen,proto)

proto-check: proto-tools
	@set -e; tmp=$$(mktemp -d); trap 'rm -rf "$$tmp"' EXIT; \
	mkdir "$$tmp/fresh" "$$tmp/committed"; \
	$(call protoc_gen,"$$tmp/fresh"); \
	( cd proto && find . -name '*.pb.go' -exec cp --parents {} "$$tmp/committed/" \; ); \
	if ! diff -ru -I '^// .*protoc  *v[0-9]' "$$tmp/committed" "$$tmp/fresh" >"$$tmp/diff"; then \
		sed -e "s|$$tmp/committed|proto|g; s|$$tmp/fresh|generated|g" "$$tmp/diff" | head -n 100; \
		echo "proto-check: the generated code in proto/ is stale; run 'make proto' and commit the result"; \
		exit 1; \
	fi; \
	echo "proto-check: generated code is up to date"

# Installs the pinned generators, after checking that protoc is there, that protoc-gen-go
# matches go.mod, and telling when protoc is not the version CI uses.
proto-tools: proto-versions $(PROTOC_GEN_GO) $(PROTOC_GEN_GO_GRPC)

proto-versions:
	@command -v $(PROTOC) >/dev/null 2>&1 || { echo "$(PROTOC) not found: apt-get install protobuf-compiler"; exit 1; }
	@v=$$($(GO) list -m -f '{{.Version}}' google.golang.org/protobuf); \
	if [ "$$v" != "$(PROTOC_GEN_GO_VERSION)" ]; then \
		echo "go.mod has google.golang.org/protobuf $$v but PROTOC_GEN_GO_VERSION is $(PROTOC_GEN_GO_VERSION): update the Makefile and run 'make proto'"; exit 1; \
	fi
	@v=$$($(PROTOC) --version | sed 's/^libprotoc //'); \
	if [ "$$v" != "$(PROTOC_VERSION)" ]; then \
		echo "notice: $(PROTOC) is $$v, CI uses $(PROTOC_VERSION); only the version line of the generated headers differs"; \
	fi

$(PROTOC_GEN_GO):
	GOBIN=$(@D) $(GO) install google.golang.org/protobuf/cmd/protoc-gen-go@$(PROTOC_GEN_GO_VERSION)

$(PROTOC_GEN_GO_GRPC):
	GOBIN=$(@D) $(GO) install google.golang.org/grpc/cmd/protoc-gen-go-grpc@$(PROTOC_GEN_GO_GRPC_VERSION)

clean:
	rm -rf bin
