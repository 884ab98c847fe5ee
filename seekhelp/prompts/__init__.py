"""Role prompts as plain text files next to this module; `load_prompt("slm_dynamic")` reads one."""

from functools import cache
from importlib import resources


@cache
def load_prompt(name: str) -> str:
    return resources.files(__package__).joinpath(f"{name}.txt").read_text(encoding="utf-8").strip()
