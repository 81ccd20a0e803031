# Two commands do all set-up on a fresh Debian machine with Go:
#   make run    builds and starts the gateway on its embedded default config
#   make test   installs what the tests need, then runs them all
# Run `make help` for the rest.

GO       ?= go
BIN      := bin/gateway
CACHE    := $(CURDIR)/.cache
PROMTOOL := $(CACHE)/bin/promtool
KUBECTL  := $(CACHE)/bin/kubectl
ARGS     ?=
FUZZTIME ?= 30s
STATICCHECK := honnef.co/go/tools/cmd/staticcheck@v0.8.2
DEADCODE    := golang.org/x/tools/cmd/deadcode@v0.45.0

.PHONY: help run build web test test-deps packages lint fuzz bench load docker clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

run: build ## build and start the gateway (extra flags: make run ARGS="--listen 127.0.0.1:9000")
	./$(BIN) $(ARGS)

build: web ## build bin/gateway, with the web terminal
	$(GO) build -trimpath -o $(BIN) ./cmd/gateway

# The web terminal: npm ci (versions pinned in package-lock.json), then
# esbuild bundles src/ into dist/, which the binary embeds.
WEB_SRC := $(wildcard web/src/*) web/package.json web/package-lock.json web/build.mjs
web: web/dist/index.html ## build the web terminal (npm ci + esbuild)

web/dist/index.html: $(WEB_SRC)
	@if ! command -v npm >/dev/null; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    echo "installing npm"; apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq npm; \
	  else \
	    echo "npm is not installed: building without the web terminal (apt-get install npm, then make build)"; exit 0; \
	  fi; \
	fi; \
	cd web && npm ci --no-audit --no-fund --loglevel=error && npm run build

test: test-deps web ## install test tools, build the page, then vet and run every test with -race
	$(GO) vet ./...
	GATEWAY_REQUIRE_TOOLS=1 PROMTOOL=$(PROMTOOL) KUBECTL=$(KUBECTL) $(GO) test -race -count=1 -timeout 15m ./...

# Tools the tests use, installed by package name. promtool comes out of
# Debian's prometheus package without installing it (no daemon is started).
# Debian packages the tests need, as command:package: network namespaces,
# the browser for the web terminal's tests, npm to build the page.
TEST_PACKAGES := ip:iproute2 chromium:chromium npm:npm vim:vim asciinema:asciinema haproxy:haproxy

test-deps: $(PROMTOOL) $(KUBECTL) packages

packages:
	@missing=""; for cp in $(TEST_PACKAGES); do \
	  command -v $${cp%%:*} >/dev/null 2>&1 || missing="$$missing $${cp#*:}"; \
	done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    echo "installing$$missing"; apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; \
	  else echo "tests that need$$missing will skip: run make test as root, or apt-get install$$missing"; fi; \
	fi

$(PROMTOOL):
	@mkdir -p $(CACHE)/deb $(CACHE)/bin
	cd $(CACHE)/deb && (apt-get download prometheus || (apt-get update -qq && apt-get download prometheus))
	dpkg-deb -x $(CACHE)/deb/prometheus_*.deb $(CACHE)/deb/root
	cp $(CACHE)/deb/root/usr/bin/promtool $(PROMTOOL)
	rm -rf $(CACHE)/deb
	$(PROMTOOL) --version

# kubectl itself, from the module proxy (tools/kubectl pins k8s.io/kubectl),
# with its version stamped as kubernetes' own build stamps it. Built once
# (about two minutes), then kept until tools/kubectl changes.
KUBECTL_VERSION := v1.37.2
KUBECTL_LDFLAGS := $(foreach p,k8s.io/client-go/pkg/version k8s.io/component-base/version,\
  -X $(p).gitVersion=$(KUBECTL_VERSION) -X $(p).gitMajor=1 -X $(p).gitMinor=37 -X $(p).gitTreeState=clean)

$(KUBECTL): tools/kubectl/go.mod tools/kubectl/go.sum tools/kubectl/main.go
	@mkdir -p $(CACHE)/bin
	cd tools/kubectl && $(GO) build -trimpath -ldflags "$(KUBECTL_LDFLAGS)" -o $(KUBECTL) .
	$(KUBECTL) version --client

lint: ## gofmt, go vet, staticcheck and deadcode (code no command reaches; test helpers aside)
	@test -z "$$(gofmt -l .)" || { echo "gofmt needed:"; gofmt -l .; exit 1; }
	$(GO) vet ./...
	$(GO) run $(STATICCHECK) ./...
	@dead=$$($(GO) run $(DEADCODE) ./... | grep -Ev '^internal/(proctest|tooltest)/'); \
	  test -z "$$dead" || { echo "dead code:"; echo "$$dead"; exit 1; }

fuzz: ## run every fuzz target for FUZZTIME each (default 30s)
	@for pkg in $$($(GO) list ./...); do \
	  for f in $$($(GO) test -list '^Fuzz' $$pkg | grep '^Fuzz'); do \
	    echo "== $$pkg $$f"; $(GO) test -run '^$$' -fuzz "^$$f$$" -fuzztime $(FUZZTIME) $$pkg || exit 1; \
	  done; \
	done

bench: ## run the Go benchmarks
	$(GO) test -run '^$$' -bench . -benchmem ./...

load: build ## run the load tool against a gateway it starts (see docs/performance.md)
	$(GO) run ./bench/gwload -gateway ./$(BIN)

docker: ## build the container image
	docker build -t gateway .

clean: ## remove build output and downloaded tools
	rm -rf bin $(CACHE) web/node_modules
	find web/dist -mindepth 1 ! -name .keep -delete
