# ortserve — the two commands a newcomer needs are `make run` and `make test`; both install what
# they need first (tools/deps.sh: Debian packages, ONNX Runtime from npm, test models), idempotently.
#
#   make build    release build in build/release
#   make run      build, generate the demo models, serve them on 127.0.0.1:$(PORT)
#   make test     build and run the whole suite, then again under ASan+UBSan (build/asan)
#   make bench    build and run the benchmarks (prints figures; see docs/BENCHMARKS.md)
#   make install  build, then install into $(PREFIX) (default /usr/local), staged under $(DESTDIR)
#                 if set: bin/ortserve, lib/libortserve.*, headers, ortserve.pc, the CMake package,
#                 lib/ortserve/libonnxruntime.so.1 and the ortserve(1) man page (docs/DEPLOY.md)
#   make format   clang-format every C file
#   make test-arm64  cross-build for arm64 in build/arm64 and run the suite under qemu-user (a few
#                 minutes; not part of `make test`; docs/PORTABILITY.md)

BUILD      ?= build/release
ASAN_BUILD ?= build/asan
PORT       ?= 8000
CMAKE_ARGS ?=
PY         := /usr/bin/python3
MODELS     := var/models
JOBS       ?= $(shell nproc)
PREFIX     ?= /usr/local
DESTDIR    ?=
ARM64_BUILD ?= build/arm64
ARM64_CMAKE_ARGS ?=
# Two end-to-end tests assert host-speed timing and qemu-user's /proc/self/stat (docs/PORTABILITY.md):
# skipped under emulation; `make test-arm64 ARM64_CTEST_ARGS=` runs them too.
ARM64_CTEST_ARGS ?= -E '^(e2e_server_lifecycle|e2e_obs_metrics)$$'

.PHONY: all deps build models run test test-release test-asan bench format clean install \
        deps-arm64 test-arm64

all: build

deps:
	@tools/deps.sh test

$(BUILD)/build.ninja: CMakeLists.txt
	cmake -S . -B $(BUILD) -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo $(CMAKE_ARGS)

build: deps $(BUILD)/build.ninja
	cmake --build $(BUILD) -j $(JOBS)

models: deps
	@$(PY) tools/gen_models.py --out $(MODELS)

test-release: build models
	ctest --test-dir $(BUILD) --output-on-failure -j $(JOBS)

$(ASAN_BUILD)/build.ninja: CMakeLists.txt
	cmake -S . -B $(ASAN_BUILD) -G Ninja -DCMAKE_BUILD_TYPE=Debug -DOSV_SANITIZE=address,undefined \
	      -DOSV_BUILD_BENCH=OFF $(CMAKE_ARGS)

test-asan: deps models $(ASAN_BUILD)/build.ninja
	cmake --build $(ASAN_BUILD) -j $(JOBS)
	ctest --test-dir $(ASAN_BUILD) --output-on-failure -j $(JOBS)

test: test-release test-asan

run: build models
	@tools/demo_repo.sh var/demo-repo $(MODELS)
	$(BUILD)/ortserve serve --model-repository var/demo-repo --host 127.0.0.1 --port $(PORT)

bench: build models
	@tools/deps.sh bench
	$(BUILD)/bench/core_run

# DESTDIR is passed explicitly: cmake --install reads it from the environment only. ldconfig refreshes
# the loader cache for libortserve.so.0 on a real (unstaged) install as root.
install: build
	DESTDIR="$(DESTDIR)" cmake --install $(BUILD) --prefix "$(PREFIX)"
	@if [ -z "$(DESTDIR)" ] && [ "$$(id -u)" = 0 ] && command -v ldconfig >/dev/null; then ldconfig; fi

format:
	clang-format -i $$(git ls-files '*.c' '*.h')

clean:
	rm -rf build var

# --- arm64: cross-built with Debian's aarch64 toolchain against the official arm64 ORT 1.30, tested
# under qemu-user (tools/arm64/qemu_env.sh explains what ORT needs there). Not part of `make test`.
deps-arm64:
	@tools/deps.sh arm64

$(ARM64_BUILD)/build.ninja: CMakeLists.txt cmake/aarch64-linux-gnu.cmake
	cmake -S . -B $(ARM64_BUILD) -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
	      -DCMAKE_TOOLCHAIN_FILE=$(CURDIR)/cmake/aarch64-linux-gnu.cmake \
	      -DONNXRUNTIME_ROOT=$(CURDIR)/third_party/onnxruntime-arm64 -DOSV_BUILD_BENCH=OFF $(ARM64_CMAKE_ARGS)

test-arm64: deps-arm64 models $(ARM64_BUILD)/build.ninja
	cmake --build $(ARM64_BUILD) -j $(JOBS)
	OSV_QEMU_PREFIX=$(CURDIR)/$(ARM64_BUILD)/qemu-prefix \
	    tools/arm64/qemu_env.sh ctest --test-dir $(ARM64_BUILD) --output-on-failure -j $(JOBS) $(ARM64_CTEST_ARGS)
