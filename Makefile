# Two commands: `make run` and `make test`. Each creates .venv when missing.
# torch is installed first and pinned: torch==2.13.0 is the CPU build on CPU
# machines, and pinning it keeps any later requirement from pulling a CUDA build.
VENV        ?= .venv
PYTHON      ?= python3
TORCH_SPEC  ?= torch==2.13.0
CONFIG      ?= experiments/configs/quick.yaml
PY          := $(VENV)/bin/python
STAMP       := $(VENV)/.rl-align-installed

.PHONY: run test venv bench clean

venv: $(STAMP)

$(STAMP): setup.cfg pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "$(TORCH_SPEC)"
	DS_BUILD_OPS=0 $(PY) -m pip install -q -e '.[test]'
	@touch $(STAMP)

run: $(STAMP)
	$(VENV)/bin/rl-align run $(CONFIG)

test: $(STAMP)
	$(PY) -m pytest -q

bench: $(STAMP)
	$(PY) benchmarks/bench_sid_scale.py

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
