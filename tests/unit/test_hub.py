"""Pushing to the Hub through an injectable fake client: cards, privacy default, revisions, no secrets."""

import json
import os

import datasets
import yaml

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


# ---------------------------------------------------------------- `make push`: what to push comes from the recipes


def _recipes(tmp_path, tiny_model_dir, **ids):
    import shutil

    from seekhelp.store.export import PARQUET_FILE

    export = tmp_path / "exports" / "sft"
    (export / PARQUET_FILE).parent.mkdir(parents=True)
    datasets.Dataset.from_dict({"messages": [[{"role": "user", "content": "q"},
                                              {"role": "assistant", "content": "a"}]]}).to_parquet(
        str(export / PARQUET_FILE))
    (export / "provenance.json").write_text(json.dumps({"query": "SELECT 2"}))
    sft_out, rl_out = tmp_path / "models" / "sft", tmp_path / "models" / "rl"
    shutil.copytree(tiny_model_dir, sft_out)
    for r in (1, 2, 10):
        shutil.copytree(tiny_model_dir, rl_out / f"round-{r}")
    (rl_out / "round-3-data").mkdir()  # the selection of a round is no model
    recipes = {
        "data": {"store": "s.duckdb", "endpoint": {"api_key_env": "OPENAI_API_KEY", "api_key": "sk-never-pushed-123"},
                 "hub_dataset_id": ids.get("dataset")},
        "sft": {"output_dir": str(sft_out), "dataset_path": str(export), "hub_model_id": ids.get("sft")},
        "rl": {"output_dir": str(rl_out), "hub_model_id": ids.get("rl")},
    }
    paths = {}
    for name, body in recipes.items():
        paths[name] = tmp_path / f"{name}.yaml"
        paths[name].write_text(yaml.safe_dump(body))
    return paths


def test_main_gets_the_round_chosen_on_validation(tmp_path, tiny_model_dir):
    """With final.json (the RL loop's choice on validation), main holds that round, not the last one."""
    from seekhelp.hub import push_from_recipes

    p = _recipes(tmp_path, tiny_model_dir, rl="me/rl")
    rl_out = tmp_path / "models" / "rl"
    (rl_out / "final.json").write_text(json.dumps({"round": 2, "checkpoint": str(rl_out / "round-2")}))
    hub = FakeHub()
    done = push_from_recipes(None, None, p["rl"], client=hub)
    assert done[-1] == f"model {rl_out / 'round-2'} -> me/rl@main"
    assert [c[3] for c in hub.calls if c[0] == "upload_folder"] == ["round-1", "round-2", "round-10", None]


def test_push_reads_ids_and_folders_from_the_recipes(tmp_path, tiny_model_dir):
    from seekhelp.hub import push_from_recipes

    p = _recipes(tmp_path, tiny_model_dir, dataset="me/dialogues", sft="me/sft", rl="me/rl")
    hub = FakeHub()
    done = push_from_recipes(p["data"], p["sft"], p["rl"], client=hub)
    assert len(done) == 6
    assert [c[3] for c in hub.calls if c[0] == "upload_folder" and c[1] == "me/rl"] == ["round-1", "round-2",
                                                                                        "round-10", None]
    assert done[-1].endswith("round-10 -> me/rl@main")  # from_pretrained("me/rl") finds the final round
    assert "me/rl@main" in hub.uploaded and "config.json" in hub.uploaded["me/rl@main"]
    assert all(c[3] is True for c in hub.calls if c[0] == "create_repo")  # private unless a recipe says otherwise
    data = hub.uploaded["me/dialogues@main"]
    assert {"README.md", "data/train.parquet", "provenance.json", "pipeline.yaml"} <= set(data)
    assert yaml.safe_load(data["pipeline.yaml"])["hub_dataset_id"] == "me/dialogues"
    assert "license: cc-by-4.0" in data["README.md"].decode()  # offline seeds: GeoNames facts
    assert b"sk-never-pushed" not in b"".join(data.values()) and b"## Pipeline" in data["README.md"]
    assert "config.json" in hub.uploaded["me/sft@main"]


def test_push_ids_on_the_command_line_win_and_unset_parts_are_skipped(tmp_path, tiny_model_dir):
    from seekhelp.hub import push_from_recipes

    p = _recipes(tmp_path, tiny_model_dir, sft="me/from-recipe")
    hub = FakeHub()
    done = push_from_recipes(p["data"], p["sft"], p["rl"], model_id="me/override", client=hub)
    assert done == [f"model {tmp_path / 'models' / 'sft'} -> me/override"]
    assert {c[1] for c in hub.calls} == {"me/override"}


def test_push_with_nothing_named_is_one_error_line(tmp_path, tiny_model_dir, capsys):
    from seekhelp.hub import main

    p = _recipes(tmp_path, tiny_model_dir)
    capsys.readouterr()
    assert main(["--data", str(p["data"]), "--sft", str(p["sft"]), "--rl", str(p["rl"])]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: nothing to push")


def test_make_sets_offline_mode_for_demo_and_tests_only():
    import shutil
    import subprocess
    from pathlib import Path

    import pytest

    if shutil.which("make") is None:
        pytest.skip("no make")
    root = Path(__file__).resolve().parents[2]

    def commands(target: str, *args: str) -> list[str]:  # make -n prints the commands without running them
        out = subprocess.run(["make", "-n", "-s", target, *args], cwd=root, capture_output=True, text=True,
                             timeout=60, env={"PATH": os.environ["PATH"]})
        assert out.returncode == 0, out.stderr
        return [line for line in out.stdout.splitlines() if "pip install" not in line]

    assert any("HF_HUB_OFFLINE=1" in c and "pytest" in c for c in commands("test"))
    for target in ("data", "sft", "rl", "push"):
        assert not any("HF_HUB_OFFLINE" in c for c in commands(target, "DATA_RECIPE=x.yaml")), target
    push = " ".join(commands("push", "HUB_RL_MODEL=me/rl"))
    assert "seekhelp.hub --data" in push and "--rl-model-id me/rl" in push and "smollm2-135m-demo" not in push


def test_the_dataset_licence_follows_the_seeds():
    from seekhelp.hub import dataset_card, seed_license

    assert seed_license({"seeds": {"kind": "hub"}}) == "cc-by-sa-4.0"  # FlashRAG's collection
    assert seed_license({"seeds": {"kind": "offline"}}) == "cc-by-4.0"
    assert seed_license({"seeds": {"kind": "local"}}) == "other"
    assert "license: cc-by-sa-4.0" in dataset_card("me/x", {}, 3, "cc-by-sa-4.0")


def test_an_rl_round_card_says_so_and_names_the_original_base(tmp_path):
    from types import SimpleNamespace

    from sft.model_card import write_model_card

    sft = tmp_path / "sft"
    sft.mkdir()
    (sft / "README.md").write_text("---\nbase_model: HuggingFaceTB/SmolLM2-135M-Instruct\ntags: [seekhelp]\n---\n"
                                   "# sft\n")
    out = tmp_path / "rl" / "round-2"
    out.mkdir(parents=True)
    script = SimpleNamespace(dataset_path=str(tmp_path / "none"), run_ids=[], init_from=None, store=None)
    model = SimpleNamespace(model_name_or_path=str(sft), use_peft=False)
    text = write_model_card(out, script_args=script, model_args=model, recipe={}, metrics={}, rows=4,
                            merged=False).read_text()
    assert "base_model: HuggingFaceTB/SmolLM2-135M-Instruct" in text and "rejection-sampling" in text
    assert "round 2 of the rejection-sampling stage" in text and "supervised stage" not in text
