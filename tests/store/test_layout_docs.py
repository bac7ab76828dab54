"""docs/storage.md names every path `store.paths.Layout` can produce under the data root."""

from __future__ import annotations

import inspect
import re
from pathlib import Path

import pytest

from store.paths import Layout

DOC = Path(__file__).resolve().parents[2] / "docs" / "storage.md"
ROOT = Path("/data-root")
_SHA = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
# A sample per parameter name, distinct enough to be found again inside the path it built.
SAMPLES = {
    "account": "acct-x1",
    "geo_prefix": "geo-x2",
    "location": "loc-x3",
    "sha256": _SHA,
    "upload_id": "upl-x4",
    "job_id": "job-x5",
    "worker_id": "wkr-x6",
}
_NOT_PATHS = {"ensure"}


def _pattern(path: Path, is_dir: bool) -> str:
    """`path` relative to the root, each sample written back as its `{placeholder}`."""
    parts = []
    for part in path.relative_to(ROOT).parts:
        if part == _SHA:
            part = "{sha256}"
        elif part == _SHA[:2]:
            part = "{aa}"
        else:
            for name, sample in SAMPLES.items():
                part = part.replace(sample, "{" + name + "}")
        parts.append(part)
    return "/".join(parts) + ("/" if is_dir else "")


def layout_paths() -> dict[str, str]:
    """Every attribute of Layout that yields a path, by name, as a documented pattern."""
    layout = Layout(ROOT)
    out: dict[str, str] = {}
    for name, attr in inspect.getmembers(Layout):
        if name.startswith("_") or name in _NOT_PATHS:
            continue
        if isinstance(attr, property):
            value = getattr(layout, name)
        elif inspect.isfunction(attr):
            params = list(inspect.signature(attr).parameters)[1:]
            unknown = [p for p in params if p not in SAMPLES]
            assert not unknown, f"Layout.{name}: add a sample for {unknown} to SAMPLES"
            value = getattr(layout, name)(*(SAMPLES[p] for p in params))
        else:
            continue
        assert isinstance(value, Path), f"Layout.{name} is not a path"
        out[name] = _pattern(value, name.endswith("_dir"))
    return out


def documented() -> set[str]:
    """The first cell of each row of storage.md's layout table."""
    return set(re.findall(r"^\| `([^`]+)` \|", DOC.read_text(), flags=re.MULTILINE))


def test_every_layout_path_is_in_storage_md() -> None:
    """A path Layout can build but docs/storage.md does not list fails here, by name."""
    paths = layout_paths()
    # The enumeration itself works: it found the plain, the nested and the per-id paths.
    assert paths["keys_db"] == "keys.db"
    assert paths["up_log"] == "logs/up.log"
    assert paths["location_db"] == "locations/{account}/{geo_prefix}/{location}/location.db"
    assert paths["blob_path"] == "blobs/{account}/{geo_prefix}/{location}/{aa}/{sha256}"
    missing = {name: p for name, p in paths.items() if p not in documented()}
    assert not missing, f"docs/storage.md does not name these Layout paths: {missing}"


def test_a_missing_entry_is_caught(monkeypatch: pytest.MonkeyPatch) -> None:
    """The check is not vacuous: a new Layout path with no row in the table is reported."""
    monkeypatch.setattr(
        Layout, "secret_dir", property(lambda self: self.root / "secret"), raising=False
    )
    paths = layout_paths()
    assert paths["secret_dir"] == "secret/"
    assert "secret/" not in documented()


def test_up_paths_are_where_fieldbox_up_keeps_them() -> None:
    """`fieldbox up`'s status and log stay at the paths the supervisor has always used."""
    layout = Layout(ROOT)
    assert layout.up_status == ROOT / "up" / "status.json"
    assert layout.up_log == ROOT / "logs" / "up.log"
