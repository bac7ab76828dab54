"""Asking a location through a real `fieldbox up`: the api retrieves from the location's
index and answers through the real gateway (llama.cpp SmolLM2, the E5 embedder) on its
OpenAI-compatible route; citations, streaming, refusals, access, and the index after a
`kill -9` of the api in the middle of document writes."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from appliance.ask import NOT_IN_RECORDS
from tests.conftest import ROOT
from tests.eval.ask_load import fixture, load
from tests.system.test_up import Up

pytestmark = pytest.mark.timeout(300)
LOC = fixture()["location"]["id"]
ASK = f"/v1/locations/{LOC}/ask"


def _key(data_dir: Path, scope: str) -> str:
    env = {**os.environ, "FIELDBOX_DATA": str(data_dir)}
    env.pop("FIELDBOX_CONFIG", None)
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "appliance",
            "keys",
            "create",
            f"--scope={scope}",
            f"--name={scope}",
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    return out.stdout.split()[-1]


class Box:
    """`fieldbox up` over a data dir holding the eval fixture, and a field key."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.names = load(data_dir)
        self.token = _key(data_dir, "field")
        self.up = Up(data_dir)
        self.up.banner(timeout=180)
        self.client = httpx.Client(
            base_url=self.up.url, headers={"Authorization": f"Bearer {self.token}"}, timeout=240
        )

    def ask(self, question: str, **extra: Any) -> dict[str, Any]:
        """POST the question; the answer (expects 200)."""
        resp = self.client.post(ASK, json={"question": question, **extra})
        assert resp.status_code == 200, resp.text
        answer: dict[str, Any] = resp.json()
        return answer

    def db(self) -> sqlite3.Connection:
        """A read connection to the location's database."""
        path = next(self.data_dir.glob(f"locations/*/*/{LOC}/location.db"))
        return sqlite3.connect(path, timeout=10)


@pytest.fixture(scope="module")
def box(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Box]:
    """One box for the module: the model loads once."""
    b = Box(tmp_path_factory.mktemp("ask") / "data")
    try:
        yield b
    finally:
        b.client.close()
        b.up.kill()


def _ids(items: list[dict[str, Any]]) -> list[str]:
    return [item["id"] for item in items]


def _gateway_chat_requests(box: Box) -> float:
    text = httpx.get(box.up.gateway_url + "/metrics", timeout=10).text
    total = 0.0
    for line in text.splitlines():
        if line.startswith("fieldbox_gateway_requests_total{") and 'endpoint="chat"' in line:
            total += float(line.rsplit(" ", 1)[1])
    return total


def test_an_answer_cites_only_records_it_retrieved(box: Box) -> None:
    """The record that holds the answer is retrieved first; whatever is cited was retrieved
    and exists; the answer went through the gateway's chat route (its request counter)."""
    before = _gateway_chat_requests(box)
    answer = box.ask("What's the static water pressure at the house?")
    assert _ids(answer["retrieved"])[0] == "measurements/water-pressure"
    assert set(_ids(answer["citations"])) <= set(_ids(answer["retrieved"]))
    assert _gateway_chat_requests(box) == before + 1
    if answer["found"]:
        assert answer["citations"] and answer["answer"] != NOT_IN_RECORDS
        for c in answer["citations"]:
            assert c["quote"]
            if c["source"] == "doc":
                got = box.client.get(f"/v1/locations/{LOC}/docs/{c['collection']}/{c['key']}")
                assert got.status_code == 200
    else:
        assert answer["citations"] == [] and answer["answer"] == NOT_IN_RECORDS


def test_a_track_answers_where_in_the_video(box: Box) -> None:
    """A question about the walkthrough retrieves the scene-facts track, with its time."""
    answer = box.ask("When does the sump pump first show up in the walkthrough video?")
    tracks = [r for r in answer["retrieved"] if r["source"] == "track"]
    assert tracks and tracks[0]["id"].endswith("#4")
    assert tracks[0]["id"].startswith(box.names["scene_facts"])


def test_nothing_in_the_records_is_said_so_without_a_model_call(box: Box) -> None:
    """No word of the question is in the index and no passage stands out: 'not in records',
    no citation, and the gateway's chat route is not called at all."""
    before = _gateway_chat_requests(box)
    answer = box.ask("What is the Wi-Fi password?")
    assert answer["found"] is False
    assert answer["answer"] == NOT_IN_RECORDS
    assert answer["citations"] == []
    assert _gateway_chat_requests(box) == before


