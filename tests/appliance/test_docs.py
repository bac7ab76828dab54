"""The docs say what the code does: commands, routes, config keys, and an index of pages.

In the style of Datasette's tests/test_docs.py: each test walks something the code owns
(the click tree, the apps' routes, the config structs) and fails on anything the docs miss.
"""

from __future__ import annotations

import importlib
import re
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click
import msgspec
import msgspec.inspect as mi
import pytest
from click.testing import CliRunner
from litestar import Litestar

from appliance.config import FieldboxConfig, describe, field_docs, parse_config

ROOT = Path(__file__).resolve().parents[2]
DOCS_DIR = ROOT / "docs"
DOCS = DOCS_DIR / "config.md"
README = ROOT / "README.md"

# README rows for commands another change is adding; each is checked as soon as it exists.
PENDING_COMMANDS = {("fieldbox", "status")}


# --- the config reference ---------------------------------------------------------------


def test_config_reference_is_current() -> None:
    """docs/config.md holds exactly what `fieldbox config describe` prints."""
    expected = "\n".join(describe()).lstrip()
    assert f"```toml\n{expected}\n```" in DOCS.read_text(), (
        "docs/config.md is stale: regenerate it from `fieldbox config describe`"
    )


def _describe_text() -> str:
    return "\n".join(describe()).lstrip()


def _sections(
    info: mi.StructType | None = None, prefix: str = ""
) -> Iterator[tuple[str, mi.StructType]]:
    """Every `[section]` of the config tree (struct-typed fields, at any depth)."""
    if info is None:
        root = mi.type_info(FieldboxConfig)
        assert isinstance(root, mi.StructType)
        info = root
    for field in info.fields:
        if isinstance(field.type, mi.StructType):
            name = f"{prefix}{field.encode_name}"
            yield name, field.type
            yield from _sections(field.type, f"{name}.")


def _tables(text: str) -> dict[str, list[str]]:
    """The lines under each `[header]` of the described file, by dotted name."""
    tables: dict[str, list[str]] = {}
    current: list[str] = []
    for line in text.splitlines():
        header = re.match(r"^\[([\w.]+)\]", line)
        if header:
            current = tables.setdefault(header.group(1), [])
        else:
            current.append(line)
    return tables


def test_describe_is_the_defaults_as_toml() -> None:
    """Uncommented, the described file is valid TOML that loads to exactly the defaults."""
    text = _describe_text()
    assert tomllib.loads(text) == msgspec.to_builtins(FieldboxConfig())
    assert parse_config(text) == FieldboxConfig()


def test_describe_documents_every_field_of_every_section() -> None:
    """Each key of each section is in its table, right under a comment with its docstring."""
    tables = _tables(_describe_text())
    sections = dict(_sections())
    assert {"store", "worker", "gateway.tunnel", "bridge.s3"} <= set(sections)
    missing: list[str] = []
    for name, info in sections.items():
        assert name in tables, f"no [{name}] table in `fieldbox config describe`"
        lines = tables[name]
        docs = field_docs(info.cls)
        for field in info.fields:
            if isinstance(field.type, mi.StructType):
                continue
            key = f"{name}.{field.encode_name}"
            at = [i for i, line in enumerate(lines) if line.startswith(f"{field.encode_name} = ")]
            if not at:
                missing.append(f"{key}: no `{field.encode_name} = ...` line")
                continue
            doc = " ".join(docs.get(field.name, "").split())
            above = lines[at[0] - 1] if at[0] else ""
            if not doc or above != f"# {doc}":
                missing.append(f"{key}: not under its docstring (got {above!r})")
    assert not missing, "\n".join(missing)


def test_describe_keeps_the_docstrings_the_regex_missed() -> None:
    """`[worker] kinds` (annotation over lines) and multi-line docstrings come out whole."""
    tables = _tables(_describe_text())
    worker = tables["worker"]
    assert worker[
        worker.index('kinds = ["perception", "splat"]  # list of "perception" | "splat"') - 1
    ] == ("# Job kinds this worker claims.")
    assert any(line.endswith("else ./var (a checkout).") for line in tables["store"])


