"""Seeds from files: the paper's six public QA sets on the Hugging Face Hub (FlashRAG's layout, or a local folder in
that layout) and single local parquet / jsonl files. Offline geography seeds are in `pipelines.seeds`.

- `hub_seeds` / `hub_split_seeds`: ``RUC-NLPIR/FlashRAG_datasets``. The Hub's splits do not line up with ours:
  PopQA has only a test split, HotpotQA, 2WikiMultihopQA and MuSiQue have no test split. A recipe says which Hub
  split feeds which of our splits; where two of ours draw on one Hub split, shares are carved from it by a hash of
  the question id, so the carve is the same on every machine and for every limit, and never overlaps.
- `local_seeds`: a local parquet / jsonl file in the same layout (``id``, ``question``, ``golden_answers``).

Bad input raises `SeedError` with one line naming the file (or dataset) and the row and field.
"""

import hashlib
import json
from collections.abc import Callable, Iterable
from itertools import islice
from pathlib import Path
from typing import Any

from pipelines.seeds import SPLITS, Seed, SeedError

HUB_REPO = "RUC-NLPIR/FlashRAG_datasets"
FLASHRAG = {"id": "id", "question": "question", "answers": "golden_answers"}
# where each set lives and how its columns map onto Seed; add other layouts here
# and which splits the Hub has for it (FlashRAG's dataset card, `configs:`)
ALL3, NO_TEST = ("train", "dev", "test"), ("train", "dev")
FIELD_MAPPINGS: dict[str, dict[str, Any]] = {
    "nq": {"path": HUB_REPO, "config": "nq", "fields": FLASHRAG, "multi_hop": False, "hub_splits": ALL3},
    "triviaqa": {"path": HUB_REPO, "config": "triviaqa", "fields": FLASHRAG, "multi_hop": False, "hub_splits": ALL3},
    "popqa": {"path": HUB_REPO, "config": "popqa", "fields": FLASHRAG, "multi_hop": False, "hub_splits": ("test",)},
    "hotpotqa": {"path": HUB_REPO, "config": "hotpotqa", "fields": FLASHRAG, "multi_hop": True,
                 "hub_splits": NO_TEST},
    "2wikimultihopqa": {"path": HUB_REPO, "config": "2wikimultihopqa", "fields": FLASHRAG, "multi_hop": True,
                        "hub_splits": NO_TEST},
    "musique": {"path": HUB_REPO, "config": "musique", "fields": FLASHRAG, "multi_hop": True, "hub_splits": NO_TEST},
}
HUB_SPLITS = {"train": "train", "validation": "dev", "dev": "dev", "test": "test"}
MAX_QUESTION_CHARS = 4096  # a seed question longer than this is refused (real QA questions are far shorter)


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def seed_from_row(row: Any, fields_map: dict[str, str], source: str, split: str, where: str,
                  multi_hop: bool = False) -> Seed:
    """One Seed from one row of a table in a known layout; raises SeedError naming `where` and the field."""
    if not isinstance(row, dict):
        raise SeedError(_one_line(f"{where}: expected an object, got {type(row).__name__}"))
    qf, af, idf = fields_map["question"], fields_map["answers"], fields_map.get("id", "id")
    question = row.get(qf)
    if not isinstance(question, str) or not question.strip():
        raise SeedError(_one_line(f"{where}: field '{qf}' is missing or empty"))
    if len(question) > MAX_QUESTION_CHARS:
        raise SeedError(f"{where}: field '{qf}' is {len(question)} characters long (at most {MAX_QUESTION_CHARS})")
    answers = row.get(af)
    if answers is None:
        raise SeedError(_one_line(f"{where}: field '{af}' is missing"))
    if isinstance(answers, str) or not isinstance(answers, Iterable):
        raise SeedError(_one_line(f"{where}: field '{af}' must be a list of strings, got {type(answers).__name__}"))
    answers = list(answers)
    if not answers or not all(isinstance(a, str) and a.strip() for a in answers):
        raise SeedError(_one_line(f"{where}: field '{af}' must be a non-empty list of non-empty strings"))
    meta = {"id": str(row.get(idf, "")), "multi_hop": multi_hop, "entities": [], "hops": []}
    return Seed(question.strip(), [a.strip() for a in answers], source, split, meta)


