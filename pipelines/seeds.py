"""Seed questions: public QA pairs that privacy injection later rewrites.

One schema for every source (`Seed`). Three sources:

- `offline_seeds`: single- and two-hop geography questions built from the offline knowledge base
  (`seekhelp.knowledge`) over every relation of `pipelines.relations`, with the gold decomposition in
  ``meta["hops"]`` and the question kind the policy must tell apart in ``meta["kind"]`` (self_contained,
  one_missing, two_hop, underspecified, other_fact). Splits are drawn BY COUNTRY: a country (and every question about
  it or its cities) lands in exactly one split, from a hash of its ISO code. Held-out relations never reach train; in
  validation and test a fixed share is held out on one slot family (``meta["heldout_reason"]``: who, frame, form,
  register, detail, statement or reference; see pipelines.families).
- `hub_seeds` / `hub_split_seeds`: the paper's six public sets from the Hugging Face Hub
  (``RUC-NLPIR/FlashRAG_datasets``, or a local folder in its layout). The Hub's splits do not line up with ours:
  PopQA has only a test split, HotpotQA, 2WikiMultihopQA and MuSiQue have no test split. A recipe says which Hub
  split feeds which of our splits; where two of ours draw on one Hub split, shares are carved from it by a hash of
  the question id, so the carve is the same on every machine and for every limit, and never overlaps.
- `local_seeds`: a local parquet / jsonl file in the same layout (``id``, ``question``, ``golden_answers``).

Bad input raises `SeedError` with one line naming the file (or dataset) and the row and field.
"""

import hashlib
import json
import random
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field, fields
from itertools import islice
from pathlib import Path
from typing import Any

from pipelines.families import families_for
from pipelines.relations import RELATIONS, SECOND_HOPS, SINGLE_KINDS, country_aliases, country_hops, hop, kinds_of
from seekhelp.errors import SeekhelpError
from seekhelp.knowledge import Country, KnowledgeBase, fold, the
from seekhelp.records import content_hash, question_id

SPLITS = ("train", "validation", "test")
SPLIT_SHARES = (70, 15, 15)  # percent of countries per split (validation and test: enough for every kind and family)
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
HELDOUT_FAMILY_SHARE = 0.4  # of validation/test questions (outside held-out relations) held out on one slot family
MIN_COUNTRY_POPULATION = 100_000
MIN_CITY_POPULATION = 500_000
CITIES_PER_COUNTRY = 2
MAX_QUESTION_CHARS = 4096  # a seed question longer than this is refused (real QA questions are far shorter)


class SeedError(SeekhelpError, ValueError):
    """Bad seed input; the message is one line naming the file or dataset, the row and the field."""


@dataclass
class Seed:
    question: str
    answers: list[str]
    source: str
    split: str
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def id(self) -> str:
        base = question_id(self.question, self.answers)
        # a minimal-pair twin shares its seed's public question: its kind tells the two apart
        return content_hash("twin", base, self.meta["kind"], length=len(base)) if self.meta.get("twin_of") else base

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Seed":
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


# ---------------------------------------------------------------- offline (knowledge base)


def entity_split(code: str) -> str:
    """The split of a country, fixed by a hash of its ISO code (independent of any seed)."""
    bucket = int(hashlib.sha256(f"seekhelp-geo:{code.upper()}".encode()).hexdigest(), 16) % 100
    edge = 0
    for split, share in zip(SPLITS, SPLIT_SHARES, strict=True):
        edge += share
        if bucket < edge:
            return split
    return SPLITS[-1]


def _bucket(*parts: Any) -> int:
    return int(hashlib.sha256(":".join(map(str, parts)).encode()).hexdigest(), 16) % 1000


def eligible_countries(kb: KnowledgeBase) -> list[Country]:
    """Countries whose questions have one clear answer: a capital no other country shares, a currency, a
    continent other than Antarctica, and enough people to be widely known."""
    capitals = Counter(fold(c.capital) for c in kb.countries.values() if c.capital)
    return [c for c in kb.countries.values()
            if c.capital and capitals[fold(c.capital)] == 1 and c.currency_code and c.currency_name
            and c.continent and c.continent != "Antarctica" and c.population >= MIN_COUNTRY_POPULATION]


