"""Start and stop a real OpenAI-compatible endpoint (`transformers serve`) on a local model.

Used by `seekhelp serve-llm`, by `seekhelp ask` when no endpoint is given, by pipelines and by tests.
"""

import contextlib
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import httpx

from seekhelp.errors import SeekhelpError

log = logging.getLogger(__name__)


class ServerError(SeekhelpError, RuntimeError):
    pass


@dataclass
class RunningServer:
    base_url: str  # ends with /v1
    model: str  # the name to send in requests (the server is pinned to this exact model path)
    label: str  # the short name recorded in trajectories
    process: subprocess.Popen | None
    log_path: Path | None = None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_healthy(root_url: str, timeout_s: float = 180.0, process: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise ServerError(f"server exited with code {process.returncode} before becoming healthy")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"{root_url}/health", timeout=2.0).status_code == 200:
                return
        time.sleep(0.5)
    raise ServerError(f"{root_url}/health did not answer within {timeout_s:.0f} s")


def _serve_command(model_dir: str, port: int, host: str) -> list[str]:
    exe = Path(sys.executable).with_name("transformers")
    base = [str(exe)] if exe.exists() else [sys.executable, "-m", "transformers.cli.transformers"]
    return [*base, "serve", model_dir, "--host", host, "--port", str(port), "--device", "cpu"
            if os.environ.get("SEEKHELP_SERVE_DEVICE", "auto") == "cpu" else "auto", "--log-level", "warning"]


def vllm_executable() -> str:
    """`$VLLM_BIN` (vLLM in its own environment, e.g. .venv-vllm/bin/vllm: it pins its own torch and transformers),
    else the `vllm` beside this Python, else `vllm` on PATH."""
    if os.environ.get("VLLM_BIN"):
        return os.environ["VLLM_BIN"]
    exe = Path(sys.executable).with_name("vllm")
    return str(exe) if exe.exists() else "vllm"


def vllm_serve_command(model_dir: str, port: int, host: str) -> list[str]:
    """`vllm serve` on a model folder (GPU machines), answering to that folder's path as its model id, like ours."""
    return [vllm_executable(), "serve", model_dir, "--host", host, "--port", str(port),
            "--served-model-name", model_dir]


def _die_with_parent() -> None:
    """Runs in the server's child process (Linux): SIGTERM it when our process dies, even by SIGKILL, so that no
    orphaned server keeps a port and two cores busy after an interrupted run."""
    if sys.platform.startswith("linux"):
        import ctypes

        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # 1 = PR_SET_PDEATHSIG


@contextlib.contextmanager
def serve(model: str = "smollm2-135m", port: int | None = None, host: str = "127.0.0.1",
          log_path: Path | None = None, timeout_s: float = 180.0,
          command: Callable[[str, int, str], list[str]] | None = None,
          extra_args: Sequence[str] = ()) -> Iterator[RunningServer]:
    """Run `transformers serve` (or `command(model_dir, port, host)`, e.g. `vllm_serve_command`) on a registry model
    or folder for the duration of the block; `extra_args` are appended to its command line."""
    from seekhelp import models

    model_dir = models.resolve(model)
    port = port or free_port()
    env = {**os.environ, "HF_HUB_OFFLINE": os.environ.get("HF_HUB_OFFLINE", "1"), "TOKENIZERS_PARALLELISM": "false"}
    log_file = open(log_path, "ab") if log_path else subprocess.DEVNULL  # noqa: SIM115
    argv = [*(command or _serve_command)(model_dir, port, host), *extra_args]
    proc = subprocess.Popen(argv, stdout=log_file, stderr=subprocess.STDOUT,
                            env=env, start_new_session=True, preexec_fn=_die_with_parent)
    root = f"http://{host}:{port}"
    try:
        log.info("starting transformers serve on %s (model %s)", root, model)
        wait_healthy(root, timeout_s, proc)
        yield RunningServer(base_url=f"{root}/v1", model=model_dir, label=model, process=proc, log_path=log_path)
    finally:
        stop(proc)
        if log_path:
            log_file.close()


def stop(proc: subprocess.Popen, grace_s: float = 10.0) -> None:
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(grace_s)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
