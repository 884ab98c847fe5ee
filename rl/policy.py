"""Where an RL round samples its rollouts and how it retrains: in-process for the CPU demo, real engines on GPUs.

Sampling, `policy.kind` in the RL recipe:

- ``local``: the checkpoint generated in this process with transformers, batched (the CPU demo, `make demo`);
- ``server``: an OpenAI-compatible server on the round's checkpoint, started for the round and stopped before the
  retrain frees its memory: ``policy.engine`` ``vllm`` runs ``vllm serve`` (GPU; tensor parallel etc. through
  ``policy.extra_args``), ``transformers`` runs ``transformers serve`` (CPU). Rollouts are then HTTP calls,
  concurrent up to ``policy.max_concurrency``, batched by the server;
- ``vllm``: vLLM's engine inside this process (one GPU process, no HTTP).

Retraining, `retrain.launcher`: ``inprocess`` calls `sft.train` here (CPU demo); ``accelerate`` runs
``accelerate launch --config_file <retrain.accelerate_config> --num_processes N -m sft.train ...`` as a subprocess,
exactly as `make sft` does on GPUs (DDP or ZeRO-3). Either way the gradient accumulation is chosen so that
per-device batch × accumulation × processes equals the SFT recipe's effective batch (per-device batch × accumulation
× ``retrain.sft_processes``, the processes SFT ran on): RL retrains with the batch SFT was tuned for, or refuses.
"""

import contextlib
import gc
import logging
import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from seekhelp.config import RecipeError
from seekhelp.errors import SeekhelpError

log = logging.getLogger("rl.policy")

KINDS = ("local", "server", "vllm")
ENGINES = ("transformers", "vllm")
LAUNCHERS = ("inprocess", "accelerate")


class RetrainError(SeekhelpError, RuntimeError):
    """The retraining subprocess failed (its own output says why)."""


@dataclass
class PolicyConfig:
    kind: str = "local"  # local | server | vllm (see the module docstring)
    engine: str = "transformers"  # server: transformers (`transformers serve`, CPU) | vllm (`vllm serve`, GPU)
    extra_args: list[str] = field(default_factory=list)  # server: extra flags, e.g. [--tensor-parallel-size, "2"]
    max_concurrency: int = 64  # server: requests in flight
    # server: sampling fields sent with every rollout request beside the OpenAI ones. vLLM otherwise takes the
    # checkpoint's generation config (Qwen3 2507: top_k 20, top_p 0.8) and narrows the exploration the recipe's
    # temperature asks for; the GPU recipe sends {top_k: -1, min_p: 0.0, repetition_penalty: 1.0}
    extra_body: dict | None = None
    gpu_memory_utilization: float = 0.5  # vllm (in-process)
    max_model_len: int | None = None  # vllm (in-process): the KV cache is sized for this context, not the model's
    start_timeout_s: float = 600.0  # server: how long to wait for /health
    # after a served policy stops: wait until every visible GPU has at most this many MiB in use before the retrain
    # starts (the server's worker processes free their memory after its API process exits); None: no wait
    gpu_free_mib: int | None = None
    gpu_free_timeout_s: float = 300.0


@dataclass
class RetrainConfig:
    launcher: str = "inprocess"  # inprocess | accelerate
    accelerate_config: str = "sft/accelerate/ddp.yaml"  # accelerate: its config file
    num_processes: int = 1  # accelerate: processes (GPUs) of the retrain
    sft_processes: int = 1  # processes the SFT recipe ran on (its effective batch is per-device x accum x this)


def check(policy: PolicyConfig, retrain: RetrainConfig) -> None:
    if policy.kind not in KINDS:
        raise RecipeError(f"policy.kind: {policy.kind!r} is not one of {', '.join(KINDS)}")
    if policy.engine not in ENGINES:
        raise RecipeError(f"policy.engine: {policy.engine!r} is not one of {', '.join(ENGINES)}")
    if retrain.launcher not in LAUNCHERS:
        raise RecipeError(f"retrain.launcher: {retrain.launcher!r} is not one of {', '.join(LAUNCHERS)}")
    if retrain.launcher == "accelerate" and not Path(retrain.accelerate_config).is_file():
        raise RecipeError(f"retrain.accelerate_config: {retrain.accelerate_config}: no such file")
    if retrain.num_processes < 1 or retrain.sft_processes < 1:
        raise RecipeError("retrain.num_processes and retrain.sft_processes must be >= 1")