def _cities_for(kb: KnowledgeBase, c: Country, taken: Counter) -> list:
    """The largest cities of a country whose names are unique in the KB and say nothing about the country."""
    cities = [x for x in kb.cities.values() if x.country_code == c.code and x.population >= MIN_CITY_POPULATION
              and taken[fold(x.name)] == 1 and all(ord(ch) < 256 for ch in x.name) and fold(x.name) != fold(c.capital)
              and fold(c.name) not in fold(x.name) and fold(x.name) not in fold(c.name)]
    return sorted(cities, key=lambda x: (-x.population, x.id))[:CITIES_PER_COUNTRY]


def country_seeds(kb: KnowledgeBase, c: Country, city_names: Counter) -> list[Seed]:
    """Every question about one country and its largest cities. A single-hop chain becomes one of the kinds its
    relation takes (fixed by a hash); a chain through a held-out relation is dropped from train, and in validation
    and test a share of the rest is held out on one slot family (`meta["heldout_reason"]`, pipelines.families)."""
    split, hops = entity_split(c.code), country_hops(kb, c)

    def make(chain: list[dict], pivot: dict, names: tuple[list, list], kind: str | None = None) -> Seed | None:
        relations = [h["relation"] for h in chain]
        if kind is None:
            options = [k for k in kinds_of(relations[0]) if k in SINGLE_KINDS]
            kind = options[_bucket("kind", c.code, pivot["name"], *relations) % len(options)]
        question = (chain[0]["question"] if len(chain) == 1 else
                    RELATIONS[relations[1]].seed.format(s=RELATIONS[relations[0]].pivot[0].format(x=pivot["name"])))
        prop = RELATIONS[relations[-1]].property
        heldout = None
        if any(RELATIONS[r].heldout for r in relations):
            heldout = "relation"
        elif split != "train" and _bucket("heldout", question) < HELDOUT_FAMILY_SHARE * 1000:
            fams = families_for(kind, prop)
            heldout = fams[_bucket("family", question) % len(fams)]
        if heldout == "relation" and split == "train":
            return None
        meta = {"entities": names[0], "entity_names": names[1], "country": c.name, "kind": kind,
                "chain": "_".join(relations), "relations": relations, "hops": chain, "two_hop": len(chain) == 2,
                "pivot": pivot, "property": prop, "answer_alone": kind == "self_contained",
                "heldout": heldout is not None, "heldout_reason": heldout}
        if kind == "other_fact":  # a public fact about the same country that does not settle the question
            sides = sorted(r for r in hops if r not in (relations[0], "capital_of") and not RELATIONS[r].heldout)
            side = sides[_bucket("side", question) % len(sides)]
            meta["side"] = {"relation": side, "subject": c.name, "object": hops[side]["object"]}
        return Seed(question, list(chain[-1]["answers"]), "geo", split, meta)

    names = ([c.code], [c.name])
    out = [make([hop], {"type": "country", "name": c.name}, names) for r, hop in hops.items() if r != "capital_of"]
    cap_pivot = {"type": "capital", "name": c.capital}
    out.append(make([hops["capital_of"]], cap_pivot, names))
    out += [make([hops["capital_of"], hops[r]], cap_pivot, names, "two_hop") for r in SECOND_HOPS
            if r in hops and r != "capital"]
    for city in _cities_for(kb, c, city_names):
        fact = next(f.text for f in kb.facts_about(city.id) if f.relation == "country")
        to_country = hop("city_country", city.name, country_aliases(c.name), fact, the(c.name))
        pivot, names = {"type": "city", "name": city.name}, ([c.code, city.id], [c.name, city.name])
        out.append(make([to_country], pivot, names))
        out += [make([to_country, hops[r]], pivot, names, "two_hop") for r in SECOND_HOPS if r in hops]
    return [s for s in out if s is not None]


def _round_robin(items: list[Seed], key: Callable[[Seed], str]) -> list[Seed]:
    groups: dict[str, list[Seed]] = {}
    for s in items:
        groups.setdefault(key(s), []).append(s)
    order = sorted(groups)
    return [groups[k][i] for i in range(max(map(len, groups.values()), default=0)) for k in order
            if i < len(groups[k])]


