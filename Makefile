# Thin wrapper over CMake. See README.md.
#   make            build build/meshgate
#   make run        install deps, build, start meshgate on examples/demo.yaml + demo upstream
#   make test       install deps, build, run unit + fuzz-replay + integration tests
#   make SANITIZE=1 build with ASan+UBSan into build-san/
#   make fuzz       build libFuzzer targets (clang) into build-fuzz/ and run each for FUZZ_SECONDS
#   make bench      wrk: meshgate vs nginx vs HAProxy
JOBS ?= $(shell nproc)
ifeq ($(SANITIZE),1)
BUILD ?= build-san
CMAKE_FLAGS += -DMG_SANITIZE=ON
else
BUILD ?= build
endif
FUZZ_SECONDS ?= 60

.PHONY: all build deps run test unit fuzz bench clean

all: build

build:
	@cmake -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=RelWithDebInfo $(CMAKE_FLAGS) >/dev/null
	@cmake --build $(BUILD) -j $(JOBS)

deps:
	@bash scripts/deps.sh

run: deps build
	@bash scripts/run-demo.sh

test: deps
	@bash scripts/test.sh

unit: build
	@cd $(BUILD) && ctest --output-on-failure

fuzz: deps
	@CC=clang cmake -S . -B build-fuzz -DMG_FUZZ=ON -DMG_TESTS=OFF >/dev/null
	@cmake --build build-fuzz -j $(JOBS)
	@bash scripts/fuzz.sh build-fuzz $(FUZZ_SECONDS)

bench: deps build
	@BENCH=proxies bash bench/run.sh
	@BENCH=routes ROUNDS=3 bash bench/run.sh
	@BENCH=resilience ROUNDS=3 bash bench/run.sh
	@BENCH=ratelimit ROUNDS=3 bash bench/run.sh
	@BENCH=registry ROUNDS=5 bash bench/run.sh

clean:
	rm -rf build build-san build-fuzz
