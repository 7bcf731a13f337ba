# Two commands set everything up on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
CONFIG ?= configs/default.py
WORKDIR ?= workdir/default

.PHONY: demo test test-slow test-all venv bench ablations pretrain-table clean

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

test: $(STAMP)
	$(PY) -m pytest -q --durations=15

test-slow: $(STAMP)  # pytest exits 5 when no test is marked slow: that is not a failure
	$(PY) -m pytest -q -m slow || test $$? -eq 5

test-all: $(STAMP)
	$(PY) -m pytest -q -m ''

bench: $(STAMP)
	$(PY) benchmarks/input_pipeline.py
	$(PY) benchmarks/llm.py
	$(PY) benchmarks/encoders.py --batch 4 --length 512 --steps 2
	$(PY) benchmarks/align_step.py

ablations: $(STAMP)  # configs/ablations.py: Tables 3/4, controls, text baselines (hours on 2 cores)
	for v in $$($(PY) -c "from configs import ablations; print(*ablations.VARIANTS)"); do \
	  $(PY) -m uqa_jax.main --config configs/ablations.py:$$v || exit 1; done

pretrain-table: $(STAMP)  # brief Stage 1 runs of all five encoders (~40 min on 2 cores)
	$(PY) benchmarks/pretrain_table.py

clean:
	rm -rf $(VENV) workdir