def test_describe_shows_every_shape_of_a_list_of_tables() -> None:
    """Each `[[...]]` element struct (each backend type, a sync window) lists all its fields."""
    text = _describe_text()
    seen = 0
    for name, info in _sections():
        for field in info.fields:
            if not isinstance(field.type, mi.ListType):
                continue
            item = field.type.item_type
            variants = item.types if isinstance(item, mi.UnionType) else (item,)
            for variant in variants:
                if not isinstance(variant, mi.StructType):
                    continue
                seen += 1
                table = f"{name}.{field.encode_name}"
                tag = f' = "{variant.tag}"' if variant.tag_field else ""
                head = f"# [[{table}]]  # {variant.tag_field}{tag}" if tag else f"# [[{table}]]"
                block = text.split(head, 1)
                assert len(block) == 2, f"no {head!r} in `fieldbox config describe`"
                body = block[1].split("\n\n", 1)[0].split("\n# [[", 1)[0]
                for sub in variant.fields:
                    assert f"\n# {sub.encode_name} = " in body, f"{table}: {sub.encode_name}"
    assert seen >= 6  # five backend types and the sync window


class _Base(msgspec.Struct, kw_only=True):
    inherited: int = 1
    """From the base class."""


class _Sample(_Base, kw_only=True):
    wrapped: dict[
        str,
        int,
    ] = msgspec.field(default_factory=dict)
    """A docstring
    that runs over two lines."""

    undocumented: str = "x"
    plain: float = 2.5
    """Plain."""


def test_field_docs_read_from_the_syntax_tree() -> None:
    """Docstrings pair with their field through annotations and docstrings that span lines."""
    assert field_docs(_Sample) == {
        "inherited": "From the base class.",
        "wrapped": "A docstring\nthat runs over two lines.",
        "plain": "Plain.",
    }
    lines = describe(_Sample)
    assert lines[lines.index("wrapped = {}  # table of string = integer") - 1] == (
        "# A docstring that runs over two lines."
    )
    assert lines[lines.index('undocumented = "x"  # string') - 1].startswith("wrapped = ")
    assert "inherited = 1  # integer" in lines


# --- commands ---------------------------------------------------------------------------


def _entry_point() -> click.Group:
    """The click group the `fieldbox` console script runs, wherever it lives."""
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    module, _, attr = scripts["fieldbox"].partition(":")
    obj: Any = importlib.import_module(module)
    for part in attr.split("."):
        obj = getattr(obj, part)
    assert isinstance(obj, click.Group)
    return obj


def _commands(
    group: click.Group, path: tuple[str, ...] = ("fieldbox",)
) -> Iterator[tuple[tuple[str, ...], click.Command]]:
    """Every command and subgroup under `group`, with its words (`fieldbox jobs list`)."""
    ctx = click.Context(group, info_name=path[-1])
    for name in group.list_commands(ctx):
        command = group.get_command(ctx, name)
        assert command is not None, name
        yield (*path, name), command
        if isinstance(command, click.Group):
            yield from _commands(command, (*path, name))


_WORD = re.compile(r"^[a-z][a-z0-9-]*$")


def _readme_commands() -> set[tuple[str, ...]]:
    """The command words of each row of README's command table.

    A row may shorten later commands of the same group: `fieldbox jobs list` / `show ID`.
    """
    found: set[tuple[str, ...]] = set()
    text = README.read_text()
    table = text.split("## Commands", 1)[1]
    for row in re.findall(r"^\| *(`fieldbox[^|]*)\|", table, re.M):
        base: tuple[str, ...] = ()
        for span in re.findall(r"`([^`]+)`", row):
            words: list[str] = []
            for word in span.split():
                if not _WORD.match(word):
                    break
                words.append(word)
            if words and words[0] == "fieldbox":
                found.add(tuple(words))
                base = tuple(words[:-1])
            elif words and base:
                found.add((*base, *words))
    return found


def test_every_command_has_help() -> None:
    """Each command and group says what it does, and its `--help` renders."""
    main = _entry_point()
    runner = CliRunner()
    commands = list(_commands(main))
    assert len(commands) > 20
    for words, command in commands:
        assert (command.help or command.short_help or "").strip(), f"{' '.join(words)}: no help"
        result = runner.invoke(main, [*words[1:], "--help"])
        assert result.exit_code == 0, f"{' '.join(words)} --help: {result.output}"


