"""The label-driven identity checks: names, numbers, addresses, health, relations (seekhelp.identity)."""

import pytest

from seekhelp.identity import identity_of
from seekhelp.privacy import OutgoingGuard, leak_findings

ITEMS = ["The user's cousin Ana Pérez lives in Lima.", "Ana's daughter is 17 years old.",
         "The user's landlord can be reached on +44 20 7946 0958.", "The user lives at 221 Baker Street.",
         "The user's brother Tomasz has asthma."]


def test_names_numbers_streets_from_labels():
    ident = identity_of(ITEMS)
    assert {("ana", "perez"), ("ana",), ("perez",), ("tomasz",)} <= set(ident.names)
    assert "442079460958" in ident.numbers and "221" in ident.numbers
    assert ("baker", "street") in ident.streets
    assert "asthma" in ident.health


@pytest.mark.parametrize("message, kind", [
    ("Ana lives in Lima.", "name"),
    ("Where does ana perez work?", "name"),
    ("What does PÉREZ mean as a surname?", "name"),
    ("Is 020 7946 0958 a London number?", "number"),
    ("How far is Baker Street from the station?", "address"),
    ("My brother has asthma; which climate helps?", "health"),
    ("Can a 17 year old fly alone?", "number"),
])
def test_guard_blocks_identifying_content(message, kind):
    g = OutgoingGuard("block").check(message, ITEMS)
    assert not g.allowed and kind in g.matched and kind in g.reasons
    assert "Ana" not in g.explain() and "7946" not in g.explain()  # the SLM is told why, nothing echoed


@pytest.mark.parametrize("message", [
    "What is the capital of Peru?", "Which currency does the United Kingdom use?", "What is asthma?",
    "Which country is Lima in?", "How many people live in London?"])
def test_objective_requests_pass(message):
    assert OutgoingGuard("block").check(message, ITEMS).allowed
    assert leak_findings(message, ITEMS) == []


def test_metric_relation_check_is_beyond_the_guard():
    msg = "There is a cousin somewhere who moved away and now lives near the coast in Lima. What is it like?"
    assert OutgoingGuard("block").check(msg, ITEMS).allowed  # no anchor, no name: the guard lets it go
    assert "relation" in leak_findings(msg, ITEMS)  # the metric still sees the private relation


def test_extra_names_from_the_record():
    items = ["The user's sister moved to Peru."]
    assert OutgoingGuard("block").check("Does Marta like Peru?", items).allowed
    blocked = OutgoingGuard("block").check("Does Marta like Peru?", items, names=["Marta Kowalska"])
    assert not blocked.allowed and blocked.matched == ["name"]


def test_redact_masks_names():
    g = OutgoingGuard("redact").check("Ana lives in Lima; what is the weather?", ITEMS)
    assert g.allowed and g.text == "[private] lives in Lima; what is the weather?"


@pytest.mark.parametrize("message, kind", [
    ("Write to ana.perez@example.org about the visa.", "email"),
    ("Is +44 20 7946 0958 a London number?", "phone"),
    ("My card 4111 1111 1111 1111 was declined; why?", "number"),
    ("Is 221 Baker Street in London?", "address"),
])
def test_without_labels_the_guard_still_blocks_label_free_pii(message, kind):
    g = OutgoingGuard("block").check(message, [])
    assert not g.allowed and kind in g.matched, g


def test_without_labels_objective_requests_pass():
    for m in ("What is the capital of Peru?", "How many people live in Lima (about 10 million)?"):
        assert OutgoingGuard("block").check(m, []).allowed
