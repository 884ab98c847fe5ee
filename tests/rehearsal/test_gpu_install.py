"""The GPU installs resolve: `pip install --dry-run --report` (metadata only, nothing is installed) of

* the project with its `[gpu]` extra (DeepSpeed), held to every version the lock pins, and
* the vLLM environment `make vllm-env` builds (`vllm==$(VLLM_VERSION)`, its own torch and transformers).

These reach the package registry, so they run only when asked: `make check-gpu-install` (or
SEEKHELP_REGISTRY_CHECK=1). A registry that lacks a pinned file (a partial mirror) is a skip that names the missing
pin; a real conflict between requirements fails.
"""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.reliability.conftest import ROOT

pytestmark = [pytest.mark.registry]
if os.environ.get("SEEKHELP_REGISTRY_CHECK") != "1":
    pytest.skip("reaches the package registry: run `make check-gpu-install` (SEEKHELP_REGISTRY_CHECK=1)",
                allow_module_level=True)

MISSING = re.compile(r"No matching distribution found for (\S+)")


def vllm_version() -> str:
    return re.search(r"^VLLM_VERSION \?= (\S+)", (ROOT / "Makefile").read_text(), re.M).group(1)


def lock_constraints(path: Path) -> Path:
    """The lock's pins without hashes or local versions (`torch==2.13.0+cpu` -> `torch==2.13.0`): a constraints file
    for pip, so the extra must fit around exactly what the project already installs."""
    pins = re.findall(r"^([A-Za-z0-9_.\-]+==[^\s\\;]+)", (ROOT / "requirements/lock.txt").read_text(), re.M)
    path.write_text("\n".join(p.split("+")[0] for p in pins) + "\n")
    return path


def dry_run(report: Path, *requirements: str) -> dict:
    argv = [sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed", "--quiet", "--report",
            str(report), *requirements]
    res = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=900)
    if res.returncode != 0:
        if m := MISSING.search(res.stderr):
            pytest.skip(f"the registry has no {m.group(1)} (a partial mirror?): cannot decide whether it resolves")
        if "Could not fetch URL" in res.stderr or "Failed to establish a new connection" in res.stderr:
            pytest.skip("the package registry is not reachable")
        pytest.fail(f"pip could not resolve {' '.join(requirements)}:\n{res.stderr[-3000:]}")
    return json.loads(report.read_text())


def installed(report: dict) -> dict[str, str]:
    return {i["metadata"]["name"].lower(): i["metadata"]["version"] for i in report["install"]}


def test_gpu_extra_resolves_within_the_lock(tmp_path):
    got = installed(dry_run(tmp_path / "gpu.json", "-c", str(lock_constraints(tmp_path / "c.txt")), "-e",
                            f"{ROOT}[gpu]"))
    assert "deepspeed" in got, got
    # nothing the lock pins moved: the extra fits around the project's own environment
    assert got.get("transformers") == re.search(r"^transformers==(\S+)", (ROOT / "requirements/lock.txt")
                                                .read_text(), re.M).group(1)


def test_the_vllm_environment_resolves(tmp_path):
    got = installed(dry_run(tmp_path / "vllm.json", f"vllm=={vllm_version()}"))
    assert got.get("vllm") == vllm_version() and "torch" in got and "transformers" in got, got