class PolicySampler:
    """Opens the backend that samples a checkpoint, one at a time (the previous one is closed first)."""

    def __init__(self, cfg: PolicyConfig, batch_size: int):
        self.cfg, self.batch_size = cfg, batch_size
        self._stack: contextlib.ExitStack | None = None

    def open(self, model_dir: str, label: str):
        self.close()
        self._stack = contextlib.ExitStack()
        if self.cfg.kind == "local":
            from seekhelp.backends.local import TransformersBackend

            return TransformersBackend(model_dir, name=label, max_batch_size=self.batch_size)
        if self.cfg.kind == "vllm":
            from seekhelp.backends.vllm_backend import VLLMBackend

            extra = {"max_model_len": self.cfg.max_model_len} if self.cfg.max_model_len else {}
            backend = VLLMBackend(model_dir, name=label, gpu_memory_utilization=self.cfg.gpu_memory_utilization,
                                  **extra)
            self._stack.callback(backend.close)  # the engine's memory goes back before the retrain
            return backend
        from seekhelp.backends.openai_compat import EndpointConfig, OpenAIBackend
        from seekhelp.backends.server import serve, vllm_serve_command

        command = vllm_serve_command if self.cfg.engine == "vllm" else None
        srv = self._stack.enter_context(serve(model_dir, timeout_s=self.cfg.start_timeout_s, command=command,
                                              extra_args=self.cfg.extra_args))
        log.info("policy %s served at %s (%s)", label, srv.base_url, self.cfg.engine)
        backend = OpenAIBackend(EndpointConfig(base_url=srv.base_url, model=srv.model, label=label,
                                               max_concurrency=self.cfg.max_concurrency,
                                               extra_body=self.cfg.extra_body))
        from seekhelp.backends.openai_compat import EndpointError

        try:  # one real call with the recipe's fields before any rollout (a server refusing them fails here)
            backend.check()
        except EndpointError as e:
            raise EndpointError(f"policy: {e}") from e
        return backend

    def close(self) -> None:
        served = self._stack is not None and self.cfg.kind == "server"
        if self._stack is not None:
            self._stack.close()
            self._stack = None
        if served and self.cfg.gpu_free_mib is not None:
            wait_gpu_memory(self.cfg.gpu_free_mib, self.cfg.gpu_free_timeout_s)
        gc.collect()
        with contextlib.suppress(ImportError):
            import torch

            if torch.cuda.is_available():
                torch.cuda.empty_cache()


def gpu_memory_used_mib() -> list[int] | None:
    """MiB in use on each GPU of $CUDA_VISIBLE_DEVICES (all when unset), as `nvidia-smi` reports it; None where
    there is no nvidia-smi. nvidia-smi itself ignores CUDA_VISIBLE_DEVICES: without `--id` the LLM server's GPUs of
    the same node would count too."""
    import shutil

    exe = shutil.which("nvidia-smi")
    if exe is None:
        return None
    visible = os.environ.get("CUDA_VISIBLE_DEVICES", "").strip()
    ids = [f"--id={visible}"] if visible else []
    out = subprocess.run([exe, *ids, "--query-gpu=memory.used", "--format=csv,noheader,nounits"], capture_output=True,
                         text=True, timeout=30, check=False)
    if out.returncode != 0:
        return None
    return [int(float(x)) for x in out.stdout.split() if x.strip()]


def wait_gpu_memory(free_mib: int, timeout_s: float, poll_s: float = 2.0) -> None:
    """Block until every GPU uses at most `free_mib` MiB: a stopped server's workers may still hold their memory
    after its API process is gone, and a retrain that starts then runs out of memory."""
    import time

    deadline = time.monotonic() + timeout_s
    while (used := gpu_memory_used_mib()) is not None and max(used, default=0) > free_mib:
        if time.monotonic() > deadline:
            raise RetrainError(f"policy.gpu_free_mib: GPUs still use {used} MiB {timeout_s:.0f} s after the policy "
                               f"server stopped (limit {free_mib} MiB); is another process holding them?")
        time.sleep(poll_s)


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
