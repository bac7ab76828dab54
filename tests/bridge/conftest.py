"""The bridge tests share the root conftest's `moto_server` and `bucket` fixtures."""

from __future__ import annotations

import pytest

pytest.importorskip("moto")
