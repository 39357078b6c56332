# credgw — make targets. `make demo` and `make test` work on a fresh Debian/Ubuntu
# machine: both install what they need first (make deps).

GO        ?= go
BIN       := bin/credgw
DEMO_DIR  ?= .demo
VERSION   ?= $(shell git describe --always --dirty 2>/dev/null || echo dev)

# Debian packages credgw needs: SoftHSM (tokens for tests and the embedded
# default), OpenSC (pkcs11-tool; the module for real PIV cards), pcscd and
# vsmartcard's vpcd (hsm-sim's cards as PIV cards over PC/SC), protoc,
# p11tool, NSS tools (browser tests), OpenSSL (tests check what we produce),
# PostgreSQL (the scale-out store; tests run a throwaway cluster), Python
# cryptography and a Java runtime (readers of the agent's PKCS#12 files), and
# what the package test checks the .deb with: systemd-analyze (systemd),
# lintian, binutils (strip, objdump).
DEB_PACKAGES := softhsm2 opensc pcscd vsmartcard-vpcd protobuf-compiler libprotobuf-dev gnutls-bin libnss3-tools openssl ca-certificates postgresql chromium python3-cryptography default-jre-headless systemd lintian binutils

# Pinned protoc plugins for `make proto`.
PROTOC_GEN_GO      := google.golang.org/protobuf/cmd/protoc-gen-go@v1.36.12
PROTOC_GEN_GO_GRPC := google.golang.org/grpc/cmd/protoc-gen-go-grpc@v1.6.2

# Pinned linters for `make vet`, built from the Go module proxy into bin/
# (once per version; a stamp file names the version built).
BUF_VERSION         := v1.75.0
STATICCHECK_VERSION := v0.8.2

# The test run's time limit (the whole `make test` stays under 20 minutes).
TEST_TIMEOUT ?= 15m

.PHONY: all deps build package image test vet fmt-check demo proto bench fuzz clean man api-release

all: build

## deps: install the Debian packages credgw needs, when missing (idempotent)
deps:
	@missing=""; \
	for p in $(DEB_PACKAGES); do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "install ok installed" || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
	  echo "make deps: installing$$missing"; \
	  SUDO=""; [ "$$(id -u)" = 0 ] || SUDO=sudo; \
	  $$SUDO apt-get update && \
	  DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y --no-install-recommends $$missing; \
	else \
	  echo "make deps: all Debian packages present"; \
	fi
	@command -v $(GO) >/dev/null || { echo "make deps: Go 1.26 is required (https://go.dev/dl)"; exit 1; }
	@command -v gcc >/dev/null || { echo "make deps: gcc is required (cgo, for PKCS#11)"; exit 1; }

## build: build bin/credgw (cgo is required: PKCS#11 modules are C libraries)
build:
	@echo "building $(BIN) (cgo, for PKCS#11; the first build compiles the dependencies and takes a few minutes)"
	CGO_ENABLED=1 $(GO) build -buildvcs=auto -ldflags "-X main.version=$(VERSION)" -o $(BIN) ./cmd/credgw

## man: man pages of every command into bin/man (man -l bin/man/credgw.1)
man: build
	$(BIN) man --dir bin/man

## package: build bin/credgw_VERSION_ARCH.deb: credgw (cgo, PIE), the hardened
## systemd unit, an example /etc/credgw/credgw.yaml (cmd/credgw/dist/)
PKG_BIN := bin/package/credgw
package:
	CGO_ENABLED=1 $(GO) build -buildvcs=auto -buildmode=pie -ldflags "-X main.version=$(VERSION)" -o $(PKG_BIN) ./cmd/credgw
	cmd/credgw/dist/build-deb.sh $(PKG_BIN) $(VERSION) bin

## image: the container image $(IMAGE) (podman, Dockerfile): bin/credgw from
## the host on a Debian base made by debootstrap if missing; SoftHSM and
## OpenSC with IMAGE_ARGS=--build-arg=WITH_SOFTHSM=yes
IMAGE_PACKAGES := podman runc debootstrap
BASE_IMAGE     := localhost/debian-base:bookworm
IMAGE          ?= localhost/credgw:$(VERSION)
IMAGE_ARGS     ?=
image: build
	@missing=""; \
	for p in $(IMAGE_PACKAGES); do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "install ok installed" || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
	  SUDO=""; [ "$$(id -u)" = 0 ] || SUDO=sudo; \
	  $$SUDO apt-get update && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y --no-install-recommends $$missing; \
	fi
	CONTAINERS_CONF=$(CURDIR)/cmd/credgw/dist/containers.conf cmd/credgw/dist/base-image.sh $(BASE_IMAGE)
	CONTAINERS_CONF=$(CURDIR)/cmd/credgw/dist/containers.conf podman build --runtime runc --format docker \
	  --build-arg BASE=$(BASE_IMAGE) $(IMAGE_ARGS) -t $(IMAGE) .

## vet: go vet, gofmt, staticcheck, and buf lint + buf breaking on proto/
## against the released API (proto/released.binpb)
vet: bin/.buf-$(BUF_VERSION) bin/.staticcheck-$(STATICCHECK_VERSION)
	$(GO) vet ./...
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	if [ -n "$$out" ]; then echo "gofmt would change:"; echo "$$out"; exit 1; fi
	bin/staticcheck ./...
	bin/buf lint proto
	bin/buf breaking proto --against proto/released.binpb

bin/.buf-$(BUF_VERSION):
	@echo "make vet: building buf $(BUF_VERSION) into bin/ (once; a few minutes on a cold cache)"
	@mkdir -p bin && rm -f bin/.buf-*
	GOBIN=$(CURDIR)/bin $(GO) install github.com/bufbuild/buf/cmd/buf@$(BUF_VERSION)
	@touch $@

