"""Pushing to the Hub through an injectable fake client: cards, privacy default, revisions, no secrets."""

import json

import datasets

from seekhelp.hub import push_dataset, push_model


class FakeHub:
    def __init__(self):
        self.calls = []
        self.uploaded: dict[str, dict[str, bytes]] = {}

    def create_repo(self, repo_id, *, repo_type, private, exist_ok):
        self.calls.append(("create_repo", repo_id, repo_type, private))

    def create_branch(self, repo_id, *, branch, repo_type, exist_ok):
        self.calls.append(("create_branch", repo_id, branch))

    def upload_folder(self, *, repo_id, folder_path, repo_type, commit_message, revision=None):
        from pathlib import Path

        files = {str(p.relative_to(folder_path)): p.read_bytes() for p in Path(folder_path).rglob("*") if p.is_file()}
        self.uploaded[f"{repo_id}@{revision or 'main'}"] = files
        self.calls.append(("upload_folder", repo_id, repo_type, revision))


def _export(tmp_path):
    folder = tmp_path / "export"
    datasets.Dataset.from_dict({"messages": [[{"role": "user", "content": "q"}, {"role": "assistant",
                                                                                 "content": "<think>a</think>"}]]
                                }).save_to_disk(str(folder))
    prov = {"query": "SELECT 1", "run_ids": ["data-1"], "api_key": "sk-should-never-appear-1234567890",
            "note": "token hf_abcdefghijklmnopqrstuvwxyz123"}
    (folder / "provenance.json").write_text(json.dumps(prov))
    return folder


def test_push_dataset_is_private_with_a_card_and_no_secret(tmp_path):
    hub = FakeHub()
    push_dataset(_export(tmp_path), "me/dialogues", client=hub)
    assert ("create_repo", "me/dialogues", "dataset", True) in hub.calls
    files = hub.uploaded["me/dialogues@main"]
    assert {"README.md", "data/train.parquet", "provenance.json"} <= set(files)
    blob = b"".join(files.values())
    assert b"sk-should-never-appear" not in blob and b"hf_abcdefghijklmnop" not in blob
    assert b"SELECT 1" in files["README.md"]


def test_push_model_revision_per_round(tmp_path, tiny_model_dir):
    hub = FakeHub()
    push_model(tiny_model_dir, "me/policy", client=hub, revision="round-2")
    assert ("create_branch", "me/policy", "round-2") in hub.calls
    assert "config.json" in hub.uploaded["me/policy@round-2"]


def test_dry_run_calls_nothing(tmp_path):
    hub = FakeHub()
    stage = push_dataset(_export(tmp_path), "me/x", client=hub, dry_run=True, dry_run_dir=tmp_path / "stage")
    assert hub.calls == [] and (stage / "README.md").exists()
