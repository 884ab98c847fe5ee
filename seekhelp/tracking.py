"""Experiment tracking: one switch, `report_to`, for every stage (`make ... REPORT_TO=trackio`).

- SFT: TRL / transformers report the training loss themselves (`--report_to trackio|wandb`).
- RL: every round's validation row (and the control arm's) is logged with the round as the step, and each retrain
  passes the same `report_to` to its SFT run.
- Eval: the main metrics of every run (EM, LLM calls, attempted leak, cost) are logged once at the end.

trackio is local-first (a local database; `trackio show` opens the dashboard) and W&B works offline with
`WANDB_MODE=offline`; neither is installed by default (`pip install trackio` or `pip install wandb`). Both expose
module-level `init`, `log` and `finish`, which is all this adapter uses. The project name comes from
`SEEKHELP_TRACKING_PROJECT` (default "seekhelp").
"""

import importlib
import math
import os
from typing import Any

from seekhelp.config import RecipeError

BACKENDS = ("none", "trackio", "wandb")


def check_report_to(value: str, where: str = "report_to") -> str:
    """The backend name, or a one-line RecipeError naming what is wrong (unknown, or not installed)."""
    name = (value or "none").strip().lower()
    if name not in BACKENDS:
        raise RecipeError(f"{where}: {value!r} is not one of {', '.join(BACKENDS)}")
    if name != "none":
        try:
            importlib.import_module(name)
        except ImportError as e:
            raise RecipeError(f"{where}: {name} is not installed here (pip install {name}): {e}") from e
    return name


class Tracker:
    """One tracked run; `log` keeps the numeric values only (None, NaN and text are left out)."""

    def __init__(self, module: Any, project: str, name: str, config: dict | None) -> None:
        self.module = module
        module.init(project=project, name=name, config=config or {})

    def log(self, metrics: dict[str, Any], step: int | None = None) -> None:
        clean = {k: float(v) for k, v in metrics.items()
                 if isinstance(v, int | float) and not isinstance(v, bool) and not math.isnan(float(v))}
        if clean:
            self.module.log(clean, step=step)

    def finish(self) -> None:
        self.module.finish()


def start(report_to: str, name: str, config: dict | None = None) -> Tracker | None:
    """A Tracker for this stage's run, or None when `report_to` is none."""
    backend = check_report_to(report_to)
    if backend == "none":
        return None
    project = os.environ.get("SEEKHELP_TRACKING_PROJECT", "seekhelp")
    return Tracker(importlib.import_module(backend), project, name, config)
