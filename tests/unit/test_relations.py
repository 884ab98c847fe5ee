"""The relation table: every kind x relation has its wording, and the experts agree with it on what is missing."""

import dataclasses

import pytest

from pipelines import families, relations
from pipelines.families import FORMS, FRAMES
from pipelines.relations import KINDS, RELATIONS, check_table, kinds_of
from seekhelp.knowledge import KnowledgeBase, fold


@pytest.fixture(scope="module")
def kb() -> KnowledgeBase:
    return KnowledgeBase.from_geonames()


def test_table_is_complete():
    assert check_table() == []
    assert set(RELATIONS) == {"capital", "capital_of", "currency", "continent", "languages", "neighbours",
                              "population", "city_country"}
    assert {k for r in RELATIONS for k in kinds_of(r)} == set(KINDS)
    assert all(r.property in FRAMES and r.property in FORMS for r in RELATIONS.values())


@pytest.mark.parametrize("field", ["ask", "state", "vague", "there", "follow_up", "need"])
def test_a_forgotten_template_fails_loudly(monkeypatch, field):
    name = "currency"
    broken = {**RELATIONS, name: dataclasses.replace(RELATIONS[name], **{field: "" if field == "need" else ()})}
    monkeypatch.setattr(relations, "RELATIONS", broken)
    assert any(p.startswith(f"{name} x ") and f"no {field}" in p for p in check_table()), check_table()


def test_a_property_without_heldout_members_fails(monkeypatch):
    seen_only = {**FRAMES, "continent": (FRAMES["continent"][0], ())}
    monkeypatch.setattr(families, "FRAMES", seen_only)
    assert any("'continent' needs seen and held-out" in p for p in check_table())


def test_a_relation_without_heldout_there_fails(monkeypatch):
    broken = {**RELATIONS, "currency": dataclasses.replace(RELATIONS["currency"], there_heldout=())}
    monkeypatch.setattr(relations, "RELATIONS", broken)
    assert any(p.startswith("currency x underspecified: no there_heldout") for p in check_table())


def test_requests_ground_and_vague_requests_do_not(kb):
    """What the teacher sends must be what the offline experts can answer: every request with its subject names an
    entity of the knowledge base; every underspecified request names none (so the expert asks back)."""
    subjects = {"country": "Peru", "capital": "Lima", "city": "Osaka"}
    for r in RELATIONS.values():
        s = subjects[r.subject] if r.subject != "country" else "Peru"
        for ask in r.ask:
            assert kb.missing(ask.format(s=s)) is None, ask
        for vague in r.vague:
            assert kb.missing(vague), vague
        assert fold(s) in fold(r.seed.format(s=s))
