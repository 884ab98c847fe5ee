"""How an RL round samples its rollouts and how it retrains.

Sampling, `policy` in the RL recipe: `seekhelp.backends.sampler.PolicyConfig` (local, a server started per round
and stopped before the retrain, or vLLM's engine in this process); the eval shares it (`slm_serving`).

Retraining, `retrain.launcher`: ``inprocess`` calls `sft.train` here (CPU demo); ``accelerate`` runs
``accelerate launch --config_file <retrain.accelerate_config> --num_processes N -m sft.train ...`` as a subprocess,
exactly as `make sft` does on GPUs (DDP or ZeRO-3). Either way the gradient accumulation is chosen so that
per-device batch × accumulation × processes equals the SFT recipe's effective batch (per-device batch × accumulation
× ``retrain.sft_processes``, the processes SFT ran on): RL retrains with the batch SFT was tuned for, or refuses.
"""

import logging
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import yaml

from seekhelp.backends.sampler import (  # noqa: F401  (the sampler is shared with the eval; re-exported here)
    ENGINES,
    KINDS,
    GPUBusyError,
    PolicyConfig,
    PolicySampler,
    check_policy,
    gpu_memory_used_mib,
    wait_gpu_memory,
)
from seekhelp.config import RecipeError
from seekhelp.errors import SeekhelpError

log = logging.getLogger("rl.policy")

LAUNCHERS = ("inprocess", "accelerate")


class RetrainError(SeekhelpError, RuntimeError):
    """The retraining subprocess failed (its own output says why)."""


@dataclass
class RetrainConfig:
    launcher: str = "inprocess"  # inprocess | accelerate
    accelerate_config: str = "sft/accelerate/ddp.yaml"  # accelerate: its config file
    num_processes: int = 1  # accelerate: processes (GPUs) of the retrain
    sft_processes: int = 1  # processes the SFT recipe ran on (its effective batch is per-device x accum x this)


def check(policy: PolicyConfig, retrain: RetrainConfig) -> None:
    check_policy(policy)
    if retrain.launcher not in LAUNCHERS:
        raise RecipeError(f"retrain.launcher: {retrain.launcher!r} is not one of {', '.join(LAUNCHERS)}")
    if retrain.launcher == "accelerate" and not Path(retrain.accelerate_config).is_file():
        raise RecipeError(f"retrain.accelerate_config: {retrain.accelerate_config}: no such file")
    if retrain.num_processes < 1 or retrain.sft_processes < 1:
        raise RecipeError("retrain.num_processes and retrain.sft_processes must be >= 1")


def _flag(args: list[str], name: str) -> str | None:
    key = f"--{name}"
    return args[args.index(key) + 1] if key in args[:-1] else None


def batch_args(sft_recipe: str, overrides: list[str], retrain: RetrainConfig) -> list[str]:
    """`--gradient_accumulation_steps N` that keeps the SFT recipe's effective batch on this retrain's processes."""
    try:
        cfg = yaml.safe_load(Path(sft_recipe).read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as e:
        raise RecipeError(f"sft_recipe: {sft_recipe}: cannot read it ({str(e).splitlines()[0]})") from e
    if _flag(overrides, "gradient_accumulation_steps") is not None:
        log.info("sft_overrides set gradient_accumulation_steps: the effective batch is theirs")
        return []
    per_device = int(_flag(overrides, "per_device_train_batch_size") or cfg.get("per_device_train_batch_size", 8))
    effective = int(cfg.get("per_device_train_batch_size", 8)) * int(cfg.get("gradient_accumulation_steps", 1)) \
        * retrain.sft_processes
    procs = retrain.num_processes if retrain.launcher == "accelerate" else 1
    accum, rest = divmod(effective, per_device * procs)
    if accum < 1 or rest:
        raise RecipeError(f"retrain: the SFT effective batch {effective} is not a multiple of per-device batch "
                          f"{per_device} x {procs} processes")
    log.info("retrain: %d x %d accumulation x %d processes = SFT's effective batch %d", per_device, accum, procs,
             effective)
    return ["--gradient_accumulation_steps", str(accum)]


def accelerate_command(retrain: RetrainConfig, sft_args: list[str]) -> list[str]:
    from seekhelp.backends.server import free_port

    return [sys.executable, "-m", "accelerate.commands.launch", "--config_file", retrain.accelerate_config,
            "--num_processes", str(retrain.num_processes), "--main_process_port", str(free_port()),
            "-m", "sft.train", *sft_args]


def run_sft(retrain: RetrainConfig, sft_args: list[str]) -> None:
    """sft.train with these flags: here, or through `accelerate launch` (a failure raises one readable line)."""
    if retrain.launcher == "inprocess":
        from sft.train import parse, train

        train(*parse(sft_args))
        return
    cmd = accelerate_command(retrain, sft_args)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [os.getcwd(), os.environ.get("PYTHONPATH")]))}
    log.info("retrain: %s", " ".join(cmd))
    proc = subprocess.run(cmd, env=env, check=False)
    if proc.returncode != 0:
        raise RetrainError(f"retrain: accelerate launch exited with code {proc.returncode}")
