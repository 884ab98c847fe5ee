"""The dialogues SFT trains and evaluates on: exported from the store, read back, checked row by row, split.

Kept apart from `sft.train` so the stage script stays one short page, as TRL's `scripts/sft.py` is.
"""

import logging
from pathlib import Path

from sft import SFTInputError

log = logging.getLogger("sft.train")


def export_from_store(args, out_dir: str) -> None:
    """Run `args.query` (SFTScriptArguments) on the store; save the dialogues into out_dir (+ provenance.json)."""
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
    from seekhelp.store.query import parse_cli_value

    params = {k: parse_cli_value(v) for k, v in (p.split("=", 1) for p in args.query_params if "=" in p)}
    try:
        ds = export_sft(args.store, sql.read_text(encoding="utf-8"), out_dir, system, params=params)
    except (StoreError, duckdb.Error) as e:
        raise SFTInputError(f"store: {str(e).splitlines()[0]}") from e
    if ds.num_rows == 0:
        raise SFTInputError(f"query: {sql}: selected no dialogues from {args.store} (are they judged yet?)")
    log.info("exported %d dialogues from %s into %s", ds.num_rows, args.store, out_dir)


def load_dialogues(path: str, field: str = "dataset_path"):
    """Dialogues from an export folder (parquet, or save_to_disk): a Dataset with only `messages`, checked."""
    from seekhelp.store.export import read_export

    try:
        ds = read_export(path)
    except FileNotFoundError as e:
        raise SFTInputError(f"{field}: {path}: not a dataset folder (data/*.parquet or datasets.save_to_disk)") from e
    except (IndexError, ValueError, OSError) as e:  # datasets cannot open a saved dataset that has no rows
        raise SFTInputError(f"{field}: {path}: the dataset is empty or unreadable ({type(e).__name__})") from e
    if "messages" not in ds.column_names:
        raise SFTInputError(f"{field}: {path}: no `messages` column (columns: {', '.join(ds.column_names)})")
    if ds.num_rows == 0:
        raise SFTInputError(f"{field}: {path}: the dataset is empty")
    for i, messages in enumerate(ds["messages"]):
        roles = [m.get("role") for m in messages or []]
        if "assistant" not in roles or not set(roles) <= {"system", "user", "assistant"}:
            raise SFTInputError(f"{field}: {path}: row {i}: messages need an assistant turn (roles: {roles})")
    return ds.select_columns(["messages"])


def check_eval(eval_path: str | None, holdout: float, strategy: str) -> None:
    """An eval set exactly when `eval_strategy` asks for evaluation: neither key is ever silently ignored."""
    if strategy == "no" and (eval_path or holdout):
        raise SFTInputError("eval_strategy: 'no', but an eval set is configured (set eval_strategy: steps/epoch)")
    if strategy != "no" and not (eval_path or holdout):
        raise SFTInputError(f"eval_strategy: {strategy!r} needs eval_dataset_path or eval_holdout")
    if holdout < 0:
        raise SFTInputError(f"eval_holdout: {holdout} is negative")


def eval_split(train, eval_path: str | None, holdout: float, seed: int, strategy: str):
    """(train, eval) datasets: eval from `eval_path` (e.g. a validation export) or a held-out slice of train
    (`holdout`: a share below 1, or a count), chosen by `seed`; (train, None) when the recipe asks for no eval."""
    check_eval(eval_path, holdout, strategy)
    if strategy == "no":
        return train, None
    if eval_path:
        return train, load_dialogues(eval_path, "eval_dataset_path")
    n = round(holdout * len(train)) if holdout < 1 else int(holdout)
    if not 1 <= n < len(train):
        raise SFTInputError(f"eval_holdout: {holdout} of {len(train)} dialogues leaves no train or no eval rows")
    parts = train.train_test_split(test_size=n, seed=seed)
    return parts["train"], parts["test"]