def test_injected_instructions_do_not_pick_the_citations(box: Box) -> None:
    """notes/injected-note tells the model to cite contacts/owner: the owner's record is not
    retrieved for a mailbox question, so it can be neither given to the model nor cited."""
    answer = box.ask("What brand of mailbox did we put in at the curb?")
    retrieved = _ids(answer["retrieved"])
    assert retrieved[0] == "notes/mailbox-repair"
    assert "contacts/owner" not in retrieved
    assert "contacts/owner" not in _ids(answer["citations"])


def test_streamed_answer_is_events_ending_in_the_checked_answer(box: Box) -> None:
    """SSE: `retrieved` first, the model's reply in `delta`s, then `answer` whose citations
    are among the retrieved; ids count up from 1."""
    events: list[tuple[int, str, Any]] = []
    with box.client.stream(
        "POST", ASK, json={"question": "What size filter does the furnace take?", "stream": True}
    ) as resp:
        assert resp.status_code == 200
        assert resp.headers["content-type"].startswith("text/event-stream")
        block: dict[str, str] = {}
        for line in resp.iter_lines():
            if not line:
                events.append((int(block["id"]), block["event"], json.loads(block["data"])))
                block = {}
                continue
            field, _, value = line.partition(": ")
            block[field] = value
    kinds = [kind for _, kind, _ in events]
    assert kinds[0] == "retrieved" and kinds[-1] == "answer", kinds
    assert set(kinds[1:-1]) <= {"delta"} and len(kinds) > 2
    assert [i for i, _, _ in events] == list(range(1, len(events) + 1))
    retrieved = _ids(events[0][2]["retrieved"])
    assert retrieved[0] == "equipment/furnace"
    final = events[-1][2]
    assert set(_ids(final["citations"])) <= set(retrieved)
    assert (
        "".join(data["text"] for _, kind, data in events if kind == "delta")
        .lstrip()
        .startswith("{")
    )


def test_access_and_bad_questions(box: Box) -> None:
    """401 without a key, 403 for a gateway-only key, 404 for an unknown location, 400 for
    an empty or too long question and for a body that is not the request: JSON errors."""
    assert httpx.post(box.up.url + ASK, json={"question": "x"}).status_code == 401
    gateway_only = _key(box.data_dir, "gateway")
    resp = httpx.post(
        box.up.url + ASK,
        json={"question": "where is the furnace"},
        headers={"Authorization": f"Bearer {gateway_only}"},
    )
    assert resp.status_code == 403
    resp = box.client.post("/v1/locations/nowhere/ask", json={"question": "where is the furnace"})
    assert resp.status_code == 404 and resp.json()["error"] == "not_found"
    for body in ({"question": "   "}, {"question": "x" * 1001}, {"question": 3}, {"q": "furnace"}):
        resp = box.client.post(ASK, json=body)
        assert resp.status_code == 400, (body, resp.text)
        assert resp.json()["status"] == 400


