"""The location view's ask box in-process (Litestar's TestClient), the model stubbed: how the
page renders an answer, "not in records", a gateway failure and each kind of citation."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from litestar import Litestar
from litestar.testing import TestClient

from appliance.app import create_app
from appliance.ask import NOT_IN_RECORDS, Answer, AskRequest, Citation
from appliance.gateway_calls import GatewayFailed
from appliance.services import Services
from store.db import Database
from tests.admin.test_gate import sign_in
from tests.conftest import make_config, make_token

Client = TestClient[Litestar]


@pytest.fixture
def signed_in(tmp_path: Path) -> Iterator[tuple[Client, str]]:
    """A signed-in admin browser (its CSRF token) on a box with location `loc1` and a doc."""
    cfg = make_config(tmp_path / "data", "[admin]\nallow_any_network = true\n")
    field = {"Authorization": f"Bearer {make_token(cfg, ('field',))}"}
    with TestClient(app=create_app(cfg)) as c:
        r = c.post(
            "/v1/locations",
            json={"id": "loc1", "account": "acme", "geo_prefix": "u4pr", "name": "one"},
            headers=field,
        )
        assert r.status_code == 201, r.text
        r = c.put(
            "/v1/locations/loc1/docs/notes/n1",
            content=b'{"text": "<b>boiler</b> at 2 bar", "n": 1}',
            headers={**field, "If-None-Match": "*", "Content-Type": "application/json"},
        )
        assert r.status_code == 201, r.text
        yield c, sign_in(c, make_token(cfg, ("admin",)))


def _stub(c: Client, monkeypatch: pytest.MonkeyPatch, result: Answer | Exception) -> list[str]:
    asked: list[str] = []
    svc: Services = c.app.state.svc

    async def ask(_db: Database, req: AskRequest) -> Answer:
        asked.append(req.question)
        if isinstance(result, Exception):
            raise result
        return result

    monkeypatch.setattr(svc.asker, "ask", ask)
    return asked


def _post(c: Client, csrf: str, question: str, location: str = "loc1") -> Any:
    return c.post(
        "/admin/assets/ask", data={"location": location, "question": question, "_csrf": csrf}
    )


def _answer(found: bool, citations: list[Citation]) -> Answer:
    text = "The boiler runs at 2 bar." if found else NOT_IN_RECORDS
    return Answer(answer=text, found=found, citations=citations, retrieved=[], model="m", ms=5.0)


def test_the_form_only_on_a_location(signed_in: tuple[Client, str]) -> None:
    """The every-location list has no ask box; a location's view has one, with the limit."""
    c, _ = signed_in
    assert 'id="ask-form"' not in c.get("/admin/assets").text
    page = c.get("/admin/assets?location=loc1").text
    assert 'id="ask-form"' in page and 'maxlength="1000"' in page


def test_an_answer_with_each_kind_of_citation(
    signed_in: tuple[Client, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Doc → the document view; asset → its download; track with no job → its JSON; quotes
    and the track's time shown; the question kept in the box."""
    c, csrf = signed_in
    cites = [
        Citation(source="doc", id="notes/n1", quote="text: boiler", collection="notes", key="n1"),
        Citation(source="asset", id="loc1.0123456789abcdef0123", quote="file: a.jpg"),
        Citation(
            source="track",
            id="loc1.0123456789abcdef0124#3",
            quote="valve (track 3)",
            asset_id="loc1.0123456789abcdef0124",
            track_id=3,
            t=4.25,
            frame=8,
        ),
    ]
    asked = _stub(c, monkeypatch, _answer(True, cites))
    r = _post(c, csrf, "  boiler pressure?  ")
    assert r.status_code == 200
    assert asked == ["boiler pressure?"]
    html = r.text
    assert 'class="ask-answer found"' in html and "The boiler runs at 2 bar." in html
    assert "/admin/assets/document?location=loc1&amp;collection=notes&amp;key=n1" in html
    assert 'href="/admin/assets/loc1.0123456789abcdef0123/download"' in html
    assert 'href="/admin/assets/loc1.0123456789abcdef0124/download"' in html
    assert "at 4.2 s" in html or "at 4.3 s" in html
    assert "<q>valve (track 3)</q>" in html
    assert ">  boiler pressure?  </textarea>" in html


def test_not_in_records(signed_in: tuple[Client, str], monkeypatch: pytest.MonkeyPatch) -> None:
    """An answer that cites nothing is styled as not in the records, with no citation list."""
    c, csrf = signed_in
    _stub(c, monkeypatch, _answer(False, []))
    html = _post(c, csrf, "hoa fee?").text
    assert 'class="ask-answer not-found"' in html and 'data-found="false"' in html
    assert '<p class="hint">not in this location\'s records</p>' in html
    assert 'id="ask-citations"' not in html


def test_a_gateway_failure_is_shown_not_a_500(
    signed_in: tuple[Client, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """GatewayFailed: the location view again (200), its message as the error."""
    c, csrf = signed_in
    _stub(c, monkeypatch, GatewayFailed(503, "no healthy backend for smollm2-135m"))
    r = _post(c, csrf, "boiler?")
    assert r.status_code == 200
    assert re.search(r'id="ask-error">[^<]*no healthy backend for smollm2-135m', r.text)
    assert 'id="ask-answer"' not in r.text


def test_bad_questions_and_locations(
    signed_in: tuple[Client, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Empty or too long: said on the page, no model call; an unknown location: 404; no CSRF
    token: refused by the gate."""
    c, csrf = signed_in
    asked = _stub(c, monkeypatch, _answer(True, []))
    assert "the question is empty" in _post(c, csrf, "   ").text
    assert "the limit is 1000" in _post(c, csrf, "x" * 1001).text
    assert asked == []
    assert _post(c, csrf, "boiler?", location="nowhere").status_code == 404
    assert _post(c, "wrong", "boiler?").status_code == 403


def test_the_document_view(signed_in: tuple[Client, str]) -> None:
    """The JSON pretty-printed and escaped inside <pre>, under the strict CSP; 404 if missing."""
    c, _ = signed_in
    r = c.get("/admin/assets/document?location=loc1&collection=notes&key=n1")
    assert r.status_code == 200
    assert '<pre id="document-json">{\n  &#34;text&#34;: &#34;&lt;b&gt;boiler&lt;/b&gt;' in r.text
    csp = r.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "'unsafe-inline'" not in csp
    for query in ("collection=notes&key=nope", "collection=../x&key=n1"):
        r = c.get(f"/admin/assets/document?location=loc1&{query}")
        assert r.status_code == 404 and 'id="document-missing"' in r.text
    assert c.get("/admin/assets/document?location=nowhere&collection=a&key=b").status_code == 404
