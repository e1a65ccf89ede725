# qwen-parity: logits parity between Swift mirrors of mlx-lm / mlx-vlm and golden tensors.
SHELL := /bin/bash
SWIFT ?= swift
# Committed checkpoint directories, NAME:KIND -> golden/checkpoints/NAME-KIND/ (from
# tools/configs/checkpoints/NAME.json; KIND bf16 or q4 (mlx-lm's conversion) or hf (the published layout, by
# transformers' own save_pretrained), see tools/make_golden.py --help).
CHECKPOINTS := tiny-checkpoint:q4 tiny-checkpoint:bf16 tiny-published:hf
GOLDEN ?= $(wildcard golden/*.h5) $(wildcard golden/checkpoints/*/parity.h5)
CONFIGS := $(wildcard tools/configs/*.json)
# Why a regeneration changes goldens; required when one does (make golden REASON="...").
REASON_ARG := $(if $(REASON),--reason "$(REASON)")
VENV := tools/.venv
PYTHON := $(VENV)/bin/python
APT_PACKAGES := libopenblas-dev libhdf5-dev pkg-config
# Tests and the parity job share one optimised build: the mirrors' loops are ~80x slower
# unoptimised, and -enable-testing lets the tests reach internal helpers.
BUILD_FLAGS := -c release -Xswiftc -enable-testing

.PHONY: deps test parity golden golden-check golden-big test-tools venv venv-torch build clean bench sweep

## deps: install the system libraries (OpenBLAS, HDF5, pkg-config) with apt-get when missing
deps:
	@missing=""; for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing:$$missing"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$missing; \
	fi

## test: all tests (optimised build), the bad-input corpus and the kill tests included. The
## golden generator's kill test needs tools/.venv: made here when PyPI is reachable, else that
## one test is skipped and says why.
test: deps
	@$(MAKE) --no-print-directory venv || echo "warning: could not create $(VENV); the generator kill test will be skipped"
	$(SWIFT) test $(BUILD_FLAGS)

build: deps
	$(SWIFT) build $(BUILD_FLAGS) --product qwen-parity

## parity: release build, then every golden (or GOLDEN=FILE) through the Swift mirrors:
## golden/*.h5 and the checkpoint directories' golden/checkpoints/*/parity.h5
parity: build
	@test -n "$(GOLDEN)" || { echo "no golden files: run 'make golden' or pass GOLDEN=FILE"; exit 1; }
	$$($(SWIFT) build $(BUILD_FLAGS) --show-bin-path)/qwen-parity check $(GOLDEN)

## golden: regenerate golden/*.h5 and golden/checkpoints/* from the pinned reference packages
## (or one golden: CONFIG=FILE [OUT=FILE] [SEED=N] [ORACLE=off]); a change needs REASON="..." (kept in
## history_json). Random-weight goldens hold the float64 oracle (torch, installed by venv-torch)
## unless ORACLE=off (then oracle-error-ratio has nothing to run on: NOT RUN, a coverage gap).
## CANDIDATE=adapter.py [CANDIDATE_PYTHON=PY] adds a user's implementation as the path
## candidate:<name> (tools/golden_candidates.py); such goldens go to reports/candidates/, never golden/
CANDIDATE_OUT = reports/candidates/$(basename $(notdir $(CONFIG)))-$(basename $(notdir $(CANDIDATE))).h5
golden: venv-torch
ifdef CANDIDATE
	@test -n "$(CONFIG)" || { echo "CANDIDATE needs CONFIG=tools/configs/NAME.json"; exit 2; }
	@mkdir -p $(dir $(or $(OUT),$(CANDIDATE_OUT)))
	$(PYTHON) tools/make_golden.py --config $(CONFIG) --out $(or $(OUT),$(CANDIDATE_OUT)) --candidate $(CANDIDATE) \
	  $(if $(CANDIDATE_PYTHON),--candidate-python $(CANDIDATE_PYTHON)) $(if $(SEED),--seed $(SEED)) $(REASON_ARG)
else ifdef CONFIG
	$(PYTHON) tools/make_golden.py --config $(CONFIG) --out $(or $(OUT),golden/$(basename $(notdir $(CONFIG))).h5) \
	  $(if $(SEED),--seed $(SEED)) $(if $(ORACLE),--oracle $(ORACLE)) $(REASON_ARG)
else
	@for c in $(CONFIGS); do \
	  out=golden/$$(basename $$c .json).h5; echo "== $$c -> $$out"; \
	  $(PYTHON) tools/make_golden.py --config $$c --out $$out $(REASON_ARG) || exit 1; \
	done
	@mkdir -p golden/checkpoints; for spec in $(CHECKPOINTS); do \
	  name=$${spec%%:*}; kind=$${spec##*:}; out=golden/checkpoints/$$name-$$kind; \
	  echo "== tools/configs/checkpoints/$$name.json ($$kind) -> $$out/"; \
	  $(PYTHON) tools/make_golden.py --config tools/configs/checkpoints/$$name.json --make-checkpoint $$kind \
	    --out $$out $(REASON_ARG) || exit 1; \
	done
endif

## golden-check: regenerate every committed golden in a temp folder and compare bit for bit
golden-check: venv-torch
	$(PYTHON) tools/golden_check.py --checkpoints "$(CHECKPOINTS)"

## golden-big: a checkpoint of a published shape made the way real ones are, and its golden, in
## reports/big/ (git-ignored, never committed): SHAPE=0.8b|9b|35b-a3b (tools/configs/published/),
## KIND=mlx-q4|mlx-q8|mlx-bf16. Three processes: the published layout written shard by shard,
## mlx-vlm's convert of it (the layout is then removed unless KEEP_PUBLISHED=1), the golden
## (--from-model; the oracle when it fits: --oracle auto); each one's wall time and peak RSS are printed at the end.
SHAPE ?= 0.8b
KIND ?= mlx-q4
BIG := reports/big/qwen3.5-$(SHAPE)
BIG_TIME = /usr/bin/time -f "%e s, peak RSS %M KiB" -o
golden-big: venv-torch
	@test -f tools/configs/published/qwen3.5-$(SHAPE).json || { echo "SHAPE: one of 0.8b, 9b, 35b-a3b (tools/configs/published/qwen3.5-SHAPE.json)"; exit 2; }
	@case "$(KIND)" in mlx-q4|mlx-q8|mlx-bf16) ;; *) echo "KIND: one of mlx-q4, mlx-q8, mlx-bf16"; exit 2;; esac
	@test -x /usr/bin/time || { echo "golden-big measures with /usr/bin/time: apt-get install time"; exit 2; }
	@mkdir -p reports/big && rm -rf $(BIG)-published $(BIG)-$(KIND) $(BIG)-$(KIND).times
	$(BIG_TIME) $(BIG)-$(KIND).times.1 $(PYTHON) tools/big_checkpoint.py published \
	  --config tools/configs/published/qwen3.5-$(SHAPE).json --out $(BIG)-published
	$(BIG_TIME) $(BIG)-$(KIND).times.2 $(PYTHON) tools/big_checkpoint.py convert --kind $(KIND) \
	  --src $(BIG)-published --out $(BIG)-$(KIND)
	$(if $(KEEP_PUBLISHED),,rm -rf $(BIG)-published)
	$(BIG_TIME) $(BIG)-$(KIND).times.3 $(PYTHON) tools/make_golden.py --from-model $(BIG)-$(KIND) \
	  --out $(BIG)-$(KIND)/parity.h5 --reason "make golden-big"
	@echo "golden-big $(SHAPE) $(KIND): $(BIG)-$(KIND)/"; \
	for i in 1 2 3; do case $$i in 1) s="write the published layout";; 2) s="convert (mlx-vlm)";; 3) s="golden";; esac; \
	  printf '  %-28s %s\n' "$$s" "$$(tail -1 $(BIG)-$(KIND).times.$$i)"; done; rm -f $(BIG)-$(KIND).times.*

