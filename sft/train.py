"""Supervised cold start of the SLM: TRL SFT on selected dialogues, with the loss on the SLM's own tokens only.

    python -m sft.train --config sft/recipes/smollm2-135m/demo.yaml [--learning_rate 1e-4 ...]
    accelerate launch --config_file sft/accelerate/zero3.yaml --num_processes 8 -m sft.train --config RECIPE

A recipe is one flat YAML mapping of SFTScriptArguments, SFTConfig and ModelConfig fields; flags override it.
Dialogues come from `dataset_path` (save_to_disk, `messages` column), exported there first when `store` and `query`
are set. Only the SLM's turns carry loss: the template marks them with {% generation %}; LLM replies are user turns.
"""

import json
import logging
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path

from trl import ModelConfig, SFTConfig, SFTTrainer, TrlParser, get_peft_config

from seekhelp.errors import entry_point
from sft import SFTInputError
from sft.chat_templates import prepare_tokenizer
from sft.model_card import recipe_dict, write_model_card, write_recipe

log = logging.getLogger("sft.train")


@dataclass
class SFTScriptArguments:
    dataset_path: str | None = field(default=None, metadata={"help": "save_to_disk folder with a `messages` column"})
    store: str | None = field(default=None, metadata={"help": "DuckDB store; with `query`, export into dataset_path"})
    query: str = field(default="sft_candidates", metadata={"help": "SQL file, or a name in data/queries/ (export)"})
    query_params: list[str] = field(default_factory=list, metadata={"help": "NAME=VALUE query parameters"})
    system_prompt: str = field(default="slm_dynamic", metadata={"help": "SLM prompt name or file (export only)"})
    init_from: str | None = field(default=None, metadata={"help": "checkpoint to start from (RL rounds)"})
    run_ids: list[str] = field(default_factory=list, metadata={"help": "producing run ids, for the model card"})
    keep_adapter_only: bool = field(default=False, metadata={"help": "LoRA: save adapters, do not merge"})


def _blank(value: str | None) -> str | None:
    return None if value in (None, "", "None", "null") else value


def export_from_store(args: SFTScriptArguments, out_dir: str) -> None:
    """Run the selection query on the store and save the dialogues into out_dir (with provenance.json)."""
    import duckdb

    from seekhelp.prompts import load_prompt
    from seekhelp.store.export import export_sft
    from seekhelp.store.schema import StoreError

    prompt = Path(args.system_prompt)
    try:
        system = prompt.read_text(encoding="utf-8").strip() if prompt.is_file() else load_prompt(args.system_prompt)
    except FileNotFoundError as e:
        raise SFTInputError(f"system_prompt: {args.system_prompt}: neither a prompt name nor a file") from e
    sql = next((p for p in (Path(args.query), Path(f"data/queries/{args.query}.sql")) if p.is_file()), None)
    if sql is None:
        raise SFTInputError(f"query: {args.query}: no such SQL file")
    params = dict(p.split("=", 1) for p in args.query_params if "=" in p)
    try:
        ds = export_sft(args.store, sql.read_text(encoding="utf-8"), out_dir, system, params=params)
    except (StoreError, duckdb.Error) as e:
        raise SFTInputError(f"store: {str(e).splitlines()[0]}") from e
    if ds.num_rows == 0:
        raise SFTInputError(f"query: {sql}: selected no dialogues from {args.store} (are they judged yet?)")
    log.info("exported %d dialogues from %s into %s", ds.num_rows, args.store, out_dir)


def load_dialogues(path: str):
    """The training dialogues: a Dataset with only `messages`, checked row by row."""
    import datasets

    if not any(Path(path, f).exists() for f in ("dataset_info.json", "dataset_dict.json")):
        raise SFTInputError(f"dataset_path: {path}: not a dataset folder (datasets.save_to_disk)")
    try:
        ds = datasets.load_from_disk(path)
    except (IndexError, ValueError, OSError) as e:  # datasets cannot open a saved dataset that has no rows
        raise SFTInputError(f"dataset_path: {path}: the dataset is empty or unreadable ({type(e).__name__})") from e
    if isinstance(ds, datasets.DatasetDict):
        ds = ds["train"] if "train" in ds else next(iter(ds.values()))
    if "messages" not in ds.column_names:
        raise SFTInputError(f"dataset_path: {path}: no `messages` column (columns: {', '.join(ds.column_names)})")
    if ds.num_rows == 0:
        raise SFTInputError(f"dataset_path: {path}: the dataset is empty")
    for i, messages in enumerate(ds["messages"]):
        roles = [m.get("role") for m in messages or []]
        if "assistant" not in roles or not set(roles) <= {"system", "user", "assistant"}:
            raise SFTInputError(f"dataset_path: {path}: row {i}: messages need an assistant turn (roles: {roles})")
    return ds.select_columns(["messages"])