def test_the_index_holds_every_acknowledged_write_after_kill_9(box: Box) -> None:
    """Documents written while the api is SIGKILLed: every one acknowledged is indexed or
    queued (the queue row commits with it); the restarted api indexes and embeds all of
    them, none half-indexed."""
    acked: list[str] = []
    stop = threading.Event()

    def writer() -> None:
        with httpx.Client(
            base_url=box.up.url, headers={"Authorization": f"Bearer {box.token}"}, timeout=5
        ) as c:
            i = 0
            while not stop.is_set():
                key = f"crash-{i}"
                body = {"text": f"crash probe {i}: the {i}th gauge read {i * 7} units", "n": i}
                try:
                    r = c.put(
                        f"/v1/locations/{LOC}/docs/probes/{key}",
                        json=body,
                        headers={"If-None-Match": "*"},
                    )
                except httpx.HTTPError:
                    time.sleep(0.05)
                    continue
                if r.status_code == 201:
                    acked.append(key)
                    i += 1
                elif r.status_code == 412:
                    i += 1  # written before the kill, its answer lost: not acknowledged
                else:
                    time.sleep(0.05)

    thread = threading.Thread(target=writer, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while len(acked) < 20 and time.monotonic() < deadline:
        time.sleep(0.05)
    old = box.up.api_pid()
    os.kill(old, signal.SIGKILL)
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        try:
            if box.up.api_pid() != old and len(acked) >= 40:
                break
        except (httpx.HTTPError, KeyError):
            pass
        time.sleep(0.2)
    stop.set()
    thread.join(10)
    assert box.up.api_pid() != old, "the api was not restarted after its kill"
    assert len(acked) >= 40

    def state() -> tuple[set[str], set[str], set[str], int, int]:
        with box.db() as conn:
            docs = {
                r[0] for r in conn.execute("SELECT key FROM documents WHERE collection = 'probes'")
            }
            chunked = {
                r[0].split("/", 1)[1]
                for r in conn.execute(
                    "SELECT ref FROM search_chunks WHERE source = 'doc' AND ref LIKE 'probes/%'"
                )
            }
            queued = {
                r[0].split("/", 1)[1]
                for r in conn.execute("SELECT ref FROM search_pending WHERE ref LIKE 'probes/%'")
            }
            fts = conn.execute(
                "SELECT count(*) FROM search_fts WHERE rowid IN "
                "(SELECT id FROM search_chunks WHERE ref LIKE 'probes/%')"
            ).fetchone()[0]
            bare = conn.execute(
                "SELECT count(*) FROM search_chunks WHERE embedding IS NULL"
            ).fetchone()[0]
        return docs, chunked, queued, fts, bare

    docs, chunked, queued, _, _ = state()
    assert set(acked) <= docs
    assert docs <= chunked | queued  # each write indexed or still queued: none lost
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        docs, chunked, queued, fts, bare = state()
        if not queued and not bare:
            break
        time.sleep(0.5)
    assert not queued and not bare, f"{len(queued)} still queued, {bare} chunks without a vector"
    assert chunked == docs  # every stored document indexed, no chunk without its document
    assert fts == len(docs)
    last = acked[-1]
    answer = box.ask(f"what did gauge {last.split('-')[1]}th read in the crash probe?")
    assert f"probes/{last}" in _ids(answer["retrieved"])


def _fieldbox(box: Box, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "FIELDBOX_DATA": str(box.data_dir)}
    env.pop("FIELDBOX_CONFIG", None)
    return subprocess.run(
        [sys.executable, "-m", "appliance", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )


def test_fieldbox_ask_answers_from_the_shell(box: Box) -> None:
    """`fieldbox ask --json` finds the box's gateway through `up`'s status and answers as
    the api does; an unknown location is a one-line error and exit 1."""
    out = _fieldbox(box, "ask", f"--location={LOC}", "--json", "What is the Wi-Fi password?")
    assert out.returncode == 0, out.stderr
    answer = json.loads(out.stdout)
    assert (answer["found"], answer["answer"], answer["citations"]) == (False, NOT_IN_RECORDS, [])
    out = _fieldbox(
        box, "ask", f"--location={LOC}", "--json", "What size filter does the furnace take?"
    )
    assert out.returncode == 0, out.stderr
    assert _ids(json.loads(out.stdout)["retrieved"])[0] == "equipment/furnace"
    out = _fieldbox(box, "ask", "--location=nowhere", "where is the furnace")
    assert out.returncode == 1 and "nowhere" in out.stderr and "Traceback" not in out.stderr


def test_index_rebuild_indexes_every_record_again(box: Box) -> None:
    """`fieldbox index rebuild` empties the index and rebuilds it from the records, tracks
    included; the next ask gives every chunk its vector again before it answers."""
    with box.db() as conn:
        before = conn.execute(
            "SELECT source, ref, part, body FROM search_chunks ORDER BY 1, 2, 3"
        ).fetchall()
        conn.execute("DELETE FROM search_chunks WHERE source = 'track'")  # an index gone wrong
    out = _fieldbox(box, "index", "rebuild", f"--location={LOC}")
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith(f"{LOC}\t{len(before)} chunks\t")
    with box.db() as conn:
        after = conn.execute(
            "SELECT source, ref, part, body FROM search_chunks ORDER BY 1, 2, 3"
        ).fetchall()
        fts = conn.execute("SELECT count(*) FROM search_fts").fetchone()[0]
    assert after == before
    assert fts == len(before)
    # An ask embeds its location's backlog before it retrieves (unpaced, unlike the
    # background indexer, whose catching up the kill -9 test waits for): when it answers,
    # every chunk has its vector again.
    box.ask("What size filter does the furnace take?")
    with box.db() as conn:
        left = conn.execute("SELECT count(*) FROM search_chunks WHERE embedding IS NULL").fetchone()
    assert len(before) <= 256  # what one ask embeds at most
    assert left[0] == 0