## test-tools: tests of the golden tools (review/history, freshness check, atomic writes, configs:
## refused ones, the config forms, library findings)
test-tools: venv-torch
	$(PYTHON) -m unittest discover -s tools -p "test_*.py" -v

## sweep: N random valid configs of the whole family (default N=6 SEED=1, what CI runs; N=50 is
## the full proof), each a golden in a temp folder then qwen-parity check, one row per config;
## failing configs are saved in reports/sweep/ with their reproduce commands. SWEEP_ARGS=... for
## more (tools/sweep.py --help)
sweep: build venv
	$(PYTHON) tools/sweep.py --n $(or $(N),6) --seed $(or $(SEED),1) \
	  --checker $$($(SWIFT) build $(BUILD_FLAGS) --show-bin-path)/qwen-parity $(SWEEP_ARGS)

## bench: the Swift mirror against mlx-lm and torch on the Qwen3.5-0.8B shape (BENCH_ARGS=... for options);
## installs the CPU-only torch and transformers (venv-torch) when missing, for the torch engine.
## Q4_DIR=DIR adds the q4 engines on that quantized model directory (README: Benchmark)
BENCH_DATA := bench-data/qwen3.5-0.8b.h5
bench: build venv-torch $(BENCH_DATA)
	$$($(SWIFT) build $(BUILD_FLAGS) --show-bin-path)/qwen-parity bench --data $(BENCH_DATA) $(if $(Q4_DIR),--q4-dir $(Q4_DIR)) $(BENCH_ARGS)

$(BENCH_DATA): tools/bench/qwen3.5-0.8b-text.json | venv
	$(PYTHON) tools/bench.py weights --config $< --out $@

venv: $(VENV)/.installed
$(VENV)/.installed: tools/requirements.txt
	python3 -m venv $(VENV)
	@# uv (from PyPI) downloads in parallel: about 10 s for the pinned set, where pip alone takes
	@# 1.5-3 min on this network. pip remains the fallback; both install the same pins.
	$(VENV)/bin/pip install -q uv && $(if $(PIP_CERT),SSL_CERT_FILE=$(PIP_CERT)) \
	  $(VENV)/bin/uv pip install -q --python $(VENV)/bin/python -r tools/requirements.txt \
	  || $(VENV)/bin/pip install -q -r tools/requirements.txt
	touch $@

## venv-torch: tools/.venv plus torch (CPU-only build) and transformers, pinned in
## tools/requirements-torch.txt. Only the float64 oracle (make golden, make golden-check) and
## the bench's torch engine need them; make test and make parity never do.
venv-torch: $(VENV)/.torch-installed
$(VENV)/.torch-installed: $(VENV)/.installed tools/requirements-torch.txt
	@# torch's CPU-only wheel comes from pip's configured find-links, which uv does not read:
	@# they are passed on. uv takes about 20 s here, pip about 95 s; both install the same pins.
	links=$$($(VENV)/bin/pip config get global.find-links 2>/dev/null || true); \
	$(if $(PIP_CERT),SSL_CERT_FILE=$(PIP_CERT)) $(VENV)/bin/uv pip install -q --python $(VENV)/bin/python \
	  $${links:+--find-links "$$links"} -r tools/requirements-torch.txt \
	  || $(VENV)/bin/pip install -q -r tools/requirements-torch.txt
	touch $@

clean:
	rm -rf .build reports
