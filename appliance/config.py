"""The one fieldbox config tree: each package's section composed, loaded once by the CLI."""

from __future__ import annotations

import ast
import functools
import inspect
import json
import math
import os
import re
import textwrap
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal, get_args, get_type_hints

import msgspec
import msgspec.inspect

from bridge.config import BridgeConfig, check_bridge
from inference.config import GatewayConfig, InferenceConfig, check_gateway, check_inference
from perception.config import PerceptionConfig
from perception.splat.config import SplatConfig
from store.config import StoreConfig
from store.queue import QueueConfig

SYSTEM_CONFIG = Path("/etc/fieldbox/fieldbox.toml")
SYSTEM_DATA = Path("/var/lib/fieldbox")


Port = Annotated[int, msgspec.Meta(ge=1, le=65535)]
Positive = Annotated[int, msgspec.Meta(gt=0)]
PositiveFloat = Annotated[float, msgspec.Meta(gt=0)]


class ApiConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """The `[api]` section: the field API process."""

    host: str = "0.0.0.0"
    """Address `fieldbox serve api` binds to."""

    port: Port = 8080
    """Port `fieldbox serve api` listens on."""

    max_document_bytes: Positive = 1024 * 1024
    """Largest JSON document body accepted (413 past it)."""

    max_upload_bytes: Positive = 20 * 1024**3
    """Largest resumable upload accepted (`Tus-Max-Size`; 413 past it)."""

    upload_expiry_hours: PositiveFloat = 24.0
    """An unfinished upload is deleted this long after the last byte it received."""

    upload_stall_timeout_s: PositiveFloat = 30.0
    """A PATCH that sends nothing for this long is ended; the bytes it sent are kept."""

    cleanup_interval_s: PositiveFloat = 300.0
    """How often expired uploads are swept."""

    page_size: Annotated[int, msgspec.Meta(ge=1, le=1000)] = 100
    """Default page size of list endpoints (clients may ask for up to 1000)."""


class WorkerConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """The `[worker]` section: the process that runs perception and splat jobs."""

    concurrency: Annotated[int, msgspec.Meta(ge=1, le=64)] = 1
    """Jobs run at once by one worker process (1 for a single GPU)."""

    kinds: list[Literal["perception", "splat"]] = msgspec.field(
        default_factory=lambda: ["perception", "splat"]
    )
    """Job kinds this worker claims."""

    heartbeat_s: PositiveFloat = 5.0
    """How often running jobs' leases are renewed (keep well under `[queue] lease_s`)."""

    poll_s: PositiveFloat = 1.0
    """How long an idle worker waits before looking for work again."""

    auto_enqueue_capture: bool = False
    """An upload with kind=capture queues a perception and a splat job for it."""

    nice: Annotated[int, msgspec.Meta(ge=0, le=19)] = 10
    """Niceness the worker process (every thread of it) runs at: jobs take the CPU the api,
    the gateway and the bridge leave idle, so a splat job does not slow CAS writes or
    time-to-first-token (bench/bench_mixed.py). 0 keeps the niceness it was started with."""


class AdminConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """The `[admin]` section: the local admin page at `/admin` on the api's port."""

    enabled: bool = True
    """Serve the admin page at `/admin` (sign-in with a key that has the `admin` scope)."""

    allow_networks: list[str] = msgspec.field(default_factory=list)
    """Client networks (CIDRs) allowed besides loopback and the private LAN ranges."""

    allow_any_network: bool = False
    """Let clients from any address reach the admin page, not only LAN ones."""

    session_idle_minutes: PositiveFloat = 60.0
    """A session with no request for this long is signed out."""

    session_max_hours: PositiveFloat = 12.0
    """A session ends this long after sign-in, however busy."""

    log_events: Annotated[int, msgspec.Meta(ge=100, le=100_000)] = 2000
    """Recent log events the api keeps in memory for the admin page's log view."""


def check_admin(admin: AdminConfig) -> list[tuple[str, str]]:
    """(dotted key, problem): admin networks that are not CIDRs."""
    import ipaddress

    problems: list[tuple[str, str]] = []
    for cidr in admin.allow_networks:
        try:
            ipaddress.ip_network(cidr, strict=False)
        except ValueError:
            problems.append(
                ("admin.allow_networks", f"admin.allow_networks: {cidr!r} is not a CIDR")
            )
    return problems


class AskConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """The `[ask]` section: grounded answers about a location (`POST /v1/locations/{id}/ask`)."""

    alias: str = "smollm2-135m"
    """The gateway model or alias that writes answers (the embedded model by default)."""

    embed_alias: str = "embeddings-default"
    """The gateway model or alias that embeds questions and indexed passages."""

    gateway_url: str = ""
    """The gateway's base URL; empty means this box's own (the port `fieldbox up` gave it)."""

    passages: Annotated[int, msgspec.Meta(ge=1, le=20)] = 6
    """Retrieved passages given to the model as its only context."""

    max_question_chars: Annotated[int, msgspec.Meta(ge=10, le=20_000)] = 1000
    """Longest question accepted (400 past it)."""

    max_tokens: Annotated[int, msgspec.Meta(ge=16, le=4096)] = 400
    """Most tokens of one answer. The answer's schema caps its text at 300 characters, so
    400 tokens always let a schema-bound model close its JSON."""

    timeout_s: PositiveFloat = 120.0
    """How long one model call may take."""


class LogConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """The `[log]` section: structured logs on stdout."""

    level: Literal["debug", "info", "warning", "error"] = "info"
    """Lowest level written: debug, info, warning or error."""

    format: Literal["json", "console"] = "json"
    """`json` (one event per line, for journald) or `console` (for a terminal)."""


class FieldboxConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """The whole config file; each section belongs to one package."""

    store: StoreConfig = msgspec.field(default_factory=StoreConfig)
    """Data on disk (package `store`)."""

    api: ApiConfig = msgspec.field(default_factory=ApiConfig)
    """The field API process (package `appliance`)."""

    log: LogConfig = msgspec.field(default_factory=LogConfig)
    """Logging, shared by every process."""

    admin: AdminConfig = msgspec.field(default_factory=AdminConfig)
    """The local admin page served by the api (package `appliance.admin`)."""

    ask: AskConfig = msgspec.field(default_factory=AskConfig)
    """Grounded answers about a location, from its own records (package `appliance`)."""

    inference: InferenceConfig = msgspec.field(default_factory=InferenceConfig)
    """Model backends and aliases (package `inference`)."""

    gateway: GatewayConfig = msgspec.field(default_factory=GatewayConfig)
    """The model gateway process and who may call it (package `inference`)."""

    queue: QueueConfig = msgspec.field(default_factory=QueueConfig)
    """The durable job queue (package `store`)."""

    worker: WorkerConfig = msgspec.field(default_factory=WorkerConfig)
    """The worker process (package `appliance`)."""

    perception: PerceptionConfig = msgspec.field(default_factory=PerceptionConfig)
    """Frames, segmentation and tracking, scene facts (package `perception`)."""

    splat: SplatConfig = msgspec.field(default_factory=SplatConfig)
    """The splat pipeline: frames, SfM, training, export (package `perception`)."""

    bridge: BridgeConfig = msgspec.field(default_factory=BridgeConfig)
    """Everything that leaves the box: S3, Litestream, telemetry, drop folder, tunnel."""

    @property
    def data_dir(self) -> Path:
        """The resolved data root."""
        return Path(self.store.data_dir)


@dataclass(frozen=True)
class ConfigProblem:
    """One error in a config file, with the line it is on (0 when unknown)."""

    line: int
    message: str

    def __str__(self) -> str:
        return f"line {self.line}: {self.message}" if self.line else self.message


class ConfigError(Exception):
    """A config file that cannot be used; carries every problem found."""

    def __init__(self, source: str, problems: list[ConfigProblem]) -> None:
        self.source = source
        self.problems = problems
        super().__init__("\n".join(f"{source}: {p}" for p in problems))


