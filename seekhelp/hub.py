"""Publish datasets and models to the Hugging Face Hub, with cards; private by default; explicit only.

The client is injectable: production uses `huggingface_hub.HfApi` (token from $HF_TOKEN, never stored); tests pass
a fake that records calls. `dry_run=True` writes what would be uploaded into a folder and calls nothing.
"""

import json
import logging
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any, Protocol

from seekhelp.errors import HubError

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


def dataset_card(repo_id: str, provenance: dict, n_rows: int) -> str:
    prov = json.dumps(scrub(provenance), indent=2, ensure_ascii=False, default=str)
    return f"""---
license: apache-2.0
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
                 revision: str | None = None, dry_run: bool = False, dry_run_dir: str | Path | None = None) -> Path:
    """Upload a `seekhelp export` folder (datasets.save_to_disk + provenance.json) with a README card."""
    import datasets

    folder = Path(folder)
    ds = datasets.load_from_disk(str(folder))
    prov_path = folder / "provenance.json"
    provenance = json.loads(prov_path.read_text(encoding="utf-8")) if prov_path.exists() else {}
    stage = Path(dry_run_dir or tempfile.mkdtemp(prefix="seekhelp-push-"))
    stage.mkdir(parents=True, exist_ok=True)
    (stage / "data").mkdir(exist_ok=True)
    ds.to_parquet(str(stage / "data" / "train.parquet"))
    (stage / "README.md").write_text(dataset_card(repo_id, provenance, ds.num_rows), encoding="utf-8")
    (stage / "provenance.json").write_text(json.dumps(scrub(provenance), indent=2, default=str), encoding="utf-8")
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
