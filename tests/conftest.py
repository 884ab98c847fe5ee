"""Shared fixtures: offline everywhere, a tiny random model for fast tests, the embedded model for integration."""

import os

import pytest

# Tests never reach the Hub, whatever the calling shell says (the Makefile no longer exports offline mode globally:
# GPU targets and `make push` need the Hub).
os.environ.update(HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session")
def smollm2_dir() -> str:
    """The embedded SmolLM2-135M-Instruct, prepared once into the cache folder."""
    from seekhelp import models

    return str(models.prepare("smollm2-135m"))


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory, smollm2_dir) -> str:
    """A tiny random Llama with SmolLM2's tokenizer and chat template: fast, real code paths, meaningless text."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    out = tmp_path_factory.mktemp("tiny-model")
    tok = AutoTokenizer.from_pretrained(smollm2_dir)
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=2048,
                      bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
                      tie_word_embeddings=True)
    LlamaForCausalLM(cfg).save_pretrained(out)
    tok.save_pretrained(out)
    return str(out)


def pytest_report_header(config):
    """Which openai SDK and HTTP libraries the run uses (`make test-compat` runs the client tests on two ends)."""
    from importlib import metadata

    def version(name: str) -> str:
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            return "-"

    import openai

    return f"openai {openai.__version__} (httpx {version('httpx')}, httpx2 {version('httpx2')})"