def find_config_path(explicit: str | None, env: dict[str, str]) -> Path | None:
    """`--config`, else `$FIELDBOX_CONFIG`, else the system file if present, else None."""
    if explicit:
        return Path(explicit)
    if env.get("FIELDBOX_CONFIG"):
        return Path(env["FIELDBOX_CONFIG"])
    return SYSTEM_CONFIG if SYSTEM_CONFIG.is_file() else None


def load_config(path: Path | None, env: dict[str, str] | None = None) -> FieldboxConfig:
    """Read, check and resolve the config; raise ConfigError listing every problem."""
    env = dict(os.environ) if env is None else env
    text = ""
    if path is not None:
        try:
            text = path.read_text()
        except OSError as exc:
            raise ConfigError(
                str(path), [ConfigProblem(0, f"cannot read: {exc.strerror}")]
            ) from exc
    cfg = parse_config(text, str(path or "<defaults>"))
    data = env.get("FIELDBOX_DATA") or cfg.store.data_dir or _default_data_dir()
    store = msgspec.structs.replace(cfg.store, data_dir=str(Path(data).absolute()))
    return msgspec.structs.replace(cfg, store=store)


def _default_data_dir() -> str:
    # A box installed by Ansible owns /var/lib/fieldbox; a checkout uses ./var.
    return str(SYSTEM_DATA) if SYSTEM_DATA.is_dir() and os.access(SYSTEM_DATA, os.W_OK) else "var"


def parse_config(text: str, source: str = "<string>") -> FieldboxConfig:
    """Parse TOML text into the config tree, or raise ConfigError with line numbers."""
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        match = re.search(r"line (\d+)", str(exc))
        line = int(match.group(1)) if match else 0
        raise ConfigError(source, [ConfigProblem(line, f"not valid TOML: {exc}")]) from exc
    lines = _key_lines(text)
    problems = _check(FieldboxConfig, raw, (), lines)
    if problems:
        raise ConfigError(source, problems)
    cfg = msgspec.convert(raw, FieldboxConfig)
    # Rules across fields (an open gateway, aliases naming nothing) come after the types.
    semantic = (
        check_gateway(cfg.gateway)
        + check_inference(cfg.inference)
        + check_bridge(cfg.bridge)
        + check_admin(cfg.admin)
    )
    if semantic:
        raise ConfigError(source, [ConfigProblem(_line_of(lines, k), m) for k, m in semantic])
    return cfg


def _check(
    struct: type[msgspec.Struct], raw: Any, path: tuple[str, ...], lines: dict[str, int]
) -> list[ConfigProblem]:
    # msgspec stops at the first error; walking field by field reports all of them.
    where = ".".join(path) or "top level"
    if not isinstance(raw, dict):
        return [ConfigProblem(_line_of(lines, ".".join(path)), f"{where}: expected a table")]
    hints = get_type_hints(struct, include_extras=True)
    problems: list[ConfigProblem] = []
    for key, value in raw.items():
        dotted = ".".join((*path, key))
        line = _line_of(lines, dotted)
        if key not in struct.__struct_fields__:
            known = ", ".join(struct.__struct_fields__)
            problems.append(ConfigProblem(line, f"unknown key {dotted!r} (known here: {known})"))
            continue
        hint = hints[key]
        if isinstance(hint, type) and issubclass(hint, msgspec.Struct):
            problems.extend(_check(hint, value, (*path, key), lines))
            continue
        try:
            msgspec.convert(value, hint)
        except msgspec.ValidationError as exc:
            # `... - at $[2].type`: point at the array element's own table.
            at = re.search(r"\$\[(\d+)\](?:\.(\w+))?", str(exc))
            if at:
                line = _line_of(lines, f"{dotted}[{at.group(1)}].{at.group(2) or ''}".rstrip("."))
            problems.append(ConfigProblem(line, f"{dotted}: {exc}{_tag_hint(hint, str(exc))}"))
    return problems


def _tag_hint(hint: Any, message: str) -> str:
    """For a tagged union (`type = ...`), the tags it knows, to append to an error."""
    if ".type`" not in message and "`type`" not in message:
        return ""
    tags: list[str] = []
    for arg in get_args(hint):
        for member in get_args(arg) or (arg,):
            config = getattr(member, "__struct_config__", None)
            if config is not None and isinstance(config.tag, str):
                tags.append(config.tag)
    return f" (known types: {', '.join(tags)})" if tags else ""


