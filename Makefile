# ortserve — the two commands a newcomer needs are `make run` and `make test`; both install what
# they need first (tools/deps.sh: Debian packages, ONNX Runtime from npm, test models), idempotently.
#
#   make build    release build in build/release
#   make run      build, generate the demo models, serve them on 127.0.0.1:$(PORT)
#   make test     build and run the whole suite, then again under ASan+UBSan (build/asan)
#   make bench    build and run the benchmarks (prints figures; see docs/BENCHMARKS.md)
#   make format   clang-format every C file

BUILD      ?= build/release
ASAN_BUILD ?= build/asan
PORT       ?= 8000
CMAKE_ARGS ?=
PY         := /usr/bin/python3
MODELS     := var/models
JOBS       ?= $(shell nproc)

.PHONY: all deps build models run test test-release test-asan bench format clean

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

format:
	clang-format -i $$(git ls-files '*.c' '*.h')

clean:
	rm -rf build var