def build_trainer(script_args: SFTScriptArguments, training_args: SFTConfig, model_args: ModelConfig) -> SFTTrainer:
    """Resolve the model, export/load the dialogues and build the SFTTrainer (nothing trained yet)."""
    from accelerate import PartialState

    from seekhelp.models import ModelError, resolve

    a = script_args
    a.dataset_path, a.store, a.init_from = map(_blank, (a.dataset_path, a.store, a.init_from))
    if not model_args.model_name_or_path:
        raise SFTInputError("model_name_or_path: required (a registry name, a model folder or a Hub id)")
    try:
        source = resolve(a.init_from or model_args.model_name_or_path)
    except ModelError as e:
        raise SFTInputError(f"{'init_from' if a.init_from else 'model_name_or_path'}: {e}") from e
    if not a.dataset_path and not a.store:
        raise SFTInputError("dataset_path: required (or store + query to export the dialogues first)")
    a.dataset_path = a.dataset_path or f"data/exports/sft/{Path(training_args.output_dir).name}"
    state = PartialState()
    with state.main_process_first():
        if a.store and state.is_main_process:
            export_from_store(a, a.dataset_path)
    dataset = load_dialogues(a.dataset_path)
    tokenizer = prepare_tokenizer(source, training_args.chat_template_path)
    training_args.assistant_only_loss = True  # the project's rule: never train on tokens the SLM did not write
    recipe_kwargs = training_args.model_init_kwargs
    training_args.model_init_kwargs = {"revision": model_args.model_revision, "dtype": model_args.dtype,
                                       "attn_implementation": model_args.attn_implementation, **(recipe_kwargs or {})}
    log.info("SFT of %s on %d dialogues from %s (LoRA: %s)", source, len(dataset), a.dataset_path, model_args.use_peft)
    trainer = SFTTrainer(model=source, args=training_args, train_dataset=dataset, processing_class=tokenizer,
                         peft_config=get_peft_config(model_args))
    training_args.model_init_kwargs = recipe_kwargs  # used above only; recipe.yaml records what the recipe said
    return trainer


def _merge_adapters(out: Path, dtype: str | None) -> None:
    """Fold the saved LoRA adapters into their base; the adapters move to out/adapter."""
    from peft import AutoPeftModelForCausalLM

    merged = AutoPeftModelForCausalLM.from_pretrained(out, dtype=dtype or "auto").merge_and_unload()
    (out / "adapter").mkdir(exist_ok=True)
    for f in out.glob("adapter_*"):
        f.rename(out / "adapter" / f.name)
    merged.save_pretrained(out)


def train(script_args: SFTScriptArguments, training_args: SFTConfig, model_args: ModelConfig) -> Path:
    """Train, then save model, tokenizer (with its chat template), recipe.yaml and README.md; returns the folder."""
    trainer = build_trainer(script_args, training_args, model_args)
    resume = training_args.resume_from_checkpoint  # a checkpoint folder, or "true" for the latest in output_dir
    result = trainer.train(resume_from_checkpoint=True if str(resume).lower() in ("true", "last") else resume)
    out = Path(training_args.output_dir)
    trainer.save_model(str(out))
    if trainer.accelerator.is_main_process:
        for checkpoint in out.glob("checkpoint-*"):  # resume points are of no use once the run has finished
            shutil.rmtree(checkpoint)
        merged = model_args.use_peft and not script_args.keep_adapter_only
        if merged:
            _merge_adapters(out, model_args.dtype)
        trainer.processing_class.save_pretrained(out)
        (out / "training_args.bin").unlink(missing_ok=True)  # a pickle of every argument: recipe.yaml replaces it
        metrics = {"train_loss": result.training_loss, "global_step": result.global_step, **result.metrics}
        (out / "train_metrics.json").write_text(json.dumps(metrics, indent=2) + "\n", encoding="utf-8")
        recipe = write_recipe(out / "recipe.yaml", recipe_dict(script_args, training_args, model_args))
        write_model_card(out, script_args=script_args, model_args=model_args, recipe=recipe, metrics=metrics,
                         rows=len(trainer.train_dataset), merged=merged)
        log.info("saved %s (loss %.4f after %d steps)", out, result.training_loss, result.global_step)
    trainer.accelerator.wait_for_everyone()
    return out


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
    try:
        return _Parser(types).parse_args_and_config(argv)
    except ValueError as e:  # also unknown flags: "Some specified arguments are not used by the HfArgumentParser"
        if isinstance(e, SFTInputError):
            raise
        raise SFTInputError(f"{'command line' if 'not used by' in str(e) else where}: {str(e).splitlines()[0]}") from e


@entry_point
def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    out = train(*parse(argv))
    print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
