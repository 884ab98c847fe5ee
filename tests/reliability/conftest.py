"""Reliability tests: the real CLIs and pipelines under flaky endpoints, crashes, bad input, leaks and secrets.

Every test here is marked `reliability`; the long variants are also marked `slow` (`make test-reliability` runs the
folder, `make test` runs the unmarked ones). Entry points run as subprocesses from the repository root, offline,
with every store and shard folder in a temporary directory.
"""

import hashlib
import os
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DEMO_RECIPE = ROOT / "pipelines" / "recipes" / "demo.yaml"
# the tables whose rows are data (the rest is bookkeeping of how the data got there)
DATA_TABLES = ("questions", "trajectories", "turns", "judgments", "easy", "failures")


def pytest_configure(config):
    config.addinivalue_line("markers", "reliability: flaky endpoints, crashes, bad input, leaks, secrets")


def pytest_collection_modifyitems(config, items):
    here = Path(__file__).parent
    for item in items:
        if here in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.reliability)


def child_env(**extra: str) -> dict[str, str]:
    """The environment of a child entry point: offline, the checkout importable, quiet tokenizers."""
    env = {k: v for k, v in os.environ.items() if k not in ("OPENAI_API_KEY", "HF_TOKEN", "SEEKHELP_LLM_BASE_URL",
                                                            "SEEKHELP_LLM_MODEL", "SEEKHELP_STORE")}
    env.update(PYTHONPATH=str(ROOT), HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false",
               DISTILABEL_LOG_LEVEL="WARNING", PYTHONUNBUFFERED="1")
    env.update(extra)
    return env


@dataclass
class Result:
    argv: list[str]
    returncode: int
    stdout: str
    stderr: str
    wall_s: float


def run_module(module: str, *args: str, env: dict | None = None, cwd: Path = ROOT, timeout: float = 600) -> Result:
    argv = [sys.executable, "-m", module, *map(str, args)]
    t0 = time.perf_counter()
    p = subprocess.run(argv, cwd=cwd, env=env or child_env(), capture_output=True, text=True, timeout=timeout,
                       errors="replace")
    return Result(argv, p.returncode, p.stdout, p.stderr, time.perf_counter() - t0)


def generate_args(store: Path, shards: Path, *sets: str, config: Path = DEMO_RECIPE) -> list[str]:
    argv = ["--config", str(config), "--set", f"store={store}", "--set", f"shards={shards}"]
    for s in sets:
        argv += ["--set", s]
    return argv


def sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def folder_state(folder: Path) -> dict[str, str]:
    """name -> sha256 of every file under `folder` (a store's WAL file included)."""
    return {str(p.relative_to(folder)): sha256(p) for p in sorted(Path(folder).rglob("*")) if p.is_file()}


def store_counts(path: Path) -> dict[str, int]:
    import duckdb

    from seekhelp.store.schema import TABLES

    con = duckdb.connect(str(path), read_only=True)
    try:
        return {t: con.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in TABLES if t != "meta"}
    finally:
        con.close()


def free_port() -> int:
    """A port nothing listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def small_store(tmp_path) -> Path:
    """A real store with a few questions, written in-process (fast)."""
    from seekhelp.records import Question
    from seekhelp.store import Store

    path = tmp_path / "store" / "small.duckdb"
    with Store(path) as s:
        run = s.start_run("test", {"what": "reliability fixture"})
        s.add_questions([Question(question=f"What is the capital of country {i}?", answers=[f"City {i}"],
                                  privacy_items=[f"The user's cousin lives in country {i}."], split="train")
                         for i in range(5)], run)
        s.finish_run(run)
    return path
