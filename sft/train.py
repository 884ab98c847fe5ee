"""Supervised cold start of the SLM: TRL SFT on selected dialogues, with the loss on the SLM's own tokens only.

    python -m sft.train --config sft/recipes/smollm2-135m/demo.yaml [--learning_rate 1e-4 ...]
    accelerate launch --config_file sft/accelerate/zero3.yaml --num_processes 8 -m sft.train --config RECIPE

A recipe is one flat YAML mapping of SFTScriptArguments, SFTConfig and ModelConfig fields; flags override it, and
every key is honoured or refused: quantization (`load_in_4bit`, `bnb_*`) goes through TRL's helper, `eval_strategy`
needs an eval set, `push_to_hub` pushes the finished folder (card included) to `hub_model_id`. Dialogues come from
`dataset_path` (an export: parquet, `messages` column), exported there first when `store` and `query` are set. With
`assistant_only_loss` (the project's default) only the SLM's turns carry loss: the template marks them with
{% generation %}; LLM replies are user turns.
"""

import json
import logging
import math
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path

from trl import ModelConfig, SFTConfig, SFTTrainer, TrlParser, get_peft_config, get_quantization_config

from seekhelp.errors import entry_point
from sft import SFTInputError
from sft.chat_templates import prepare_tokenizer
from sft.data import check_eval, eval_split, export_from_store, load_dialogues
from sft.model_card import recipe_dict, write_model_card, write_recipe

log = logging.getLogger("sft.train")


@dataclass
class SFTScriptArguments:
    dataset_path: str | None = field(default=None, metadata={"help": "export folder with a `messages` column"})
    eval_dataset_path: str | None = field(default=None, metadata={"help": "eval dialogues (e.g. a validation export)"})
    eval_holdout: float = field(default=0.0, metadata={"help": "eval on this share (<1) or count of the dialogues"})
    store: str | None = field(default=None, metadata={"help": "DuckDB store; with `query`, export into dataset_path"})
    query: str = field(default="sft_candidates", metadata={"help": "SQL file, or a name in data/queries/ (export)"})
    query_params: list[str] = field(default_factory=list, metadata={"help": "NAME=VALUE query parameters"})
    system_prompt: str = field(default="slm_dynamic", metadata={"help": "SLM prompt name or file (export only)"})
    init_from: str | None = field(default=None, metadata={"help": "checkpoint to start from (RL rounds)"})
    run_ids: list[str] = field(default_factory=list, metadata={"help": "producing run ids, for the model card"})
    keep_adapter_only: bool = field(default=False, metadata={"help": "LoRA: save adapters, do not merge"})
    keep_checkpoints: bool = field(default=False, metadata={"help": "keep checkpoint-* after a finished run"})
    cpu_bf16: str = field(default="false", metadata={
        "help": "auto: with no GPU visible and a CPU whose oneDNN multiplies in bf16 (AVX-512 / AMX), train under "
                "bf16 autocast (float32 weights); elsewhere float32. An explicit --bf16 wins"})


def _blank(value: str | None) -> str | None:
    return None if value in (None, "", "None", "null") else value


