"""sft.train end to end on a tiny random model: full fine-tuning and LoRA, output folder contents, bad input."""

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from seekhelp.protocol import render_agent_reply, render_slm_turn

ROOT = Path(__file__).resolve().parents[2]
SYSTEM = "You are the small on-device assistant. Think, ask the expert for general facts, then answer."


def _dialogue(i: int) -> list[dict]:
    city, country = [("Lyon", "France"), ("Porto", "Portugal"), ("Graz", "Austria"), ("Turku", "Finland")][i % 4]
    question = f"My friend number {i} lives in {city}. Which country does my friend live in?"
    if i % 2:  # answered alone
        turns = [{"role": "assistant", "content": render_slm_turn("I know this one.", "answer", country)}]
    else:
        turns = [{"role": "assistant", "content": render_slm_turn("I should ask.", "message", f"Where is {city}?")},
                 {"role": "user", "content": render_agent_reply("information", f"{city} is in {country}.")},
                 {"role": "assistant", "content": render_slm_turn("Now I know.", "answer", country)}]
    return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": question}, *turns]


@pytest.fixture
def dataset_dir(tmp_path) -> str:
    import datasets

    out = tmp_path / "dialogues"
    datasets.Dataset.from_dict({"messages": [_dialogue(i) for i in range(8)],
                                "trajectory_id": [f"t{i}" for i in range(8)]}).save_to_disk(str(out))
    (out / "provenance.json").write_text(json.dumps({"query": "SELECT id AS trajectory_id FROM scored",
                                                     "rows": 8, "run_ids": ["run-gen-1"]}))
    return str(out)


def _run(tiny_model_dir: str, dataset_dir: str, out: Path, *extra: str) -> Path:
    from sft.train import parse, train

    argv = ["--config", str(ROOT / "sft/recipes/smollm2-135m/demo.yaml"), "--model_name_or_path", tiny_model_dir,
            "--store", "", "--dataset_path", dataset_dir, "--output_dir", str(out), "--max_steps", "2",
            "--per_device_train_batch_size", "2", "--logging_steps", "1", "--disable_tqdm", "true",
            "--run_ids", "run-test-1", *extra]
    return train(*parse(argv))


def _check_folder(out: Path, base: str) -> dict:
    from transformers import AutoTokenizer
    from trl.chat_template_utils import has_generation_markers

    assert (out / "config.json").is_file() and (out / "model.safetensors").is_file()
    tok = AutoTokenizer.from_pretrained(out)
    assert has_generation_markers(tok.chat_template)
    assert has_generation_markers((out / "chat_template.jinja").read_text())
    recipe = yaml.safe_load((out / "recipe.yaml").read_text())
    assert recipe["output_dir"] == str(out) and recipe["max_steps"] == 2 and recipe["assistant_only_loss"] is True
    assert not any(k in recipe for k in ("hub_token", "hub_model_id_token"))
    card = (out / "README.md").read_text()
    for needle in ("## Base model", f"`{base}`", "run-gen-1", "run-test-1", "SELECT id AS trajectory_id",
                   "Loss masking", "assistant_only_loss", "Intended use", "Limitations", "Dialogues trained on: 8"):
        assert needle in card, needle
    metrics = json.loads((out / "train_metrics.json").read_text())
    assert metrics["global_step"] == 2 and math.isfinite(metrics["train_loss"]) and metrics["train_loss"] > 0
    return recipe


def test_full_fine_tuning(tiny_model_dir, dataset_dir, tmp_path):
    out = _run(tiny_model_dir, dataset_dir, tmp_path / "full")
    recipe = _check_folder(out, tiny_model_dir)
    assert recipe["use_peft"] is False
    assert not (out / "adapter").exists()


def test_lora_merged_and_adapters_kept(tiny_model_dir, dataset_dir, tmp_path):
    from transformers import AutoModelForCausalLM

    out = _run(tiny_model_dir, dataset_dir, tmp_path / "lora", "--use_peft", "true", "--lora_r", "4",
               "--lora_alpha", "8", "--lora_target_modules", "all-linear")
    recipe = _check_folder(out, tiny_model_dir)
    assert recipe["use_peft"] is True and recipe["lora_r"] == 4
    assert (out / "adapter" / "adapter_config.json").is_file()
    model = AutoModelForCausalLM.from_pretrained(out)  # a plain model: the adapters are merged in
    assert not any("lora" in name for name, _ in model.named_parameters())


def test_lora_adapter_only(tiny_model_dir, dataset_dir, tmp_path):
    from sft.train import parse, train

    out = tmp_path / "adapter-only"
    train(*parse(["--model_name_or_path", tiny_model_dir, "--dataset_path", dataset_dir, "--output_dir", str(out),
                  "--max_steps", "1", "--bf16", "false", "--activation_checkpointing", "false", "--report_to", "none",
                  "--dataloader_pin_memory", "false", "--use_peft", "true", "--lora_r", "2",
                  "--keep_adapter_only", "true", "--disable_tqdm", "true"]))
    assert (out / "adapter_config.json").is_file() and not (out / "model.safetensors").exists()
    assert "lora" in (out / "README.md").read_text().lower()


def _main_error(capsys, *argv: str) -> str:
    from sft.train import main

    capsys.readouterr()
    assert main(list(argv)) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 1, err
    return err[0]


@pytest.mark.parametrize("case", ["missing", "no_messages", "empty"])
def test_bad_dataset_is_one_line(case, tmp_path, tiny_model_dir, capsys):
    import datasets

    path = tmp_path / case
    if case == "no_messages":
        datasets.Dataset.from_dict({"text": ["hello"]}).save_to_disk(str(path))
    elif case == "empty":
        datasets.Dataset.from_dict({"messages": []}, features=datasets.Features(
            {"messages": [{"role": datasets.Value("string"), "content": datasets.Value("string")}]})
        ).save_to_disk(str(path))
    line = _main_error(capsys, "--model_name_or_path", tiny_model_dir, "--dataset_path", str(path),
                       "--output_dir", str(tmp_path / "out"), "--bf16", "false", "--activation_checkpointing", "false")
    assert str(path) in line and {"missing": "not a dataset folder", "no_messages": "no `messages` column",
                                  "empty": "empty"}[case] in line


def test_bad_recipe_key_exits_2_with_one_line(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("model_name_or_path: smollm2-135m\nlearning_rate: 1.0e-4\nlearnin_rate_typo: 3\n")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run([sys.executable, "-m", "sft.train", "--config", str(bad)], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert str(bad) in lines[0] and "learnin_rate_typo" in lines[0]


@pytest.mark.parametrize("recipe", sorted(str(p.relative_to(ROOT)) for p in (ROOT / "sft/recipes").glob("*/*.yaml")))
def test_shipped_recipes_parse(recipe):
    from sft.train import parse

    script, training, model = parse(["--config", str(ROOT / recipe), "--bf16", "false"])  # bf16 needs a GPU here
    assert training.assistant_only_loss and not training.packing and training.save_strategy.value in ("no", "steps")
    assert (ROOT / training.chat_template_path).is_file() and training.chat_template_path.endswith("generation.jinja")
    assert script.dataset_path and model.model_name_or_path and training.output_dir.startswith("data/models/sft/")
    if "qwen3" in recipe:
        assert model.dtype == "bfloat16" and not model.use_peft and training.activation_checkpointing
    if recipe.endswith("lora.yaml"):
        assert model.use_peft and model.lora_target_modules == "all-linear"