def _default_loader(path: str, config: str, split: str, revision: str | None = None):
    """`datasets.load_dataset` on the Hub, or on a local folder in the FlashRAG layout (<config>/<split>.jsonl)."""
    from datasets import load_dataset

    local = Path(path)
    if local.is_dir():
        files = sorted(local.glob(f"{config}/{split}.*"))
        if not files:
            raise FileNotFoundError(f"no {config}/{split}.jsonl or .parquet")
        kind = "parquet" if files[0].suffix == ".parquet" else "json"
        return load_dataset(kind, data_files=[str(f) for f in files], split="train")
    return load_dataset(path, config, split=split, revision=revision)


def _hub_rows(name: str, hub_split: str, loader: Callable[..., Any] | None, path: str | None,
              revision: str | None = None):
    if name not in FIELD_MAPPINGS:
        raise SeedError(f"unknown hub set {name!r}; known: {', '.join(sorted(FIELD_MAPPINGS))}")
    spec = FIELD_MAPPINGS[name]
    path = path or spec["path"]
    try:
        pin = {"revision": revision} if revision else {}  # a commit of the dataset repo: the same rows next year
        table = (loader or _default_loader)(path, spec["config"], split=hub_split, **pin)
    except (ValueError, KeyError, FileNotFoundError) as e:
        raise SeedError(_one_line(f"{path}/{spec['config']}: cannot load split {hub_split!r}: {e}")) from e
    return table, spec, f"{path}/{spec['config']}[{hub_split}]"


def hub_seeds(name: str, split: str = "test", limit: int | None = None,
              loader: Callable[..., Any] | None = None, path: str | None = None) -> list[Seed]:
    """Seeds from one split of one of the paper's public sets. `loader` defaults to `datasets.load_dataset`
    (injected in tests); `split` is ours ("validation" maps to the Hub's "dev")."""
    hub_split = HUB_SPLITS.get(split, split)
    table, spec, where = _hub_rows(name, hub_split, loader, path)
    rows = table if limit is None else islice(table, limit)
    return [seed_from_row(row, spec["fields"], name, split, f"{where}: row {i}", spec["multi_hop"])
            for i, row in enumerate(rows)]


def carve_bucket(qid: str) -> float:
    """Where a question falls in [0, 1) for carving: a hash of its id, so no seed, order or limit changes it."""
    return int(hashlib.sha256(f"seekhelp-carve:{qid}".encode()).hexdigest()[:13], 16) / 16**13


def check_split_plan(name: str, splits: dict[str, str], carve: dict[str, float]) -> None:
    """Refuse, in one line, a plan FlashRAG cannot serve or whose carved shares could overlap."""
    if name not in FIELD_MAPPINGS:
        raise SeedError(f"unknown hub set {name!r}; known: {', '.join(sorted(FIELD_MAPPINGS))}")
    have = FIELD_MAPPINGS[name]["hub_splits"]
    for ours, hub in splits.items():
        if ours not in SPLITS:
            raise SeedError(f"{name}: splits: {ours!r} is not one of {', '.join(SPLITS)}")
        if hub not in have:
            raise SeedError(f"{name}: splits.{ours}: the Hub has no {hub!r} split for {name} (it has: "
                            f"{', '.join(have)}; carve {ours} from one of those)")
    for ours, share in carve.items():
        if ours not in splits:
            raise SeedError(f"{name}: carve.{ours}: not in splits")
        if not isinstance(share, int | float) or not 0 < share < 1:
            raise SeedError(f"{name}: carve.{ours}: a share between 0 and 1, got {share!r}")
    for hub in set(splits.values()):
        users = [s for s in SPLITS if splits.get(s) == hub]
        if len([s for s in users if s not in carve]) > 1:
            raise SeedError(f"{name}: {' and '.join(users)} both read the whole {hub!r} split: carve all but one")
        if sum(carve.get(s, 0) for s in users) >= 1:
            raise SeedError(f"{name}: the carved shares of the {hub!r} split add up to 1 or more")