def build_trainer(script_args: SFTScriptArguments, training_args: SFTConfig, model_args: ModelConfig) -> SFTTrainer:
    """Resolve the model, export/load the dialogues and build the SFTTrainer (nothing trained yet)."""
    from accelerate import PartialState

    from seekhelp.models import ModelError, resolve

    a = script_args
    a.dataset_path, a.store, a.init_from, a.eval_dataset_path = map(
        _blank, (a.dataset_path, a.store, a.init_from, a.eval_dataset_path))
    if not model_args.model_name_or_path:
        raise SFTInputError("model_name_or_path: required (a registry name, a model folder or a Hub id)")
    try:
        source = resolve(a.init_from or model_args.model_name_or_path)
    except ModelError as e:
        raise SFTInputError(f"{'init_from' if a.init_from else 'model_name_or_path'}: {e}") from e
    if not a.dataset_path and not a.store:
        raise SFTInputError("dataset_path: required (or store + query to export the dialogues first)")
    a.dataset_path = a.dataset_path or f"data/exports/sft/{Path(training_args.output_dir).name}"
    strategy = str(getattr(training_args.eval_strategy, "value", training_args.eval_strategy))
    check_eval(a.eval_dataset_path, a.eval_holdout, strategy)  # config errors before any data is read
    quantization = get_quantization_config(model_args)
    if quantization is not None:
        _check_kbit(model_args)
    state = PartialState()
    with state.main_process_first():
        if a.store and state.is_main_process:
            export_from_store(a, a.dataset_path)
    dataset, eval_dataset = eval_split(load_dialogues(a.dataset_path), a.eval_dataset_path, a.eval_holdout,
                                       training_args.seed, strategy)
    tokenizer = prepare_tokenizer(source, training_args.chat_template_path)
    if not training_args.assistant_only_loss:
        log.warning("assistant_only_loss: false: the loss covers every token, the LLM's replies included")
    recipe_kwargs = training_args.model_init_kwargs
    training_args.model_init_kwargs = {"revision": model_args.model_revision, "dtype": model_args.dtype,
                                       "attn_implementation": model_args.attn_implementation, **(recipe_kwargs or {})}
    log.info("SFT of %s on %d dialogues from %s (LoRA: %s, eval: %s)", source, len(dataset), a.dataset_path,
             model_args.use_peft, len(eval_dataset) if eval_dataset is not None else "none")
    trainer = SFTTrainer(model=source, args=training_args, train_dataset=dataset, eval_dataset=eval_dataset,
                         processing_class=tokenizer, peft_config=get_peft_config(model_args),
                         quantization_config=quantization)
    training_args.model_init_kwargs = recipe_kwargs  # used above only; recipe.yaml records what the recipe said
    return trainer


def _check_kbit(model_args: ModelConfig) -> None:
    """bitsandbytes k-bit loading needs CUDA and the package; say so in one line instead of a deep traceback."""
    import importlib.util

    import torch

    key = "load_in_4bit" if model_args.load_in_4bit else "load_in_8bit"
    if importlib.util.find_spec("bitsandbytes") is None:
        raise SFTInputError(f"{key}: needs bitsandbytes (pip install bitsandbytes) and a CUDA GPU")
    if not torch.cuda.is_available():
        raise SFTInputError(f"{key}: bitsandbytes quantization needs a CUDA GPU; none is visible here")
    if not model_args.use_peft:
        raise SFTInputError(f"{key}: a quantized model trains through adapters only; set use_peft: true (QLoRA)")


def _merge_adapters(out: Path, dtype: str | None) -> None:
    """Fold the saved LoRA adapters into their base; the adapters move to out/adapter."""
    from peft import AutoPeftModelForCausalLM

    merged = AutoPeftModelForCausalLM.from_pretrained(out, dtype=dtype or "auto").merge_and_unload()
    (out / "adapter").mkdir(exist_ok=True)
    for f in out.glob("adapter_*"):
        f.rename(out / "adapter" / f.name)
    merged.save_pretrained(out)


def train(script_args: SFTScriptArguments, training_args: SFTConfig, model_args: ModelConfig,
          hub_client=None) -> Path:
    """Train, then save model, tokenizer (with its chat template), recipe.yaml and README.md, and push the folder to
    `hub_model_id` when `push_to_hub` is set (as TRL's script does, through seekhelp.hub); returns the folder."""
    if training_args.push_to_hub and not training_args.hub_model_id:
        raise SFTInputError("push_to_hub: true needs hub_model_id (e.g. you/qwen3-4b-seekhelp-sft)")
    push, training_args.push_to_hub = training_args.push_to_hub, False  # the Trainer would push on every save
    trainer = build_trainer(script_args, training_args, model_args)
    resume = training_args.resume_from_checkpoint  # a checkpoint folder, or "true" for the latest in output_dir
    result = trainer.train(resume_from_checkpoint=True if str(resume).lower() in ("true", "last") else resume)
    eval_metrics = trainer.evaluate() if trainer.eval_dataset is not None else {}  # every process takes part
    out = Path(training_args.output_dir)
    trainer.save_model(str(out))
    if trainer.accelerator.is_main_process:
        for checkpoint in [] if script_args.keep_checkpoints else out.glob("checkpoint-*"):
            shutil.rmtree(checkpoint)  # resume points, of no use once the run has finished unless kept
        merged = model_args.use_peft and not script_args.keep_adapter_only
        if merged:
            _merge_adapters(out, model_args.dtype)
        trainer.processing_class.save_pretrained(out)
        (out / "training_args.bin").unlink(missing_ok=True)  # a pickle of every argument: recipe.yaml replaces it
        metrics = {"train_loss": result.training_loss, "global_step": result.global_step, **result.metrics}
        metrics |= eval_metrics
        (out / "train_metrics.json").write_text(json.dumps(metrics, indent=2) + "\n", encoding="utf-8")
        training_args.push_to_hub = push
        recipe = write_recipe(out / "recipe.yaml", recipe_dict(script_args, training_args, model_args))
        write_model_card(out, script_args=script_args, model_args=model_args, recipe=recipe, metrics=metrics,
                         rows=len(trainer.train_dataset), seen=_examples_seen(trainer, result.global_step),
                         merged=merged)
        log.info("saved %s (loss %.4f after %d steps)", out, result.training_loss, result.global_step)
        if push:  # once, the finished folder with its card, as TRL's script does at the end
            from seekhelp.hub import push_model

            push_model(out, training_args.hub_model_id, private=training_args.hub_private_repo is not False,
                       revision=training_args.hub_revision, client=hub_client)
    trainer.accelerator.wait_for_everyone()
    return out


