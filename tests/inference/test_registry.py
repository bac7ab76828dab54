"""The backend registry: every backend module registers its `type`, the config's union is
made of exactly those structs, and a `type` nobody registered is refused, never guessed."""

from __future__ import annotations

import pkgutil
from pathlib import Path
from typing import get_args

import msgspec
import pytest

import inference.backends
from inference.backends import registry
from inference.backends.base import Backend, BaseConfig
from inference.config import BackendConfig, InferenceConfig


def test_every_backend_module_registers_its_own_type() -> None:
    """Each module under inference/backends/ (plumbing aside) holds one registered type
    whose config struct and backend class live in that module and are named for it."""
    modules = {m.name for m in pkgutil.iter_modules(inference.backends.__path__)}
    types = registry.types()
    owners = {t.config.__module__.rsplit(".", 1)[1] for t in types.values()}
    assert owners == modules - {"base", "http", "registry", "upstream"}
    for tag, entry in types.items():
        assert entry.config.__module__ == entry.backend.__module__, tag
        assert entry.config.__name__.endswith("Config"), tag
        assert entry.backend.__name__.endswith("Backend"), tag
        assert entry.backend.type_name == tag


def test_the_config_union_is_the_registry() -> None:
    """`[[inference.backends]]` accepts exactly the registered structs."""
    assert set(get_args(BackendConfig)) == set(registry.config_structs())


def test_an_unknown_type_is_refused_at_load() -> None:
    """A table with an unregistered `type` fails to load, naming the value and the key."""
    table = {"type": "tgi", "name": "x", "url": "http://x/v1", "models": ["m"]}
    with pytest.raises(msgspec.ValidationError, match=r"'tgi'.*backends\[0\]\.type"):
        msgspec.convert({"backends": [table]}, InferenceConfig)
    with pytest.raises(registry.UnknownBackendType, match=r"'tgi'.*known types: .*llamacpp.*vllm"):
        registry.lookup("tgi")


def test_each_type_builds_its_own_class(tmp_path: Path) -> None:
    """A loaded table becomes the backend class registered for its `type`."""
    for tag, entry in registry.types().items():
        table = {"type": tag, "name": "b", "models": ["m"], "url": "http://x/v1", "path": "x"}
        fields = set(entry.config.__struct_fields__) | {"type"}
        cfg = msgspec.convert({k: v for k, v in table.items() if k in fields}, BackendConfig)
        assert type(cfg) is entry.config
        backend = registry.build(cfg, tmp_path)
        assert type(backend) is entry.backend and backend.name == "b"


def test_a_struct_with_no_registered_type_is_not_built(tmp_path: Path) -> None:
    """No fallback: a config struct whose tag nobody registered is an error, not `openai`."""

    class TgiConfig(BaseConfig, tag="tgi", kw_only=True):
        """A type that was never registered."""

    with pytest.raises(registry.UnknownBackendType):
        registry.build(TgiConfig(name="x", models=["m"]), tmp_path)


def test_registering_a_tag_twice_is_refused() -> None:
    """Two modules cannot claim one `type`."""
    vllm = registry.lookup("vllm")

    class Other(Backend):
        """Not vLLM's class."""

        type_name = "vllm"

    with pytest.raises(ValueError, match="twice"):
        registry.register(vllm.config, Other)
    assert registry.lookup("vllm") == vllm
