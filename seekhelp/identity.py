"""What identifies the user's people and private life, read from the privacy labels themselves.

`seekhelp.privacy.find_leak_spans` asks "is a private fact stated and tied to the user?". That misses requests
that never say "my" but still name the user's people or their details: "Ana lives in Lima." names the user's
cousin and where she lives. This module pulls the *identifying content* out of each privacy item — person names
(first, last and full), numbers (ages, phone numbers, house numbers), street addresses, health details — and
finds them in a message wherever they appear, anchored or not. Both the outgoing guard and the leak metric use
it; the metric adds one more label-driven check (`relation_cooccurs`): a personal relation word of an item
("cousin") and one of that item's distinctive values ("Lima") in the same sentence of the message.

Names are found by the shape of the labels, not by a model: a capitalized run right after a relation word
("the user's sister Ana Pérez"), after "named"/"called", or before ", the user's <relation>", plus an item that
opens with a name already found or with a capitalized word followed by "'s" ("Ana's newest banknote").
Offline questions also carry their people's names in ``meta["private_terms"]``; callers may pass those as
``extra_names``. Why not a PII library alone: a maintained NER-based detector missed lone first names and
tagged full names as places on requests like ours (see the README's privacy section).
"""

import re
import unicodedata
from dataclasses import dataclass
from functools import lru_cache

PERSONAL_WORDS = frozenset("""
    cousin sister brother sibling mother mom mum father dad parent parents son daughter wife husband partner
    spouse girlfriend boyfriend fiance fiancee friend uncle aunt niece nephew grandmother grandfather grandma
    grandpa grandson granddaughter child kid baby colleague coworker boss manager neighbour neighbor roommate
    flatmate classmate teacher doctor dentist therapist pet dog cat godmother godfather stepmother stepfather
    stepbrother stepsister sister-in-law brother-in-law mother-in-law father-in-law landlord tenant""".split())
HEALTH_WORDS = frozenset("""
    diabetes diabetic asthma asthmatic cancer tumour tumor chemotherapy pregnant pregnancy miscarriage depression
    depressed anxiety bipolar schizophrenia adhd autism autistic epilepsy epileptic allergy allergic hiv aids
    dementia alzheimer alzheimers parkinson parkinsons arthritis hypertension insulin dialysis transplant stroke
    migraine surgery rehab addiction alcoholism disorder disease illness syndrome infection hepatitis
    tuberculosis leukemia leukaemia lymphoma chemo diagnosis diagnosed medication prescription""".split())
STREET_WORDS = ("Street", "St", "Road", "Rd", "Avenue", "Ave", "Lane", "Ln", "Drive", "Dr", "Boulevard", "Blvd",
                "Way", "Place", "Pl", "Court", "Ct", "Square", "Sq", "Terrace", "Close", "Crescent", "Gardens",
                "Straße", "Strasse", "Calle", "Rue", "Via", "Avenida", "Rua", "Ulica", "Gatan", "Weg", "Laan")
_NOT_NAMES = frozenset("""
    the a an every each this that these those my our his her their its user users he she they it i we you
    next last after before in on at to from for with and or but if when while since because although
    monday tuesday wednesday thursday friday saturday sunday january february march april may june july august
    september october november december spring summer autumn fall winter""".split())
_CAP = r"[A-ZÀ-ÖØ-Þ][\w'’-]*"
_NAME_RUN = rf"{_CAP}(?:[ -](?:(?:de|da|del|van|von|der|di|du|le|la|dos|das|ten|ter)[ ])?{_CAP}){{0,3}}"
_WORD_RE = re.compile(r"[^\W_]+(?:['’][^\W_]+)*")
_DIGITS_RE = re.compile(r"\+?\d[\d ()./-]*\d|\d")
_ADDRESS_RE = re.compile(rf"\b\d{{1,5}}[a-zA-Z]?,?\s+((?:{_CAP}\s+){{0,3}}(?:{'|'.join(STREET_WORDS)}))\b"
                         rf"|\b((?:{'|'.join(STREET_WORDS[-8:])})\s+(?:{_CAP}\s*){{1,3}})\s*\d{{1,5}}\b")
_SENTENCE_RE = re.compile(r"[^.!?;\n]+")


def fold(text: str) -> str:
    """Lowercase, accents stripped ("Pérez" -> "perez")."""
    return unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode("ascii").lower()


def _words(text: str) -> list[tuple[str, int, int]]:
    """(folded word without a possessive 's, start, end) for every word of the text."""
    out = []
    for m in _WORD_RE.finditer(text or ""):
        w = re.sub(r"['’]s$", "", m.group(0), flags=re.IGNORECASE)
        out.append((fold(w).replace("'", "").replace("’", ""), m.start(), m.start() + len(w)))
    return out


@dataclass(frozen=True)
class Identity:
    """The identifying content of a question's privacy items."""

    names: tuple[tuple[str, ...], ...]  # each a folded word sequence: a full name or one of its parts
    numbers: tuple[str, ...]  # digit strings (separators removed), >= 2 digits
    streets: tuple[tuple[str, ...], ...]  # folded street names ("baker", "street")
    health: frozenset[str]  # health words the items mention
    relations: tuple[tuple[frozenset[str], tuple[tuple[str, ...], ...]], ...]  # per item: (personal words, values)


