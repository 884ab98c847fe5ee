"""Rehearsal of the scale-out path: `pipelines.generate` on a real Ray cluster, a local head started for the test,
CPU only, every address on loopback.

The same small recipe runs through distilabel's Ray runner (LLM injection and judge against a scripted local
server, the knowledge teacher, two replicas of each LLM step); the store must hold one question per seed, teacher
dialogues and one verdict per judged dialogue. The head is stopped afterwards, also when the test fails.
"""

import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from seekhelp.backends.scripted_server import ScriptedServer
from tests.fakes import INJECT_AND_JUDGE_REPLY
from tests.reliability.conftest import ROOT, child_env, free_port, generate_args, run_module

# ray is in the lock (the dev extra), so `make test-rehearsal` (and CI through it) always runs this: a missing ray
# fails here instead of skipping the one test of the scale-out path.
pytestmark = [pytest.mark.rehearsal, pytest.mark.slow]



@pytest.fixture
def ray_head():
    """A Ray head on 127.0.0.1 (one CPU, no dashboard); yields (address, its log folder); `ray stop` whatever
    happens."""
    ray_bin = str(Path(sys.executable).with_name("ray"))
    port = free_port()
    temp = tempfile.mkdtemp(prefix="ray-")  # short: Ray's unix sockets live under it
    env = child_env(RAY_USAGE_STATS_ENABLED="0")  # the workers import the checkout through PYTHONPATH
    try:
        subprocess.run([ray_bin, "start", "--head", "--node-ip-address", "127.0.0.1", "--port", str(port),
                        "--num-cpus", "1", "--include-dashboard", "false", "--disable-usage-stats",
                        "--temp-dir", temp], cwd=ROOT, env=env, check=True, capture_output=True, timeout=180)
        yield f"127.0.0.1:{port}", Path(temp) / "session_latest" / "logs"
    finally:
        subprocess.run([ray_bin, "stop", "--force"], env=env, capture_output=True, timeout=120)
        shutil.rmtree(temp, ignore_errors=True)


def test_generate_runs_on_a_local_ray_head(tmp_path, ray_head):
    address, logs = ray_head
    with ScriptedServer(lambda messages: INJECT_AND_JUDGE_REPLY) as srv:
        res = run_module("pipelines.generate", *generate_args(
            tmp_path / "store.duckdb", tmp_path / "shards", "seeds.n_per_split={train: 6, validation: 2, test: 2}",
            "injection.kind=llm", "injection.chunk_size=10", f"endpoint.base_url={srv.base_url}",
            "endpoint.model=scripted", "judge.limit=null", f"ray.address={address}", "ray.replicas=2"),
            env=child_env(RAY_USAGE_STATS_ENABLED="0"), timeout=900)
        assert res.returncode == 0, res.stderr[-4000:]
        assert len(srv.requests) > 0
    rows = json.loads(res.stdout.strip().splitlines()[-1])["rows"]
    assert rows["questions"] == 10, rows
    assert rows["trajectories"] > 0 and rows["judgments"] > 0, rows
    actors = {f.name for f in logs.glob("worker-*.out") if "_StepWrapperRay" in f.read_text(errors="replace")}
    assert len(actors) >= 2, "no distilabel step ran as a Ray actor on the head"
    shards = {p.name.split("-")[0] for p in (tmp_path / "shards").rglob("*.parquet")}
    assert {"questions", "trajectories", "judgments"} <= shards, shards
