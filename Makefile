# emovlm-kd: `make demo` and `make test` on a fresh Debian 12 machine (see README.md).
BUILD_DIR ?= build
BUILD_TYPE ?= Release
JOBS ?= $(shell nproc)
PREFIX ?= $(HOME)/.local
GENERATOR := $(shell command -v ninja >/dev/null 2>&1 && echo "-G Ninja")

# Debian packages the build needs (installed by `make deps` when missing).
DEB_PACKAGES := build-essential cmake ninja-build ccache pkg-config libgloo-dev \
  libtorch-dev libopenblas0-pthread \
  libjpeg62-turbo-dev libpng-dev libwebp-dev libutf8proc-dev \
  nlohmann-json3-dev libcli11-dev libcpp-httplib-dev libssl-dev \
  libgtest-dev libgmock-dev libbenchmark-dev \
  clang-14 libclang-rt-14-dev
# What `make test` needs beyond the build: Chromium for the web page's browser test (the node
# packages of tests/web come from npm, by its lock file), torchrun (python3-torch) for the
# tests that launch data-parallel runs as users do, and clang-format 14 for the format check.
TEST_DEB_PACKAGES := chromium python3-torch clang-format-14

# ccache across fresh clones: paths relative to the clone, PCH-friendly sloppiness.
export CCACHE_BASEDIR := $(CURDIR)
export CCACHE_SLOPPINESS := pch_defines,time_macros,include_file_mtime,include_file_ctime
export CCACHE_NOHASHDIR := 1

.PHONY: all deps test-deps configure build binary install test demo bench clean

all: build

# Installs the Debian packages named in $(1) that are missing.
define apt_install_missing
	@missing=""; for p in $(1); do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "install ok installed" || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
	  echo "installing:$$missing"; \
	  SUDO=""; [ "$$(id -u)" -eq 0 ] || SUDO=sudo; \
	  $$SUDO apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends $$missing; \
	fi
endef

deps:
	$(call apt_install_missing,$(DEB_PACKAGES))

# Chromium, and node with the packages of tests/web (npm ci from package-lock.json).
test-deps:
	$(call apt_install_missing,$(TEST_DEB_PACKAGES))
	@command -v npm >/dev/null 2>&1 || { \
	  SUDO=""; [ "$$(id -u)" -eq 0 ] || SUDO=sudo; \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends nodejs npm; }
	@if [ ! -f tests/web/node_modules/.package-lock.json ] || [ tests/web/package-lock.json -nt tests/web/node_modules/.package-lock.json ]; then \
	  cd tests/web && npm ci --no-audit --no-fund; \
	fi

$(BUILD_DIR)/CMakeCache.txt:
	cmake -S . -B $(BUILD_DIR) $(GENERATOR) -DCMAKE_BUILD_TYPE=$(BUILD_TYPE) $(CMAKE_ARGS)

configure: deps $(BUILD_DIR)/CMakeCache.txt

build: configure
	cmake --build $(BUILD_DIR) -j $(JOBS)

# The `emovlm` binary alone (not the tests, benchmarks and fuzzers `build` makes).
binary: configure
	cmake --build $(BUILD_DIR) -j $(JOBS) --target emovlm_cli

# Copies the binary to $(PREFIX)/bin (default ~/.local/bin, on PATH in Debian's default profile).
install: binary
	cmake --install $(BUILD_DIR) --prefix $(PREFIX)

test: build test-deps
	cd $(BUILD_DIR) && ctest --output-on-failure -j $(JOBS) -LE gpu

# The whole pipeline on built-in data with tiny models (see README.md).
demo: binary
	./$(BUILD_DIR)/emovlm demo --out demo-out

bench: build
	@for b in $(BUILD_DIR)/bench/bench_*; do echo "== $$b"; $$b; done

clean:
	rm -rf $(BUILD_DIR)