def test_every_command_is_in_the_readme() -> None:
    """Each command (subgroups' too) has a row in README's command table."""
    rows = _readme_commands()
    missing = [
        " ".join(words)
        for words, _ in _commands(_entry_point())
        if not any(row[: len(words)] == words for row in rows)
    ]
    assert not missing, f"README.md's command table lacks: {missing}"


def test_readme_names_only_real_commands() -> None:
    """No row of README's command table names a command that does not exist."""
    real = {words for words, _ in _commands(_entry_point())}
    stale = [
        " ".join(row)
        for row in _readme_commands()
        if not any(row[:n] in real for n in range(2, len(row) + 1)) and row not in PENDING_COMMANDS
    ]
    assert not stale, f"README.md's command table names unknown commands: {stale}"


# --- routes -----------------------------------------------------------------------------


def _apps(data_dir: Path) -> tuple[Litestar, Litestar]:
    from appliance.app import create_app
    from inference.app import create_gateway_app

    cfg = parse_config("")
    cfg = msgspec.structs.replace(
        cfg, store=msgspec.structs.replace(cfg.store, data_dir=str(data_dir))
    )
    return create_app(cfg), create_gateway_app(cfg.gateway, cfg.inference, cfg.store)


def _route_paths(tmp_path: Path) -> list[str]:
    """Every path both apps serve, `{param:type}` written `{param}` as the docs do."""
    from inference.controllers.completions import ROUTES

    api, gateway = _apps(tmp_path)
    paths = [route.path for app in (api, gateway) for route in app.routes]
    # The completion routes answer in plain ASGI ahead of Litestar's router.
    paths.extend(ROUTES)
    return sorted({re.sub(r"\{(\w+):\w+\}", r"{\1}", path) for path in paths})


def test_every_route_is_documented(tmp_path: Path) -> None:
    """Each route of the field API and the gateway is named in docs/api.md or gateway.md."""
    docs = (DOCS_DIR / "api.md").read_text() + (DOCS_DIR / "gateway.md").read_text()
    paths = _route_paths(tmp_path)
    assert {"/v1/chat/completions", "/v1/locations/{location_id}", "/admin/sync/now"} <= set(paths)

    def named(path: str) -> bool:
        # Whole paths only: `/v1/jobs` in the docs says nothing about `/v1/jobs/{job_id}`.
        return re.search(r"(?<![\w/{}.-])" + re.escape(path) + r"(?![\w/{}.-])", docs) is not None

    missing = [path for path in paths if not named(path)]
    assert not missing, f"routes in neither docs/api.md nor docs/gateway.md: {missing}"


# --- the docs index ---------------------------------------------------------------------


def _links(path: Path) -> set[Path]:
    """The local files a markdown page links to, resolved."""
    targets = re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", path.read_text())
    return {
        (path.parent / target).resolve() for target in targets if not re.match(r"^[a-z]+:", target)
    }


def test_docs_index_lists_every_page() -> None:
    """docs/README.md links every page under docs/, each on a line saying what it holds."""
    index = DOCS_DIR / "README.md"
    pages = {page.resolve() for page in DOCS_DIR.rglob("*.md")} - {index.resolve()}
    assert len(pages) > 10
    linked = _links(index)
    missing = sorted(str(page.relative_to(ROOT)) for page in pages - linked)
    assert not missing, f"docs/README.md does not link: {missing}"
    broken = sorted(str(link) for link in linked if not link.exists())
    assert not broken, f"docs/README.md links to missing files: {broken}"
    for line in index.read_text().splitlines():
        if re.search(r"\]\([\w./-]+\.md\)", line) and line.startswith("|"):
            assert re.search(r"\| *\S.*\S *\|$", line.split(")", 1)[1]), line


def test_readme_links_the_docs_index() -> None:
    """README.md links docs/README.md, so every page is two clicks from the top."""
    assert (DOCS_DIR / "README.md").resolve() in _links(README)


@pytest.mark.parametrize("page", sorted(p.name for p in DOCS_DIR.glob("*.md")))
def test_docs_links_resolve(page: str) -> None:
    """Relative links between docs pages point at files that exist."""
    broken = [str(link) for link in _links(DOCS_DIR / page) if not link.exists()]
    assert not broken, f"docs/{page} links to missing files: {broken}"
