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
            "--per_device_train_batch_size", "2", "--gradient_accumulation_steps", "1", "--logging_steps", "1",
            "--disable_tqdm", "true",
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
                   "Loss masking", "assistant_only_loss", "Intended use", "Limitations", "Training set: 8 dialogues",
                   "Seen in training: 4 examples (0.50 passes over the set)"):
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


def test_cpu_bf16_turns_on_autocast_only_where_asked_and_an_explicit_bf16_wins(monkeypatch):
    import torch

    from sft import SFTInputError
    from sft.train import parse

    demo = str(ROOT / "sft/recipes/smollm2-135m/demo.yaml")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: True)
    _, training, _ = parse(["--config", demo, "--cpu_bf16", "auto"])
    assert training.bf16 and training.use_cpu
    _, training, _ = parse(["--config", demo, "--cpu_bf16", "auto", "--bf16", "false"])
    assert not training.bf16 and not training.use_cpu
    _, training, _ = parse(["--config", demo, "--cpu_bf16", "false"])
    assert not training.bf16
    monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: False)  # an AVX2 laptop
    _, training, _ = parse(["--config", demo, "--cpu_bf16", "auto"])
    assert not training.bf16 and not training.use_cpu
    with pytest.raises(SFTInputError, match="cpu_bf16: 'maybe'"):
        parse(["--config", demo, "--cpu_bf16", "maybe"])


def test_cpu_bf16_trains(tiny_model_dir, dataset_dir, tmp_path):
    out = _run(tiny_model_dir, dataset_dir, tmp_path / "bf16", "--cpu_bf16", "true")
    recipe = _check_folder(out, tiny_model_dir)
    assert recipe["bf16"] is True
    import torch
    from safetensors.torch import load_file

    assert {t.dtype for t in load_file(str(out / "model.safetensors")).values()} == {torch.float32}


# ---------------------------------------------------------------- every key honoured: eval, loss scope, k-bit, push


@pytest.fixture
def parquet_dir(tmp_path) -> str:
    """An export in the layout seekhelp.store.export writes (data/train-*.parquet + provenance.json)."""
    import datasets

    from seekhelp.store.export import PARQUET_FILE

    out = tmp_path / "parquet-export"
    (out / PARQUET_FILE).parent.mkdir(parents=True)
    datasets.Dataset.from_dict({"messages": [_dialogue(i) for i in range(8)]}).to_parquet(str(out / PARQUET_FILE))
    (out / "provenance.json").write_text(json.dumps({"query": "SELECT 1", "rows": 8}))
    return str(out)


def _args(tiny_model_dir: str, dataset_dir: str, out: Path, *extra: str):
    from sft.train import parse

    return parse(["--config", str(ROOT / "sft/recipes/smollm2-135m/demo.yaml"), "--model_name_or_path",
                  tiny_model_dir, "--store", "", "--dataset_path", dataset_dir, "--output_dir", str(out),
                  "--max_steps", "2", "--per_device_train_batch_size", "2", "--logging_steps", "1",
                  "--disable_tqdm", "true", *extra])


def test_the_parquet_export_is_what_trl_and_datasets_read(parquet_dir):
    import datasets

    from sft.data import load_dialogues

    assert load_dialogues(parquet_dir).num_rows == 8
    as_trl_reads_it = datasets.load_dataset(parquet_dir)  # `trl sft --dataset_name <dir>`
    assert list(as_trl_reads_it) == ["train"] and as_trl_reads_it["train"][0]["messages"] == _dialogue(0)


def test_assistant_only_loss_false_is_honoured(tiny_model_dir, parquet_dir, tmp_path):
    from sft.train import build_trainer

    masked = build_trainer(*_args(tiny_model_dir, parquet_dir, tmp_path / "a"))
    full = build_trainer(*_args(tiny_model_dir, parquet_dir, tmp_path / "b", "--assistant_only_loss", "false"))
    ignored = [sum(t == -100 for t in row) for row in masked.train_dataset["labels"]]
    assert all(n > 0 for n in ignored)  # the system prompt, the question and the LLM replies are masked out
    assert all(-100 not in row for row in full.train_dataset["labels"]) and not full.args.assistant_only_loss


def test_eval_on_a_held_out_slice_and_on_a_second_export(tiny_model_dir, parquet_dir, dataset_dir, tmp_path):
    from sft.train import train

    out = train(*_args(tiny_model_dir, parquet_dir, tmp_path / "held", "--eval_strategy", "steps",
                       "--eval_steps", "1", "--eval_holdout", "2", "--per_device_eval_batch_size", "2"))
    metrics = json.loads((out / "train_metrics.json").read_text())
    assert math.isfinite(metrics["eval_loss"]) and "Training set: 6 dialogues" in (out / "README.md").read_text()
    from sft.train import build_trainer

    trainer = build_trainer(*_args(tiny_model_dir, parquet_dir, tmp_path / "two", "--eval_strategy", "epoch",
                                   "--eval_dataset_path", dataset_dir))
    assert len(trainer.train_dataset) == 8 and len(trainer.eval_dataset) == 8


@pytest.mark.parametrize("extra, needle", [
    (["--eval_strategy", "steps"], "eval_strategy: 'steps' needs eval_dataset_path or eval_holdout"),
    (["--eval_holdout", "0.25"], "eval_strategy: 'no', but an eval set is configured"),
    (["--load_in_4bit", "true", "--use_peft", "true"], "load_in_4bit: "),
    (["--push_to_hub", "true"], "push_to_hub: true needs hub_model_id"),
])
def test_keys_that_cannot_be_honoured_are_one_line(extra, needle, tiny_model_dir, parquet_dir, tmp_path, capsys):
    line = _main_error(capsys, "--config", str(ROOT / "sft/recipes/smollm2-135m/demo.yaml"), "--model_name_or_path",
                       tiny_model_dir, "--store", "", "--dataset_path", parquet_dir, "--output_dir",
                       str(tmp_path / "out"), *extra)
    assert needle in line, line


def test_push_to_hub_pushes_the_finished_folder_once(tiny_model_dir, parquet_dir, tmp_path):
    from sft.train import train
    from tests.unit.test_hub import FakeHub

    hub = FakeHub()
    train(*_args(tiny_model_dir, parquet_dir, tmp_path / "p", "--push_to_hub", "true", "--hub_model_id", "me/sft"),
          hub_client=hub)
    assert [c[0] for c in hub.calls] == ["create_repo", "upload_folder"] and hub.calls[0][3] is True  # private
    files = hub.uploaded["me/sft@main"]
    assert {"config.json", "model.safetensors", "README.md", "recipe.yaml"} <= set(files)
    assert b"Loss masking" in files["README.md"]
