"""Where a policy checkpoint is sampled: in this process, behind a server started for it, or vLLM's engine.

`PolicyConfig.kind`:

- ``local``: the checkpoint generated in this process with transformers, batched (the CPU demo);
- ``server``: an OpenAI-compatible server on the checkpoint, started when it is opened and stopped when it is closed
  (its GPU memory is awaited, not only its API process): ``engine: vllm`` runs ``vllm serve`` (GPU; tensor or data
  parallel through ``extra_args``), ``engine: transformers`` runs ``transformers serve`` (CPU). Generation is then
  HTTP calls, concurrent up to ``max_concurrency``, batched by the server;
- ``vllm``: vLLM's engine inside this process (one GPU process, no HTTP), shut down when closed.

The RL rounds sample rollouts through it (`rl.policy`), and the eval generates its trained SLMs' turns through it
(`slm_serving` in an eval recipe), so thousands of eval questions go through the same engine as the rollouts.
"""

import contextlib
import gc
import logging
import os
import subprocess
from dataclasses import dataclass, field

from seekhelp.config import RecipeError
from seekhelp.errors import SeekhelpError

log = logging.getLogger("seekhelp.sampler")

KINDS = ("local", "server", "vllm")
ENGINES = ("transformers", "vllm")


class GPUBusyError(SeekhelpError, RuntimeError):
    """The GPUs still hold a stopped server's memory after the wait."""


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


def check_policy(cfg: "PolicyConfig", where: str = "policy") -> None:
    if cfg.kind not in KINDS:
        raise RecipeError(f"{where}.kind: {cfg.kind!r} is not one of {', '.join(KINDS)}")
    if cfg.engine not in ENGINES:
        raise RecipeError(f"{where}.engine: {cfg.engine!r} is not one of {', '.join(ENGINES)}")


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
            raise GPUBusyError(f"policy.gpu_free_mib: GPUs still use {used} MiB {timeout_s:.0f} s after the policy "
                               f"server stopped (limit {free_mib} MiB); is another process holding them?")
        time.sleep(poll_s)
