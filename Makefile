# qwen-parity: logits parity between Swift mirrors of mlx-lm / mlx-vlm and golden tensors.
SHELL := /bin/bash
SWIFT ?= swift
GOLDEN ?= $(wildcard golden/*.h5)
CONFIGS := $(wildcard tools/configs/*.json)
VENV := tools/.venv
PYTHON := $(VENV)/bin/python
APT_PACKAGES := libopenblas-dev libhdf5-dev pkg-config
# Tests and the parity job share one optimised build: the mirrors' loops are ~80x slower
# unoptimised, and -enable-testing lets the tests reach internal helpers.
BUILD_FLAGS := -c release -Xswiftc -enable-testing

.PHONY: deps test parity golden venv build clean bench

## deps: install the system libraries (OpenBLAS, HDF5, pkg-config) with apt-get when missing
deps:
	@missing=""; for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing:$$missing"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$missing; \
	fi

## test: unit tests (optimised build)
test: deps
	$(SWIFT) test $(BUILD_FLAGS)

build: deps
	$(SWIFT) build $(BUILD_FLAGS) --product qwen-parity

## parity: release build, then every golden (or GOLDEN=FILE) through the Swift mirrors
parity: build
	@test -n "$(GOLDEN)" || { echo "no golden files: run 'make golden' or pass GOLDEN=FILE"; exit 1; }
	$$($(SWIFT) build $(BUILD_FLAGS) --show-bin-path)/qwen-parity check $(GOLDEN)

## golden: regenerate golden/*.h5 from the pinned reference packages (or CONFIG=FILE OUT=FILE)
golden: venv
ifdef CONFIG
	$(PYTHON) tools/make_golden.py --config $(CONFIG) --out $(or $(OUT),golden/$(basename $(notdir $(CONFIG))).h5)
else
	@for c in $(CONFIGS); do \
	  out=golden/$$(basename $$c .json).h5; echo "== $$c -> $$out"; \
	  $(PYTHON) tools/make_golden.py --config $$c --out $$out || exit 1; \
	done
endif

## bench: the Swift mirror against mlx-lm and torch on the Qwen3.5-0.8B shape (BENCH_ARGS=... for options)
BENCH_DATA := bench-data/qwen3.5-0.8b.h5
bench: build venv $(BENCH_DATA)
	$$($(SWIFT) build $(BUILD_FLAGS) --show-bin-path)/qwen-parity bench --data $(BENCH_DATA) $(BENCH_ARGS)

$(BENCH_DATA): tools/bench/qwen3.5-0.8b-text.json | venv
	$(PYTHON) tools/bench.py weights --config $< --out $@

venv: $(VENV)/.installed
$(VENV)/.installed: tools/requirements.txt
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q -r tools/requirements.txt
	touch $@

clean:
	rm -rf .build reports
