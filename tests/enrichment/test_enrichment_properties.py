"""Properties (hypothesis): name normalization and similarity, the stand-in's paging, epochs."""

from __future__ import annotations

from datetime import datetime, timezone

from enrichment_support import fixture_registry
from hypothesis import given, settings
from hypothesis import strategies as st

from connectors.enrichment.nppes import name_similarity, normalize_name, parse_epoch, query_names

names = st.text(alphabet=st.sampled_from("abcdefghij &.,'-XYZ"), min_size=0, max_size=30)
suffixes = st.sampled_from(["", " LLC", ", Inc.", " P.C.", ", PLLC", " Corp"])


@given(names)
def test_normalize_name_is_idempotent(name):
    assert normalize_name(normalize_name(name)) == normalize_name(name)


@given(names, names)
def test_similarity_is_a_symmetric_score(left, right):
    score = name_similarity(left, right)
    assert 0.0 <= score <= 1.0
    assert score == name_similarity(right, left)


@given(st.text(alphabet="abcdefghijklmnop ", min_size=3, max_size=25).filter(lambda n: len(n.split()) >= 1), suffixes)
def test_legal_suffixes_and_case_never_change_the_match(name, suffix):
    if normalize_name(name):
        assert name_similarity(name, (name + suffix).upper()) == 1.0


@given(names)
def test_query_names_end_in_a_wildcard_after_two_characters(name):
    for query in query_names(name):
        assert not query.endswith("*") or len(query.rstrip("*")) >= 2


@given(st.integers(min_value=946_684_800, max_value=4_102_444_800))
def test_epochs_in_seconds_and_milliseconds_agree(seconds):
    expected = datetime.fromtimestamp(seconds, tz=timezone.utc)
    assert parse_epoch(seconds) == expected == parse_epoch(str(seconds * 1000))


@settings(max_examples=40)
@given(st.sampled_from(["GA", "CA", "NY", "TX", "MI", "PA"]), st.integers(min_value=1, max_value=30))
def test_stand_in_pages_concatenate_to_the_full_result(state, limit):
    full = fixture_registry().search({"state": state, "limit": "200"})["results"]
    pages, skip = [], 0
    while True:
        page = fixture_registry().search({"state": state, "limit": str(limit), "skip": str(skip)})
        pages.extend(page["results"])
        assert page["result_count"] == len(page["results"]) <= limit
        if page["result_count"] < limit:
            break
        skip += limit
    assert pages == full
