# The P2P lazy-pulling image backend for containerd. `make help` lists the targets.

GO        ?= go
VERSION   ?= $(shell git describe --always --dirty 2>/dev/null || echo dev)
LDFLAGS   := -X main.version=$(VERSION)
BINARIES  := p2p-snapshotter p2p-scheduler p2pctl
# Short fuzz runs in `make test`; longer ones with `make fuzz FUZZTIME=10m`.
FUZZTIME  ?= 10s
FUZZ_TARGETS := ./layer:FuzzUnmarshal ./layer/ingest:FuzzBuild

.PHONY: all build test unit fuzz bench demo lint clean help

all: build

help:
	@echo "build  write bin/p2p-snapshotter, bin/p2p-scheduler, bin/p2pctl"
	@echo "test   lint, every test under the race detector (root-only ones run as root), short fuzz runs"
	@echo "bench  Go benchmarks and the integration harnesses"
	@echo "demo   run the main job on an embedded default, nothing to set up"
	@echo "lint   gofmt and go vet"

build:
	@mkdir -p bin
	$(GO) build -ldflags "$(LDFLAGS)" -o bin/ $(addprefix ./cmd/,$(BINARIES))

test: lint unit fuzz

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

demo: build
	./bin/p2pctl demo

lint:
	@out=$$(gofmt -l $$(find . -name '*.go' -not -path './bin/*')); \
	if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...

clean:
	rm -rf bin