def _examples_seen(trainer, steps: int) -> int:
    """Training examples the optimizer actually saw: steps × the effective batch, at most epochs × the set."""
    a = trainer.args
    per_step = a.per_device_train_batch_size * a.gradient_accumulation_steps * trainer.accelerator.num_processes
    return min(steps * per_step, math.ceil(a.num_train_epochs) * len(trainer.train_dataset))


class _Parser(TrlParser):
    def error(self, message: str):  # argparse would print the whole usage; one line is enough
        raise SFTInputError(f"command line: {message}")


def parse(argv: list[str] | None = None) -> tuple[SFTScriptArguments, SFTConfig, ModelConfig]:
    """Recipe + flags into the three dataclasses; a bad recipe raises SFTInputError (one line)."""
    import dataclasses

    import yaml

    argv = list(sys.argv[1:] if argv is None else argv)
    types = (SFTScriptArguments, SFTConfig, ModelConfig)
    where = argv[argv.index("--config") + 1] if "--config" in argv[:-1] else "command line"
    if where != "command line":
        try:
            config = yaml.safe_load(Path(where).read_text(encoding="utf-8"))
        except (OSError, yaml.YAMLError) as e:
            raise SFTInputError(f"{where}: cannot read the recipe ({str(e).splitlines()[0]})") from e
        if not isinstance(config, dict):
            raise SFTInputError(f"{where}: a recipe is a YAML mapping of field: value")
        unknown = sorted(set(config) - {f.name for t in types for f in dataclasses.fields(t)} - {"env"})
        if unknown:
            raise SFTInputError(f"{where}: unknown recipe key(s): {', '.join(map(str, unknown))}")
    if "--bf16" not in argv and _cpu_bf16(argv, config if where != "command line" else {}):
        argv += ["--bf16", "true", "--use_cpu", "true"]
    try:
        return _Parser(types).parse_args_and_config(argv)
    except ValueError as e:  # also unknown flags: "Some specified arguments are not used by the HfArgumentParser"
        if isinstance(e, SFTInputError):
            raise
        raise SFTInputError(f"{'command line' if 'not used by' in str(e) else where}: {str(e).splitlines()[0]}") from e


def _cpu_bf16(argv: list[str], config: dict) -> bool:
    """Whether `cpu_bf16` (flag over recipe) asks for bf16 autocast here: `auto` on a machine with no visible GPU
    whose CPU oneDNN computes bf16 natively. Measured on the demo's SFT (SmolLM2-135M, 2 cores, AVX-512 BF16):
    1.5x the steps per second of float32 (8 steps: 43 s vs 65 s), the same loss to two decimals."""
    value = str(argv[argv.index("--cpu_bf16") + 1] if "--cpu_bf16" in argv[:-1] else config.get("cpu_bf16", "false"))
    if value.lower() not in ("auto", "true", "false"):
        raise SFTInputError(f"cpu_bf16: {value!r} is not one of auto, true, false")
    if value.lower() == "false":
        return False
    import torch

    return not torch.cuda.is_available() and (value.lower() == "true" or torch.ops.mkldnn._is_mkldnn_bf16_supported())


@entry_point
def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    out = train(*parse(argv))
    print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