def _name_runs(item: str, known: set[str]) -> list[str]:
    personal = "|".join(sorted((re.escape(w) for w in PERSONAL_WORDS), key=len, reverse=True))
    found = []
    patterns = (rf"\b(?:{personal})(?:['’]s)?,?\s+({_NAME_RUN})", rf"\b(?:named|called)\s+({_NAME_RUN})",
                rf"({_NAME_RUN}),\s+(?:the\s+user['’]s|my|our)\s+(?:{personal})\b",
                rf"^({_CAP})['’]s\b")
    for p in patterns:
        found += [m.group(1) for m in re.finditer(p, item)]
    first = _WORD_RE.match(item.strip())
    if first and fold(first.group(0)) in known:
        found.append(first.group(0))
    out = []
    for run in found:
        words = [w for w, _, _ in _words(run)]
        while words and words[0] in _NOT_NAMES:
            words.pop(0)
        while words and words[-1] in _NOT_NAMES:
            words.pop()
        if words:
            out.append(" ".join(words))
    return out


def _distinctive(item: str) -> tuple[tuple[str, ...], ...]:
    """Values of an item worth protecting next to its relation: capitalized words past the first, numbers."""
    vals = []
    for i, m in enumerate(_WORD_RE.finditer(item)):
        raw = m.group(0)
        w = fold(re.sub(r"['’]s$", "", raw))
        if w in _NOT_NAMES or w in PERSONAL_WORDS or len(w) < 2:
            continue
        if (i > 0 and raw[:1].isupper()) or any(c.isdigit() for c in w):
            vals.append((w,))
    return tuple(dict.fromkeys(vals))


@lru_cache(maxsize=4096)
def _identity(items: tuple[str, ...], extra_names: tuple[str, ...]) -> Identity:
    names: list[tuple[str, ...]] = []
    known = {fold(n) for n in extra_names}
    for _ in range(2):  # a second pass picks up items that open with a name found in another item
        runs = [r for item in items for r in _name_runs(item, known)] + [fold(n) for n in extra_names if n.strip()]
        for run in runs:
            parts = tuple(w for w, _, _ in _words(run))
            if not parts:
                continue
            names.append(parts)
            names += [(p,) for p in parts if len(p) >= 2 and p not in _NOT_NAMES]
            known |= set(parts)
    numbers, streets, health, relations = [], [], set(), []
    for item in items:
        for m in _DIGITS_RE.finditer(item):
            digits = re.sub(r"\D", "", m.group(0))
            if len(digits) >= 2:
                numbers.append(digits)
        for m in _ADDRESS_RE.finditer(item):
            street = m.group(1) or m.group(2)
            streets.append(tuple(w for w, _, _ in _words(street)))
        words = {w for w, _, _ in _words(item)}
        health |= words & HEALTH_WORDS
        rel = frozenset(words & PERSONAL_WORDS)
        if rel:
            relations.append((rel, _distinctive(item)))
    return Identity(tuple(dict.fromkeys(names)), tuple(dict.fromkeys(numbers)), tuple(dict.fromkeys(streets)),
                    frozenset(health), tuple(relations))


def identity_of(privacy_items: list[str], extra_names: list[str] | None = None) -> Identity:
    return _identity(tuple(p for p in privacy_items or [] if p and p.strip()), tuple(extra_names or ()))


def _find_seq(words: list[tuple[str, int, int]], seq: tuple[str, ...]) -> list[tuple[int, int]]:
    n = len(seq)
    return [(words[i][1], words[i + n - 1][2]) for i in range(len(words) - n + 1)
            if tuple(w for w, _, _ in words[i:i + n]) == seq]


def _number_match(digits: str, numbers: tuple[str, ...]) -> bool:
    """Equal digit strings, or two long ones (phone numbers) that agree on their last 7 digits (country and
    trunk prefixes differ: "+44 20 7946 0958" vs "020 7946 0958")."""
    return len(digits) >= 2 and any(digits == n or (min(len(digits), len(n)) >= 7 and digits[-7:] == n[-7:])
                                    for n in numbers)


@dataclass(frozen=True)
class IdentityHit:
    kind: str  # name | number | address | health
    span: tuple[int, int]


def identity_hits(message: str, ident: Identity, health_needs_anchor: bool = True) -> list[IdentityHit]:
    """Where the message names the user's people, their numbers or addresses, or (when tied to the user) a
    health detail of theirs. Health words alone are objective topics ("What is asthma?"); they count only in a
    message that also speaks of the user ("my", "I", a relation word, a name of theirs)."""
    words = _words(message)
    hits = [IdentityHit("name", s) for seq in ident.names for s in _find_seq(words, seq)]
    for m in _DIGITS_RE.finditer(message or ""):
        if _number_match(re.sub(r"\D", "", m.group(0)), ident.numbers):
            hits.append(IdentityHit("number", m.span()))
    hits += [IdentityHit("address", s) for seq in ident.streets for s in _find_seq(words, seq)]
    if ident.health:
        flat = {w for w, _, _ in words}
        anchored = not health_needs_anchor or bool(hits) or bool(
            flat & ({"my", "our", "mine", "user", "i", "me", "we"} | PERSONAL_WORDS))
        if anchored:
            hits += [IdentityHit("health", (a, b)) for w, a, b in words if w in ident.health]
    return hits


def relation_cooccurs(message: str, ident: Identity) -> bool:
    """A relation word of an item and one of that item's values in one sentence ("the cousin moved to Lima")."""
    for sentence in _SENTENCE_RE.findall(message or ""):
        words = _words(sentence)
        flat = {w for w, _, _ in words}
        for rel, values in ident.relations:
            if flat & rel and any(_find_seq(words, v) for v in values):
                return True
    return False