def balanced(items: list[Seed]) -> list[Seed]:
    """The seeds interleaved round-robin over their groups (each kind on seen members, held out on a slot family,
    held-out relations; kinds and families interleaved inside those), so any prefix of a split, the demo's few
    dozen test questions included, covers every group."""
    items = _round_robin(items, lambda s: s.meta["kind"])
    items = _round_robin(items, lambda s: s.meta["heldout_reason"] or "")
    return _round_robin(items, lambda s: ("heldout:relation" if s.meta["heldout_reason"] == "relation" else
                                          "heldout:family" if s.meta["heldout"] else s.meta["kind"]))


def offline_seeds(n_per_split: dict[str, int] | None = None, seed: int = 0,
                  kb: KnowledgeBase | None = None, pairs: bool = True) -> list[Seed]:
    """Geography seeds from the offline KB: up to n per split (all of them for a split not limited), shuffled
    deterministically by `seed`, then balanced over kinds and held-out groups. Which country is in which split,
    which kind a chain becomes and which questions are held out do not depend on `seed`. `pairs`: train in minimal
    pairs (`minimal_pairs`), for the offline injector."""
    kb = kb or KnowledgeBase.from_geonames()
    city_names = Counter(fold(x.name) for x in kb.cities.values())
    city_names.update(fold(c.name) for c in kb.countries.values())
    city_names.update(fold(c.capital) for c in kb.countries.values() if c.capital)
    by_split: dict[str, list[Seed]] = {s: [] for s in SPLITS}
    for c in sorted(eligible_countries(kb), key=lambda x: x.code):
        for s in country_seeds(kb, c, city_names):
            by_split[s.split].append(s)
    out: list[Seed] = []
    for split in SPLITS:
        items = by_split[split]
        random.Random(f"offline-seeds:{seed}:{split}").shuffle(items)
        items = balanced(items)
        limit = None if n_per_split is None else n_per_split.get(split, 0)
        items = items if limit is None else items[:limit]
        out += minimal_pairs(items) if pairs and split == "train" else items
    return out


def self_contained_twin(s: Seed) -> Seed:
    """An other-fact seed asked as self-contained: the question states the fact asked for instead of another one.
    Injection draws the skeleton from the public question, so the two questions differ only in the stated fact."""
    meta = {k: v for k, v in s.meta.items() if k != "side"}
    meta |= {"kind": "self_contained", "answer_alone": True, "twin_of": s.id}
    return Seed(s.question, list(s.answers), s.source, s.split, meta)


def minimal_pairs(items: list[Seed]) -> list[Seed]:
    """Train seeds where other-fact questions come with a self-contained twin: the same skeleton, with the asked fact
    stated instead of another one, so the one thing that tells the two kinds apart is which fact is stated. Each twin
    takes the place of a self-contained seed about a country, so every kind keeps its count (the demo's 240: 34 pairs;
    self-contained questions about a city stay); who pairs with whom does not depend on the order.

    Why: unpaired, the SFT model wrote the stated fact right and still called it settling ("asks for the population
    of Lebanon. It states that the currency of Lebanon is the Pound, which gives it"). Measured on the 120
    validation questions, demo recipes, two SFT seeds per arm (42, 43), paired by seed question:
      EM              unpaired 45.8 / 48.3   pairs 50.0 / 53.3   pooled difference +4.6 [-0.8, +10.4]
      other-fact asked (n=22)         59.1 / 81.8         68.2 / 68.2
      needs a fact asked (n=96)       89.6 / 94.8         90.6 / 90.6
      self-contained alone (n=24)     62.5 / 25.0         41.7 / 66.7
    The decision rates move more between two seeds on the same data than between the arms, so the pairs are kept for
    EM and for what they teach, not for a decision gain shown. (A first pairing order gave EM 55.0, other-fact asked
    72.7 %. Thinks that name the stated relation as they name the asked one, on top of the pairs, gave EM -4.2
    [-12.5, +4.2] against it and the same 72.7 %, so the teacher kept its sentences.)"""
    items = list(items)
    others = sorted((s for s in items if s.meta["kind"] == "other_fact"), key=lambda s: s.id)
    slots = sorted((i for i, s in enumerate(items) if s.meta["kind"] == "self_contained"
                    and RELATIONS[s.meta["relations"][0]].subject == "country"), key=lambda i: items[i].id)
    for i, s in zip(slots, others, strict=False):
        items[i] = self_contained_twin(s)
    return items


# ---------------------------------------------------------------- hub and local files


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
