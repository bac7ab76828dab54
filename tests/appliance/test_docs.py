"""The config reference in docs/ is the one the code describes."""

from __future__ import annotations

from pathlib import Path

from appliance.config import describe

DOCS = Path(__file__).resolve().parents[2] / "docs" / "config.md"


def test_config_reference_is_current() -> None:
    """docs/config.md holds exactly what `fieldbox config describe` prints."""
    expected = "\n".join(describe()).lstrip()
    assert f"```toml\n{expected}\n```" in DOCS.read_text(), (
        "docs/config.md is stale: regenerate it from `fieldbox config describe`"
    )
