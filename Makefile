# Two commands set everything up on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
CONFIG ?= configs/default.py
WORKDIR ?= workdir/default

SEEDS ?= 0 1
JOBS ?= 2  # pytest-xdist workers; each test file runs whole in one worker (its module fixtures once)
PYTEST := $(PY) -m pytest -q -n $(JOBS) --dist loadfile

.PHONY: demo test test-unit test-integration test-slow test-all venv bench ablations full pretrain-table clean

$(STAMP): requirements.txt requirements-assets.txt requirements-test.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt -r requirements-test.txt
	$(PY) -m pip install --quiet --no-deps -r requirements-assets.txt
	$(PY) -m pip install --quiet --no-deps -e .
	touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(PY) -m uqa_jax.main --config $(CONFIG) --workdir $(WORKDIR)

test: $(STAMP)  # both tiers, slow tests left out (CI: .ci/run)
	$(PYTEST) --durations=15 tests/unit tests/integration

test-unit: $(STAMP)  # the inner loop: tests/unit mirrors the package tree (under 4 minutes on 2 cores)
	$(PYTEST) --durations=10 tests/unit

test-integration: $(STAMP)  # stage runs, subprocesses, several processes
	$(PYTEST) --durations=15 tests/integration

test-slow: $(STAMP)  # pytest exits 5 when no test is marked slow: that is not a failure
	$(PY) -m pytest -q -m slow tests/unit tests/integration || test $$? -eq 5  # one at a time: several start 8-device processes

test-all: $(STAMP)
	$(PYTEST) -m '' tests/unit tests/integration

bench: $(STAMP)  # every benchmark, tables printed, JSON under benchmarks/results/ (~14 min on 2 cores)
	$(PY) benchmarks/vs_torch.py --steps 3
	$(PY) benchmarks/profile_step.py --top 5
	$(PY) benchmarks/scan.py --profile 1024 --repeats 2
	$(PY) benchmarks/hstu_attention.py
	$(PY) benchmarks/llm.py --repeats 2 --no_cache_too 0
	$(PY) benchmarks/encoders.py --batch 2 --length 512 --steps 2
	$(PY) benchmarks/align_step.py
	$(PY) benchmarks/input_pipeline.py

ablations: $(STAMP)  # configs/ablations.py: Tables 3/4, controls, text baselines (hours on 2 cores)
	for v in $$($(PY) -c "from configs import ablations; print(*ablations.VARIANTS)"); do \
	  $(PY) -m uqa_jax.main --config configs/ablations.py:$$v || exit 1; done

full: $(STAMP)  # configs/default_full.py per seed: trained, its controls on a copy of its Stage 1, the report (~7 h per seed on 2 cores, 2026-12-06: trained ~85 min, zeros ~50 min, random_encoder and oracle_titles about as long (not timed with this recipe), text20 ~2.8 h)
	for s in $(SEEDS); do w=workdir/default_full; \
	  $(PY) -m uqa_jax.main --config configs/default_full.py:trained-s$$s \
	    --config.stages="('data', 'pretrain', 'align', 'evaluate', 'diagnose')" || exit 1; \
	  for v in $$($(PY) -c "from configs import default_full; print(*default_full.CONTROLS)"); do \
	    mkdir -p $$w-$$v-s$$s; for st in data pretrain; do \
	      [ -e $$w-$$v-s$$s/$$st ] || cp -r $$w-trained-s$$s/$$st $$w-$$v-s$$s/ || exit 1; done; \
	    $(PY) -m uqa_jax.main --config configs/default_full.py:$$v-s$$s \
	      --config.stages="('data', 'pretrain', 'align', 'evaluate')" || exit 1; done; \
	  $(PY) -m uqa_jax.main --config configs/default_full.py:trained-s$$s --config.stages="('report',)" || exit 1; \
	done
	[ $(words $(SEEDS)) -lt 2 ] || $(PY) -m uqa_jax.tools.seeds $(foreach s,$(SEEDS),workdir/default_full-trained-s$(s)) \
	  --out workdir/default_full-seeds.md

pretrain-table: $(STAMP)  # brief Stage 1 runs of all five encoders (~40 min on 2 cores)
	$(PY) benchmarks/pretrain_table.py

clean:
	rm -rf $(VENV) workdir