_HEADER = re.compile(r"^\s*\[\[?\s*([A-Za-z0-9_.\-\" ]+?)\s*\]\]?\s*(#.*)?$")
_ASSIGN = re.compile(r"^\s*([A-Za-z0-9_.\-\" ]+?)\s*=")


def _key_lines(text: str) -> dict[str, int]:
    """Map each dotted key (and table) to the line it is defined on."""
    found: dict[str, int] = {}
    table: tuple[str, ...] = ()
    counts: dict[str, int] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        header = _HEADER.match(line)
        if header:
            table = tuple(p.strip().strip('"') for p in header.group(1).split("."))
            found.setdefault(".".join(table), number)
            if line.lstrip().startswith("[["):
                # An array of tables: each element is `name[i]`, keys inside `name[i].key`.
                name = ".".join(table)
                index = counts[name] = counts.get(name, -1) + 1
                table = (*table[:-1], f"{table[-1]}[{index}]")
                found[".".join(table)] = number
            continue
        assign = _ASSIGN.match(line)
        if assign:
            parts = tuple(p.strip().strip('"') for p in assign.group(1).split("."))
            for depth in range(1, len(parts) + 1):
                found.setdefault(".".join((*table, *parts[:depth])), number)
    return found


def _line_of(lines: dict[str, int], dotted: str) -> int:
    # A key inside an inline table has no line of its own: use its table's.
    parts = dotted.split(".")
    while parts:
        if ".".join(parts) in lines:
            return lines[".".join(parts)]
        parts.pop()
    return 0


def describe(struct: type[msgspec.Struct] = FieldboxConfig, prefix: str = "") -> list[str]:
    """Every config field with its documentation, default and type, as commented TOML lines."""
    info = msgspec.inspect.type_info(struct)
    if not isinstance(info, msgspec.inspect.StructType):
        raise TypeError(f"{struct!r} is not a msgspec Struct")
    return _describe_table(info, prefix)


def field_docs(struct: type) -> dict[str, str]:
    """Each field's docstring: the string literal right after it in the class body."""
    docs: dict[str, str] = {}
    # Base classes first, so a subclass's own docstring for a field wins.
    for klass in reversed(struct.__mro__):
        if klass is msgspec.Struct or not issubclass(klass, msgspec.Struct):
            continue
        docs.update(_own_field_docs(klass))
    return docs


@functools.cache
def _own_field_docs(klass: type) -> dict[str, str]:
    # msgspec keeps no per-field docs, and a regex over the source misses annotations and
    # docstrings that span lines: the class's own syntax tree has both exactly.
    try:
        source = textwrap.dedent(inspect.getsource(klass))
    except (OSError, TypeError):
        return {}
    node = ast.parse(source).body[0]
    if not isinstance(node, ast.ClassDef):
        return {}
    docs: dict[str, str] = {}
    for stmt, after in zip(node.body, node.body[1:], strict=False):
        if (
            isinstance(stmt, ast.AnnAssign)
            and isinstance(stmt.target, ast.Name)
            and isinstance(after, ast.Expr)
            and isinstance(after.value, ast.Constant)
            and isinstance(after.value.value, str)
        ):
            docs[stmt.target.id] = inspect.cleandoc(after.value.value)
    return docs


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _describe_table(info: msgspec.inspect.StructType, prefix: str) -> list[str]:
    docs = field_docs(info.cls)
    keys: list[str] = []
    tables: list[str] = []
    for field in info.fields:
        doc = _one_line(docs.get(field.name, ""))
        name = f"{prefix}{field.encode_name}"
        if isinstance(field.type, msgspec.inspect.StructType):
            # Sub-tables after every plain key: in TOML a key below a header belongs to it.
            tables.extend(["", f"[{name}]  # {doc}", *_describe_table(field.type, f"{name}.")])
            continue
        if doc:
            keys.append(f"# {doc}")
        keys.append(
            f"{field.encode_name} = {_default_text(field)}  # {_type_text(field.type, name)}"
        )
        keys.extend(_element_tables(field.type, name))
    return keys + tables


