# Millstream. `make run` and `make test` do all the set-up they need.
GO       ?= go
BIN      := bin/millstream
VERSION  ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS  := -X github.com/millstream/millstream/node.Version=$(VERSION)
FUZZTIME ?= 30s
ARGS     ?=

.PHONY: all build run test race deps lint fuzz bench clean

all: build

build:
	$(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN) ./cmd/millstream

# Embedded defaults: data in ./data, MQTT on 127.0.0.1:1883 (WebSocket :8083), HTTP on 127.0.0.1:8080.
run: build
	./$(BIN) run $(ARGS)

# Installs the test peers (mosquitto clients) when it can, then runs every test.
# Under CI=true a test whose peer is missing fails instead of skipping.
test: deps
	$(GO) vet ./...
	$(GO) test -count=1 -timeout 20m ./...

# Every test again under the race detector (CI runs it after make test).
race: deps
	$(GO) test -race -count=1 -timeout 30m ./...

deps:
	@scripts/install-deps.sh

lint:
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...
	$(GO) run honnef.co/go/tools/cmd/staticcheck@v0.8.2 ./...

# Runs every fuzz target for FUZZTIME each.
fuzz:
	@scripts/fuzz-all.sh $(FUZZTIME)

bench: build
	$(GO) test -run '^$$' -bench . -benchtime 2s ./log/... ./broker/... ./sparkplug/... ./uns/...

clean:
	rm -rf bin
