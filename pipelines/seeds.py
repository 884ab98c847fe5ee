"""Seed questions: public QA pairs that privacy injection later rewrites.

One schema for every source (`Seed`), and the offline source:

- `offline_seeds`: single- and two-hop geography questions built from the offline knowledge base
  (`seekhelp.knowledge`) over every relation of `pipelines.relations`, with the gold decomposition in
  ``meta["hops"]`` and the question kind the policy must tell apart in ``meta["kind"]`` (self_contained,
  one_missing, two_hop, underspecified, other_fact). Splits are drawn BY COUNTRY: a country (and every question about
  it or its cities) lands in exactly one split, from a hash of its ISO code. Held-out relations never reach train; in
  validation and test a fixed share is held out on one slot family (``meta["heldout_reason"]``: who, frame, form,
  register, detail, statement or reference; see pipelines.families).
- `pipelines.seed_files`: the paper's public sets (Hub or local files), in the same schema.

Bad seed input raises `SeedError`, one line naming the file (or dataset), the row and the field.
"""

import hashlib
import random
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from pipelines.families import families_for
from pipelines.relations import RELATIONS, SECOND_HOPS, SINGLE_KINDS, country_aliases, country_hops, hop, kinds_of
from seekhelp.errors import SeekhelpError
from seekhelp.knowledge import Country, KnowledgeBase, fold, the
from seekhelp.records import content_hash, question_id

SPLITS = ("train", "validation", "test")
SPLIT_SHARES = (70, 15, 15)  # percent of countries per split (validation and test: enough for every kind and family)
HELDOUT_FAMILY_SHARE = 0.4  # of validation/test questions (outside held-out relations) held out on one slot family
MIN_COUNTRY_POPULATION = 100_000
MIN_CITY_POPULATION = 500_000
CITIES_PER_COUNTRY = 2


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
    takes the place of a self-contained seed about a country, so every kind keeps its count (the demo's 480: 65 pairs;
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