def hub_split_seeds(name: str, splits: dict[str, str], carve: dict[str, float] | None = None,
                    limits: dict[str, int | None] | None = None, loader: Callable[..., Any] | None = None,
                    path: str | None = None, revision: str | None = None) -> list[Seed]:
    """Seeds for several of our splits from one set. `splits` maps ours to the Hub split feeding it (e.g. HotpotQA:
    {train: train, validation: dev, test: train}); `carve` gives the share of its Hub split a split takes when it
    shares one (test: 0.05: the 5% of train questions whose id hashes lowest); the split left uncarved gets the
    rest. `limits` caps each of our splits. A question is kept in one split only (test, then validation)."""
    carve, limits = carve or {}, limits or {}
    check_split_plan(name, splits, carve)
    by_split: dict[str, list[Seed]] = {s: [] for s in splits}
    for hub in sorted(set(splits.values())):
        users = [s for s in SPLITS if splits.get(s) == hub]
        edges, lo = [], 0.0
        for s in [u for u in users if u in carve]:
            edges.append((lo, lo + carve[s], s))
            lo += carve[s]
        rest = next((u for u in users if u not in carve), None)
        table, spec, where = _hub_rows(name, hub, loader, path, revision)
        for i, row in enumerate(table):
            if all(limits.get(u) is not None and len(by_split[u]) >= limits[u] for u in users):
                break
            seed = seed_from_row(row, spec["fields"], name, "", f"{where}: row {i}", spec["multi_hop"])
            b = carve_bucket(seed.id)
            ours = next((s for a, z, s in edges if a <= b < z), None if b < lo else rest)
            if ours is None or (limits.get(ours) is not None and len(by_split[ours]) >= limits[ours]):
                continue
            seed.split = ours
            by_split[ours].append(seed)
    seen: set[str] = set()
    for split in reversed(SPLITS):  # a question the Hub has twice is kept where evaluation reads it
        kept = [x for x in by_split.get(split, []) if x.id not in seen]
        seen.update(x.id for x in kept)
        by_split[split] = kept
    return [x for split in SPLITS for x in by_split.get(split, [])]


def _read_rows(path: Path) -> list[Any]:
    if not path.is_file():
        raise SeedError(f"{path}: no such file")
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        import pyarrow.parquet as pq

        try:
            return pq.read_table(path).to_pylist()
        except Exception as e:  # any reader failure is bad input
            raise SeedError(_one_line(f"{path}: not a readable parquet file ({e})")) from e
    if suffix in (".jsonl", ".json"):
        rows = []
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError as e:
            line = path.read_bytes()[: e.start].count(b"\n") + 1
            raise SeedError(f"{path}: line {line}: not UTF-8 text ({e.reason} at byte {e.start})") from e
        for i, line in enumerate(text.splitlines()):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as e:
                    raise SeedError(f"{path}: line {i + 1}: not valid JSON ({e.msg})") from e
        return rows
    raise SeedError(f"{path}: unsupported file type {suffix!r} (use .parquet or .jsonl)")


def local_seeds(path: str | Path, source: str | None = None, split: str = "test",
                fields_map: dict[str, str] | None = None, multi_hop: bool = False) -> list[Seed]:
    """Seeds from a local parquet or jsonl file in the FlashRAG layout (or `fields_map`)."""
    path = Path(path)
    rows = _read_rows(path)
    fm = fields_map or FLASHRAG
    return [seed_from_row(row, fm, source or path.stem, split, f"{path}: row {i}", multi_hop)
            for i, row in enumerate(rows)]
