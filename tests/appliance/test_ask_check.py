"""The citation check of `ask`, on replies written by hand: what a model may cite, and what
is kept of what it cites."""

from __future__ import annotations

import json

import pytest

from appliance.ask import CitationError, checked
from store.search_index import Passage

PASSAGES = [
    Passage(
        id=11,
        source="doc",
        ref="contacts/roofer",
        collection="contacts",
        key="roofer",
        heading="roof-2026 > contacts > roofer",
        body="name: Tomas Reyes\ncompany: Summit Ridge Roofing\nphone: 555-0187",
    ),
    Passage(
        id=12,
        source="doc",
        ref="equipment/sump-pump",
        collection="equipment",
        key="sump-pump",
        heading="equipment > sump-pump",
        body="make: Zoeller\nyear: 2019",
    ),
    Passage(
        id=13,
        source="track",
        ref="a.1#4",
        asset_id="a.1",
        track_id=4,
        t=15.5,
        frame=31,
        heading="scene facts > walk.mp4 > sump pump",
        body="sump pump (track 4) seen in video walk.mp4\nvisible from 15.5 s to 19.5 s",
    ),
]
ALL = {11, 12, 13}


def _reply(answer: str, *sources: int) -> str:
    return json.dumps({"answer": answer, "sources": list(sources)})


def test_a_supported_citation_is_kept_with_its_best_line() -> None:
    """The roofer's phone, cited to the roofer's record: kept, quoting the phone line."""
    answer, cites = checked(
        _reply("Call 555-0187.", 1), PASSAGES, "What is the roofer's phone?", ALL
    )
    assert answer == "Call 555-0187."
    assert [(c.id, c.quote) for c in cites] == [("contacts/roofer", "phone: 555-0187")]


def test_an_invented_number_loses_its_citation() -> None:
    """A phone number no cited passage holds: the citation goes, so the answer is none."""
    _, cites = checked(_reply("Call 562-3178.", 1), PASSAGES, "What is the roofer's phone?", ALL)
    assert cites == []


def test_a_passage_not_about_the_question_is_not_kept() -> None:
    """The sump pump's year, cited for a septic tank: it holds the claim but not the question."""
    question = "When was the septic tank last pumped?"
    _, cites = checked(_reply("In 2019.", 2), PASSAGES, question, ALL - {12})
    assert cites == []
    _, cites = checked(_reply("In 2019.", 2), PASSAGES, "What year is the sump pump?", ALL)
    assert [c.id for c in cites] == ["equipment/sump-pump"]


def test_a_track_citation_carries_where_in_the_video() -> None:
    """A track's citation names its asset, track, time and frame."""
    _, cites = checked(_reply("At 15.5 s.", 3), PASSAGES, "When is the sump pump seen?", ALL)
    (c,) = cites
    assert (c.source, c.asset_id, c.track_id, c.t, c.frame) == ("track", "a.1", 4, 15.5, 31)


def test_saying_not_in_records_is_no_answer_even_with_sources() -> None:
    """A reply that says 'not in records' but names a passage cites nothing."""
    _, cites = checked(_reply("not in records", 1), PASSAGES, "Who is the roofer?", ALL)
    assert cites == []


@pytest.mark.parametrize(
    ("raw", "why"),
    [
        (_reply("Tomas Reyes", 4), "not given"),
        (_reply("Tomas Reyes", 0), "not given"),
        ('{"answer": "x"}', "schema"),
        ('{"answer": "x", "sources": ["1"]}', "schema"),
        ('{"answer": "x", "sources": [1]', "not JSON"),
    ],
)
def test_a_reply_naming_what_it_was_not_given_is_refused(raw: str, why: str) -> None:
    """Numbers outside the passages given, or a reply off the schema: CitationError."""
    with pytest.raises(CitationError, match=why):
        checked(raw, PASSAGES, "Who is the roofer?", ALL)