bin/.staticcheck-$(STATICCHECK_VERSION):
	@echo "make vet: building staticcheck $(STATICCHECK_VERSION) into bin/ (once)"
	@mkdir -p bin && rm -f bin/.staticcheck-*
	GOBIN=$(CURDIR)/bin $(GO) install honnef.co/go/tools/cmd/staticcheck@$(STATICCHECK_VERSION)
	@touch $@

## api-release: record the API as released: buf breaking compares with it
api-release: bin/.buf-$(BUF_VERSION)
	bin/buf build proto -o proto/released.binpb

## test: every test, with the race detector, after make deps; a throwaway
## PostgreSQL runs for the duration (or set CREDGW_TEST_POSTGRES_DSN), and
## the gateway's gRPC/HTTPS tests (./server/) run again with it as the store
test: deps vet
	CGO_ENABLED=1 test/with-postgres.sh sh -c '$(GO) test -race -count=1 -timeout $(TEST_TIMEOUT) ./... && \
	  CREDGW_TEST_STORE=postgres $(GO) test -race -count=1 -timeout $(TEST_TIMEOUT) ./server/'

## demo: the whole flow on the embedded default (SoftHSM, a simulated card)
demo: deps build
	rm -rf $(DEMO_DIR)
	$(BIN) demo --dir $(DEMO_DIR)

## proto: regenerate the Go code of proto/ with the pinned plugins
proto: deps
	@protos=$$(find proto -name '*.proto' 2>/dev/null); \
	if [ -z "$$protos" ]; then echo "make proto: no .proto files yet"; exit 0; fi; \
	GOBIN=$(CURDIR)/bin $(GO) install $(PROTOC_GEN_GO) && \
	GOBIN=$(CURDIR)/bin $(GO) install $(PROTOC_GEN_GO_GRPC) && \
	protoc -I proto -I /usr/include --plugin=protoc-gen-go=bin/protoc-gen-go --plugin=protoc-gen-go-grpc=bin/protoc-gen-go-grpc \
	  --go_out=proto --go_opt=paths=source_relative \
	  --go-grpc_out=proto --go-grpc_opt=paths=source_relative $$protos

## bench: benchmarks: signatures/s through pkcs11/ vs bare miekg calls, AES-GCM,
## PKI-AUTH sessions/s through a running gateway with a warm OCSP cache,
## certificates/s through the issuance pipeline vs raw x509.CreateCertificate
bench: deps
	CGO_ENABLED=1 $(GO) test -run '^$$' -bench . -benchtime 3s -count 3 ./pkcs11/
	CGO_ENABLED=1 $(GO) test -run '^$$' -bench . -benchtime 3s -count 3 ./server/
	CGO_ENABLED=1 $(GO) test -run '^$$' -bench . -benchtime 2s -count 3 ./issuance/
	CGO_ENABLED=1 $(GO) test -run '^$$' -bench . -benchtime 2s -count 3 ./activation/pfx/
	CGO_ENABLED=1 $(GO) test -run '^$$' -bench . -benchtime 1s -count 3 ./activation/code/
	$(MAKE) bench-enroll

## bench-enroll: full enrollments at c = 16 and c = 64 (SQLite, in process)
bench-enroll: build
	$(BIN) bench enroll --device protocol --concurrency 16 --duration 10s
	$(BIN) bench enroll --device protocol --concurrency 64 --duration 10s

## fuzz: run each fuzz target briefly (FUZZTIME=30s by default)
FUZZTIME ?= 30s
fuzz:
	$(GO) test -run '^$$' -fuzz FuzzParseURI -fuzztime $(FUZZTIME) ./pkcs11/
	$(GO) test -run '^$$' -fuzz FuzzParseFASCN -fuzztime $(FUZZTIME) ./piv/
	$(GO) test -run '^$$' -fuzz FuzzParseSAN -fuzztime $(FUZZTIME) ./piv/
	$(GO) test -run '^$$' -fuzz FuzzIdentityFromCertificate -fuzztime $(FUZZTIME) ./piv/
	$(GO) test -run '^$$' -fuzz FuzzReadIDP -fuzztime $(FUZZTIME) ./piv/
	$(GO) test -run '^$$' -fuzz FuzzDNSubtrees -fuzztime $(FUZZTIME) ./piv/
	$(GO) test -run '^$$' -fuzz FuzzParsePayload -fuzztime $(FUZZTIME) ./activation/code/
	$(GO) test -run '^$$' -fuzz FuzzCheckWebhook -fuzztime $(FUZZTIME) ./server/
	$(GO) test -run '^$$' -fuzz FuzzCheckManifest -fuzztime $(FUZZTIME) ./activation/code/
	$(GO) test -run '^$$' -fuzz FuzzDecode -fuzztime $(FUZZTIME) ./activation/pfx/
	$(GO) test -run '^$$' -fuzz FuzzSafeContents -fuzztime $(FUZZTIME) ./activation/pfx/
	$(GO) test -run '^$$' -fuzz FuzzAuthSafe -fuzztime $(FUZZTIME) ./activation/pfx/
	$(GO) test -run '^$$' -fuzz FuzzKeyDescription -fuzztime $(FUZZTIME) ./activation/attest/
	$(GO) test -run '^$$' -fuzz FuzzOCSPRequest -fuzztime $(FUZZTIME) ./issuance/
	$(GO) test -run '^$$' -fuzz FuzzParseCommand -fuzztime $(FUZZTIME) ./hsm-sim/
	$(GO) test -run '^$$' -fuzz FuzzPIVTLV -fuzztime $(FUZZTIME) ./hsm-sim/

clean:
	rm -rf bin $(DEMO_DIR)
