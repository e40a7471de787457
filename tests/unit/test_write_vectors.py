"""WriteEvent test vectors (schemas/vectors/write-events.json) against the router's decoder and the model.

The file is rendered from regionguard.core.write_vectors, whose cases state the contract's outcome
by hand; here every case must get exactly that outcome from decode_write (what the router runs),
the pydantic WriteEvent must agree on what the event alone allows, and the committed file must be
the current rendering.
"""

from __future__ import annotations

import json

import pytest
from pydantic import ValidationError

from regionguard.core.config import parse_config
from regionguard.core.errors import BadWrite
from regionguard.core.models import WriteEvent, entity_key
from regionguard.core.write_vectors import VECTORS_PATH, case_bytes, render
from regionguard.core.writes import decode_write

DOC = json.loads(VECTORS_PATH.read_text(encoding="utf-8"))
CFG = parse_config(DOC["config"])
CASES = DOC["cases"]


def test_committed_vectors_are_fresh():
    assert VECTORS_PATH.read_text(encoding="utf-8") == render(), \
        "stale: run `python -m regionguard.core.write_vectors --write` and commit"


def test_the_vectors_cover_every_decode_reason_and_the_key_edge_cases():
    reasons = {c["reason"] for c in CASES if c["outcome"] == "dead_letter"}
    assert reasons == {"invalid_json", "schema", "unknown_table", "unknown_column"}
    groups = [c for c in CASES if '"ops"' in (c.get("value_utf8") or "")]
    assert {c["outcome"] for c in groups} == {"accepted", "dead_letter"}
    assert any(c["outcome"] == "accepted" and c["kafka_key"] == "user/42" for c in groups)
    assert {c["stage"] for c in CASES if c["outcome"] == "dead_letter"} == {"event", "config"}
    keys = [c["kafka_key"] for c in CASES if c["outcome"] == "accepted"]
    assert any(k.count("/") > 2 for k in keys)  # composite key or "/" in a value
    assert any(not k.isascii() for k in keys)
    assert any(str(2**63 - 1) in k for k in keys)
    assert len({c["name"] for c in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=[c["name"] for c in CASES])
def test_the_router_decoder_gives_each_case_its_outcome(case):
    got = decode_write(case_bytes(case), region=DOC["topic_region"], cfg=CFG)
    if case["outcome"] == "accepted":
        assert not isinstance(got, BadWrite), f"dead-lettered as {got.reason.value}: {got.detail}"
        assert got.kafka_key().decode() == case["kafka_key"]
    else:
        assert isinstance(got, BadWrite), "accepted, but the vectors say dead letter"
        assert got.reason.value == case["reason"], got.detail


@pytest.mark.parametrize("case", CASES, ids=[c["name"] for c in CASES])
def test_the_model_agrees_on_what_the_event_alone_allows(case):
    """The pydantic WriteEvent (the SDK's, and the source of the JSON Schema) accepts exactly the
    cases that are not wrong at stage `event`."""
    raw = case_bytes(case)
    try:
        ev = WriteEvent.model_validate_json(raw or b"")
    except ValidationError:
        ev = None
    if case["outcome"] == "dead_letter" and case["stage"] == "event":
        assert ev is None, "the model accepts an event the router dead-letters"
    else:
        assert ev is not None, "the model rejects an event the vectors call valid"
        if case["outcome"] == "accepted":
            assert ev.kafka_key().decode() == case["kafka_key"]
            if ev.ordering_key is None:
                assert case["kafka_key"] == entity_key(ev.table, ev.key).decode()
            else:
                assert case["kafka_key"] == ev.ordering_key


SCHEMA = json.loads((VECTORS_PATH.parents[1] / "write-event.schema.json").read_text(encoding="utf-8"))


@pytest.mark.parametrize("case", CASES, ids=[c["name"] for c in CASES])
def test_the_json_schema_agrees_on_what_the_event_alone_allows(case):
    """schemas/write-event.schema.json, which other languages check against, draws the same line."""
    jsonschema = pytest.importorskip("jsonschema")
    raw = case_bytes(case)
    try:
        doc = json.loads(raw or b"")
    except ValueError:
        return  # not JSON: no schema applies
    errors = list(jsonschema.Draft202012Validator(SCHEMA, format_checker=jsonschema.FormatChecker()).iter_errors(doc))
    if case["outcome"] == "dead_letter" and case["stage"] == "event":
        assert errors, "the JSON Schema accepts an event the router dead-letters"
    else:
        assert not errors, f"the JSON Schema rejects a valid event: {errors[0].message}"