def _element_tables(kind: msgspec.inspect.Type, name: str) -> list[str]:
    # A list of tables (`[[inference.backends]]`) is empty by default: show each shape it
    # takes, commented out, so its fields are documented too.
    if not isinstance(kind, msgspec.inspect.ListType):
        return []
    item = kind.item_type
    variants = item.types if isinstance(item, msgspec.inspect.UnionType) else (item,)
    out: list[str] = []
    for variant in variants:
        if not isinstance(variant, msgspec.inspect.StructType):
            continue
        docs = field_docs(variant.cls)
        tag = f"{variant.tag_field} = {_toml_value(variant.tag)}" if variant.tag_field else ""
        about = _one_line(variant.cls.__doc__ or "")
        out.append(f"# [[{name}]]  # {tag + ': ' if tag else ''}{about}".rstrip())
        if tag:
            out.append(f"# {tag}")
        for field in variant.fields:
            if field.name in docs:
                out.append(f"# # {_one_line(docs[field.name])}")
            out.append(
                f"# {field.encode_name} = {_default_text(field)}"
                f"  # {_type_text(field.type, f'{name}.{field.encode_name}')}"
            )
    # A blank line: the next key's comment is not read as the last table's.
    return [*out, ""] if out else out


def _default_text(field: msgspec.inspect.Field) -> str:
    if field.required:
        return "<required>"
    if field.default is not msgspec.NODEFAULT:
        return _toml_value(msgspec.to_builtins(field.default))
    return _toml_value(msgspec.to_builtins(field.default_factory()))


def _type_text(kind: msgspec.inspect.Type, name: str) -> str:
    """The type a key takes, with its bounds, in words."""
    mi = msgspec.inspect
    if isinstance(kind, mi.BoolType):
        return "boolean"
    if isinstance(kind, mi.IntType | mi.FloatType):
        bounds = [
            f"{op} {limit}"
            for op, limit in (
                (">", kind.gt),
                (">=", kind.ge),
                ("<", kind.lt),
                ("<=", kind.le),
                ("multiple of", kind.multiple_of),
            )
            if limit is not None
        ]
        return ", ".join(["integer" if isinstance(kind, mi.IntType) else "number", *bounds])
    if isinstance(kind, mi.StrType):
        text = "string"
        if kind.min_length is not None:
            text += f", at least {kind.min_length} characters"
        if kind.max_length is not None:
            text += f", at most {kind.max_length} characters"
        return text + (f" matching {kind.pattern}" if kind.pattern else "")
    if isinstance(kind, mi.LiteralType):
        return " | ".join(_toml_value(v) for v in kind.values)
    if isinstance(kind, mi.ListType):
        item = kind.item_type
        if isinstance(item, mi.StructType) or (
            isinstance(item, mi.UnionType) and all(isinstance(t, mi.StructType) for t in item.types)
        ):
            return f"list of [[{name}]] tables (below)"
        return f"list of {_type_text(item, name)}"
    if isinstance(kind, mi.DictType):
        key, value = _type_text(kind.key_type, name), _type_text(kind.value_type, name)
        return f"table of {key} = {value}"
    if isinstance(kind, mi.UnionType):
        return " or ".join(_type_text(t, name) for t in kind.types)
    if isinstance(kind, mi.StructType):
        return "table"
    return type(kind).__name__.removesuffix("Type").lower()


_BARE_KEY = re.compile(r"^[A-Za-z0-9_-]+$")


def _toml_value(value: Any) -> str:
    """A builtin value (msgspec.to_builtins) as a TOML value."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return (
            repr(value)
            if math.isfinite(value)
            else ("nan" if value != value else ("inf" if value > 0 else "-inf"))
        )
    if isinstance(value, str):
        # A JSON string is a valid TOML basic string (same escapes).
        return json.dumps(value)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        if not value:
            return "{}"
        items = (
            f"{k if _BARE_KEY.match(k) else json.dumps(k)} = {_toml_value(v)}"
            for k, v in value.items()
        )
        return "{ " + ", ".join(items) + " }"
    raise TypeError(f"no TOML form for {value!r}")
