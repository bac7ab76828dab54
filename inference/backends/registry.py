"""Backend types by their `type` tag: each backend module registers its config struct and
its runtime class here, beside its own code, so adding a type touches one module.

`inference.config` composes the `[[inference.backends]]` tagged union from these structs,
so an unknown `type` is refused when the config is loaded (msgspec names the bad tag), and
the router builds each backend by looking its `type` up: there is no fallback type.
"""

from __future__ import annotations

import importlib
import pkgutil
from dataclasses import dataclass
from pathlib import Path

from inference.backends.base import Backend, BaseConfig


class UnknownBackendType(LookupError):
    """A `type` no backend module registered."""


@dataclass(frozen=True)
class BackendType:
    """One registered type: the struct its table loads into and the class that runs it."""

    config: type[BaseConfig]
    backend: type[Backend]


_TYPES: dict[str, BackendType] = {}
# Modules of this package that hold no backend type; every other module must register one.
_PLUMBING = frozenset({"base", "http", "registry", "upstream"})


def register(config: type[BaseConfig], backend: type[Backend]) -> None:
    """Make `config`'s tag a backend type run by `backend` (called once per module)."""
    tag = config.__struct_config__.tag
    if not isinstance(tag, str) or not tag:
        raise TypeError(f"{config.__name__} needs a string tag (its `type` value)")
    known = _TYPES.get(tag)
    if known is not None and known != BackendType(config, backend):
        raise ValueError(f"backend type {tag!r} is registered twice")
    if backend.type_name != tag:
        raise ValueError(f"{backend.__name__}.type_name is not {tag!r}")
    _TYPES[tag] = BackendType(config, backend)


def _load_all() -> None:
    # Imported here rather than listed: a new module under inference/backends/ is found
    # without editing this file, and a module that forgets to register is caught below.
    import inference.backends as package

    for info in pkgutil.iter_modules(package.__path__):
        if info.name not in _PLUMBING:
            importlib.import_module(f"{package.__name__}.{info.name}")


def types() -> dict[str, BackendType]:
    """Every backend type, in tag order (each backend module imported once)."""
    _load_all()
    return dict(sorted(_TYPES.items()))


def config_structs() -> tuple[type[BaseConfig], ...]:
    """The config struct of every type: the members of the backends' tagged union."""
    return tuple(t.config for t in types().values())


def lookup(tag: str) -> BackendType:
    """The registered type for `tag`; UnknownBackendType naming the known ones if none."""
    found = types().get(tag)
    if found is None:
        known = ", ".join(types())
        raise UnknownBackendType(f"unknown backend type {tag!r} (known types: {known})")
    return found


def build(cfg: BaseConfig, models_dir: Path) -> Backend:
    """The backend object for one config entry, chosen by its `type`."""
    found = lookup(cfg.type)
    if not isinstance(cfg, found.config):  # a struct built by hand with another's tag
        raise TypeError(f"{type(cfg).__name__} is not a {found.config.__name__}")
    return found.backend(cfg, models_dir)
