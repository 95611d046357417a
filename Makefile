# ortserve — the two commands a newcomer needs are `make run` and `make test`; both install what
# they need first (tools/deps.sh: Debian packages, ONNX Runtime from npm, test models), idempotently.
#
#   make build    release build in build/release: the server, libraries, tests, benchmarks
#   make run      the fast path: installs only what serving needs (tools/deps.sh run), builds only
#                 build/release/ortserve (a build directory it configures is without tests and
#                 benchmarks until `make build` or `make test`), generates the demo models and
#                 serves them on 127.0.0.1:$(PORT); `make run PORT=8080` for another port
#   make test     build and run the whole suite, then again under ASan+UBSan (build/asan)
#   make container-test  build the Dockerfile with podman and check the running container from
#                 outside (tools/container_check.sh: ~3 minutes when nothing is cached; not part
#                 of `make test`, whose e2e_container then also checks the image; docs/DEPLOY.md)
#   make bench    build, run every benchmark (bench/run_all.py, ~15 minutes on 2 cores), then write
#                 docs/BENCHMARKS.md and docs/img/*.png; BENCH_ARGS="--only load --quick" runs a part
#   make memcheck the end-to-end server suite with every server under valgrind memcheck
#                 (tools/valgrind_e2e.sh, docs/RELIABILITY.md; ~20 minutes, not part of `make test`)
#   make install  build, then install into $(PREFIX) (default /usr/local), staged under $(DESTDIR)
#                 if set: bin/ortserve, lib/libortserve.*, headers, ortserve.pc, the CMake package,
#                 lib/ortserve/libonnxruntime.so.1 and the ortserve(1) man page (docs/DEPLOY.md)
#   make format   clang-format every C file
#   make test-arm64  cross-build for arm64 in build/arm64 and run the suite under qemu-user (a few
#                 minutes; not part of `make test`; docs/PORTABILITY.md)
#   make fuzz     build the libFuzzer targets with clang in build/fuzz and run each for FUZZ_SECONDS
#                 (60); FUZZ_TARGETS picks targets, FUZZ_ARGS adds libFuzzer flags (fuzz/README.md)

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
FUZZ_BUILD   ?= build/fuzz
FUZZ_SECONDS ?= 60
FUZZ_TARGETS ?= http_parse infer_json binary_split shm_register model_config pbtxt image_decode pipeline \
                grpc_decode grpc_conn
FUZZ_ARGS    ?=

.PHONY: all deps deps-run build build-server models run test test-release test-asan bench format clean \
        install deps-arm64 test-arm64 memcheck deps-fuzz fuzz deps-container container-test

all: build

deps:
	@tools/deps.sh test

deps-run:
	@tools/deps.sh run

$(BUILD)/build.ninja: CMakeLists.txt
	cmake -S . -B $(BUILD) -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo $(CMAKE_ARGS)

# A build directory that `make run` configured (marked by its file server-only) gets its tests and
# benchmarks back here.
build: deps $(BUILD)/build.ninja
	@if [ -e $(BUILD)/server-only ]; then \
	    cmake -S . -B $(BUILD) -DOSV_BUILD_TESTS=ON -DOSV_BUILD_BENCH=ON >/dev/null && rm $(BUILD)/server-only; fi
	cmake --build $(BUILD) -j $(JOBS)

# The server alone, for `make run`: the build profile's packages suffice (no cmocka: no tests).
build-server: deps-run
	@if [ ! -e $(BUILD)/build.ninja ]; then \
	    cmake -S . -B $(BUILD) -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DOSV_BUILD_TESTS=OFF \
	          -DOSV_BUILD_BENCH=OFF $(CMAKE_ARGS) && touch $(BUILD)/server-only; fi
	cmake --build $(BUILD) -j $(JOBS) --target ortserve

models: deps-run
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

run: build-server models
	@tools/demo_repo.sh var/demo-repo $(MODELS) third_party/models $(PORT)
	$(BUILD)/ortserve serve --model-repository var/demo-repo --host 127.0.0.1 --port $(PORT)

BENCH_ARGS ?=
bench: build models
	@tools/deps.sh bench
	$(PY) bench/run_all.py --build $(BUILD) $(BENCH_ARGS)

memcheck: build models
	@tools/deps.sh memcheck
	tools/valgrind_e2e.sh -j $(JOBS)

# DESTDIR is passed explicitly: cmake --install reads it from the environment only. ldconfig refreshes
# the loader cache for libortserve.so.0 on a real (unstaged) install as root.
install: build
	DESTDIR="$(DESTDIR)" cmake --install $(BUILD) --prefix "$(PREFIX)"
	@if [ -z "$(DESTDIR)" ] && [ "$$(id -u)" = 0 ] && command -v ldconfig >/dev/null; then ldconfig; fi

format:
	clang-format -i $$(git ls-files '*.c' '*.h')

clean:
	rm -rf build var

# --- the container image, built and run for real (tools/container_check.sh, docs/DEPLOY.md): podman
# (or ENGINE=docker), base images made with debootstrap when no registry is reachable. Minutes, and
# a network for the image's own apt and npm steps: not part of `make test`.
deps-container:
	@tools/deps.sh container

# The image is built here; tests/e2e/test_container.py runs it (tools/container_check.sh check and
# size), which it does in `make test` too whenever podman and the image are present.
container-test: deps-container build models
	tools/container_check.sh base
	tools/container_check.sh build
	OSV_CONTAINER_CHECK=1 ctest --test-dir $(BUILD) --output-on-failure -R '^e2e_container$$'

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

# --- fuzzing (fuzz/README.md): libFuzzer + ASan + UBSan, clang only, its own build directory. The
# corpora are also replayed by `make test` (ctest fuzz_replay_*), with the normal compiler.
deps-fuzz:
	@tools/deps.sh fuzz

$(FUZZ_BUILD)/build.ninja: CMakeLists.txt fuzz/CMakeLists.txt
	cmake -S . -B $(FUZZ_BUILD) -G Ninja -DCMAKE_C_COMPILER=clang -DCMAKE_BUILD_TYPE=RelWithDebInfo \
	      -DOSV_BUILD_FUZZ=ON -DOSV_BUILD_TESTS=OFF -DOSV_BUILD_BENCH=OFF -DOSV_SANITIZE=address,undefined \
	      $(CMAKE_ARGS)

fuzz: deps-fuzz models
	@$(MAKE) --no-print-directory $(FUZZ_BUILD)/build.ninja
	cmake --build $(FUZZ_BUILD) -j $(JOBS) --target fuzz_all
	FUZZ_BUILD=$(FUZZ_BUILD) FUZZ_SECONDS=$(FUZZ_SECONDS) fuzz/run.sh $(FUZZ_TARGETS) -- $(FUZZ_ARGS)
