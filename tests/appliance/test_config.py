"""Config loading and checking, and the `fieldbox` CLI commands that use it."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from litestar.testing import TestClient

from appliance.app import create_app
from appliance.cli import main
from appliance.config import ConfigError, FieldboxConfig, load_config, parse_config
from tests.conftest import make_config


def _cli(args: list[str], env: dict[str, str] | None = None) -> Result:
    # FIELDBOX_CONFIG pointing nowhere useful must not leak in from the developer's shell.
    base: dict[str, str | None] = {"FIELDBOX_CONFIG": None, "FIELDBOX_DATA": None}
    base.update(env or {})
    return CliRunner().invoke(main, args, env=base, catch_exceptions=False)


def _problems(text: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_config(text, "box.toml")
    return [str(p) for p in info.value.problems]


def test_empty_file_gives_defaults() -> None:
    """An empty config is the built-in defaults."""
    cfg = parse_config("")
    assert cfg == FieldboxConfig()
    assert cfg.api.port == 8080
    assert cfg.api.max_document_bytes == 1024 * 1024


def test_values_are_read_per_section() -> None:
    """Settings land in the section they are written under."""
    cfg = parse_config(
        '[api]\nport = 9090\nmax_document_bytes = 100\n[log]\nformat = "console"\n'
        "[store]\nbusy_timeout_ms = 6000\n"
    )
    assert cfg.api.port == 9090
    assert cfg.api.max_document_bytes == 100
    assert cfg.log.format == "console"
    assert cfg.store.busy_timeout_ms == 6000


def test_unknown_keys_are_rejected_with_their_line() -> None:
    """Unknown keys, in a section or as a whole section, are errors naming key and line."""
    problems = _problems("[api]\nport = 8080\nprot = 8081\n\n[apii]\nport = 1\n")
    assert len(problems) == 2
    assert problems[0].startswith("line 3:") and "api.prot" in problems[0]
    assert problems[1].startswith("line 5:") and "apii" in problems[1]


def test_every_constraint_error_is_reported_with_its_line() -> None:
    """All bad values are reported at once, each with the line it is on."""
    text = (
        "[store]\n"  # 1
        "busy_timeout_ms = 100\n"  # 2
        "[api]\n"  # 3
        "port = 70000\n"  # 4
        "page_size = 0\n"  # 5
        'max_document_bytes = "big"\n'  # 6
        "[log]\n"  # 7
        'level = "loud"\n'  # 8
    )
    problems = _problems(text)
    assert [p.split(":")[0] for p in problems] == ["line 2", "line 4", "line 5", "line 6", "line 8"]
    assert "store.busy_timeout_ms" in problems[0] and "5000" in problems[0]
    assert "api.port" in problems[1] and "65535" in problems[1]
    assert "api.page_size" in problems[2]
    assert "api.max_document_bytes" in problems[3]
    assert "log.level" in problems[4]


def test_toml_syntax_error_names_its_line() -> None:
    """A file that is not TOML at all says so, with the line of the mistake."""
    problems = _problems('[api]\nport = 8080\nhost = "unterminated\n')
    assert len(problems) == 1
    assert problems[0].startswith("line 3:")
    assert "TOML" in problems[0]


def test_dotted_key_error_names_its_line() -> None:
    """A bad value written as a dotted key (`api.port = ...`) is reported with its line."""
    problems = _problems("# comment\napi.port = 70000\n")
    assert problems == [problems[0]]
    assert problems[0].startswith("line 2:")


def test_fieldbox_data_sets_the_data_root(tmp_path: Path) -> None:
    """$FIELDBOX_DATA chooses the data root when the file does not name one."""
    conf = tmp_path / "box.toml"
    conf.write_text("[api]\nport = 9000\n")
    cfg = load_config(conf, {"FIELDBOX_DATA": str(tmp_path / "elsewhere")})
    assert cfg.data_dir == tmp_path / "elsewhere"
    assert cfg.api.port == 9000


def test_fieldbox_data_overrides_the_file(tmp_path: Path) -> None:
    """$FIELDBOX_DATA wins over data_dir in the file (how `fieldbox serve` is pointed elsewhere)."""
    conf = tmp_path / "box.toml"
    conf.write_text(f'[store]\ndata_dir = "{tmp_path / "from-file"}"\n')
    assert load_config(conf, {}).data_dir == tmp_path / "from-file"
    cfg = load_config(conf, {"FIELDBOX_DATA": str(tmp_path / "from-env")})
    assert cfg.data_dir == tmp_path / "from-env"


def test_data_root_from_file_is_made_absolute(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without $FIELDBOX_DATA the file's data_dir is used, resolved to an absolute path."""
    monkeypatch.chdir(tmp_path)
    conf = tmp_path / "box.toml"
    conf.write_text('[store]\ndata_dir = "rel/data"\n')
    cfg = load_config(conf, {})
    assert cfg.data_dir.is_absolute()
    assert cfg.data_dir == tmp_path / "rel" / "data"


def test_unreadable_config_is_a_config_error(tmp_path: Path) -> None:
    """A config path that does not exist is reported, not silently replaced by defaults."""
    with pytest.raises(ConfigError) as info:
        load_config(tmp_path / "missing.toml", {})
    assert "cannot read" in str(info.value)


def test_check_config_accepts_a_good_file(tmp_path: Path) -> None:
    """`fieldbox check-config PATH` on a valid file says ok and exits 0."""
    conf = tmp_path / "good.toml"
    conf.write_text("[api]\nport = 9000\n")
    result = _cli(["check-config", str(conf)])
    assert result.exit_code == 0
    assert "ok" in result.output


def test_check_config_prints_each_error_with_line_and_fails(tmp_path: Path) -> None:
    """`fieldbox check-config PATH` lists every problem with its line number and exits non-zero."""
    conf = tmp_path / "bad.toml"
    conf.write_text("[api]\nport = 0\nbogus = true\n[store]\nmin_free_disk_mb = -1\n")
    result = _cli(["check-config", str(conf)])
    assert result.exit_code != 0
    lines = [ln for ln in result.stderr.splitlines() if ln.strip()]
    assert len(lines) == 3
    assert re.search(r"line 2: .*api\.port", lines[0])
    assert re.search(r"line 3: .*api\.bogus", lines[1])
    assert re.search(r"line 5: .*store\.min_free_disk_mb", lines[2])
    assert all(str(conf) in ln for ln in lines)


def test_check_config_on_missing_file_fails(tmp_path: Path) -> None:
    """Checking a file that does not exist fails instead of passing on the defaults."""
    result = _cli(["check-config", str(tmp_path / "nope.toml")])
    assert result.exit_code != 0
    assert "cannot read" in result.stderr


def test_check_config_uses_config_option(tmp_path: Path) -> None:
    """With no PATH, check-config checks the file given by --config."""
    conf = tmp_path / "bad.toml"
    conf.write_text("[log]\nlevel = 3\n")
    result = _cli(["--config", str(conf), "check-config"])
    assert result.exit_code != 0
    assert "line 2:" in result.stderr


def test_check_config_reports_syntax_error(tmp_path: Path) -> None:
    """A TOML syntax error makes check-config fail with the line of the error."""
    conf = tmp_path / "broken.toml"
    conf.write_text("[api\nport = 1\n")
    result = _cli(["check-config", str(conf)])
    assert result.exit_code != 0
    assert "line 1:" in result.stderr


def test_keys_create_list_revoke(tmp_path: Path) -> None:
    """keys create prints a working token last; list shows it; revoke makes it fail with 401."""
    data = tmp_path / "data"
    env = {"FIELDBOX_DATA": str(data)}
    conf = tmp_path / "box.toml"
    conf.write_text("")
    created = _cli(
        ["--config", str(conf), "keys", "create", "--scope", "field", "--name", "tab3"], env
    )
    assert created.exit_code == 0, created.output
    token = created.output.split()[-1]
    assert token.startswith("fbx_")

    listed = _cli(["--config", str(conf), "keys", "list"], env)
    assert listed.exit_code == 0
    rows = [ln.split("\t") for ln in listed.output.splitlines()]
    assert len(rows) == 1
    key_id, scopes, state, name = rows[0]
    assert (scopes, state, name) == ("field", "active", "tab3")
    assert token.startswith(f"fbx_{key_id}_")
    assert token not in listed.output

    cfg = make_config(data)
    with TestClient(app=create_app(cfg)) as client:
        client.headers["Authorization"] = f"Bearer {token}"
        assert client.get("/v1/locations").status_code == 200

        revoked = _cli(["--config", str(conf), "keys", "revoke", key_id], env)
        assert revoked.exit_code == 0
        assert client.get("/v1/locations").status_code == 401

    listed = _cli(["--config", str(conf), "keys", "list"], env)
    assert listed.output.split("\t")[2] == "revoked"


def test_keys_create_with_several_scopes(tmp_path: Path) -> None:
    """A key can carry several scopes; they are listed comma-separated."""
    env = {"FIELDBOX_DATA": str(tmp_path / "data")}
    created = _cli(["keys", "create", "--scope", "field,admin", "--name", "ops"], env)
    assert created.exit_code == 0
    listed = _cli(["keys", "list"], env)
    assert listed.output.split("\t")[1] == "field,admin"


def test_keys_create_rejects_unknown_scope(tmp_path: Path) -> None:
    """An unknown scope is a usage error and creates no key."""
    env = {"FIELDBOX_DATA": str(tmp_path / "data")}
    result = _cli(["keys", "create", "--scope", "root", "--name", "x"], env)
    assert result.exit_code != 0
    assert "fbx_" not in result.output
    assert _cli(["keys", "list"], env).output.strip() == ""


def test_keys_revoke_unknown_fails(tmp_path: Path) -> None:
    """Revoking a key that does not exist fails with a non-zero exit."""
    env = {"FIELDBOX_DATA": str(tmp_path / "data")}
    result = _cli(["keys", "revoke", "deadbeef0000"], env)
    assert result.exit_code != 0
    assert "deadbeef0000" in result.output


def test_keys_use_fieldbox_data(tmp_path: Path) -> None:
    """The keys commands write keys.db under $FIELDBOX_DATA."""
    data = tmp_path / "somewhere"
    result = _cli(
        ["keys", "create", "--scope", "gateway", "--name", "g"], {"FIELDBOX_DATA": str(data)}
    )
    assert result.exit_code == 0
    assert (data / "keys.db").is_file()


def test_invalid_config_stops_commands(tmp_path: Path) -> None:
    """A command that needs the config refuses to run on an invalid one, naming the line."""
    conf = tmp_path / "bad.toml"
    conf.write_text("[api]\nport = -1\n")
    result = _cli(["--config", str(conf), "keys", "list"], {"FIELDBOX_DATA": str(tmp_path / "d")})
    assert result.exit_code != 0
    assert "line 2:" in result.stderr
    assert not (tmp_path / "d" / "keys.db").exists()


# --- the [inference] and [gateway] sections ------------------------------------------------

GOOD_INFERENCE = """\
[[inference.backends]]
name = "local"
type = "llamacpp"
path = "/var/lib/fieldbox/models/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
models = ["smollm2-135m"]
max_concurrency = 1

[[inference.backends]]
name = "gpu"
type = "vllm"
url = "http://10.0.0.5:8000/v1"
models = ["Qwen/Qwen2.5-7B-Instruct"]
max_concurrency = 16

[[inference.backends]]
name = "mac"
type = "mlx"
url = "http://10.0.0.6:8080/v1"
models = ["mlx-community/Llama-3.2-3B-Instruct-4bit"]
max_concurrency = 2

[[inference.backends]]
name = "ollama"
type = "ollama"
url = "http://10.0.0.7:11434"
models = ["llama3.2:3b"]

[[inference.backends]]
name = "cloud"
type = "openai"
url = "https://api.openai.com/v1"
api_key_env = "OPENAI_API_KEY"
models = ["gpt-4o-mini"]
max_concurrency = 4

[inference.aliases]
chat-default = ["Qwen/Qwen2.5-7B-Instruct", "smollm2-135m"]
fallback = ["gpt-4o-mini"]

[gateway]
port = 8081
allow_networks = ["192.168.10.0/24"]
"""


def test_multi_backend_config_loads(tmp_path: Path) -> None:
    """Backends of every type, with aliases across them, load and pass check-config."""
    from inference.backends.llamacpp import LlamaCppConfig
    from inference.backends.openai import OpenAIConfig
    from inference.backends.vllm import VllmConfig

    cfg = parse_config(GOOD_INFERENCE)
    backends = cfg.inference.backends
    assert [(b.name, type(b).__name__) for b in backends] == [
        ("local", "LlamaCppConfig"),
        ("gpu", "VllmConfig"),
        ("mac", "MlxConfig"),
        ("ollama", "OllamaConfig"),
        ("cloud", "OpenAIConfig"),
    ]
    assert isinstance(backends[0], LlamaCppConfig) and backends[0].max_concurrency == 1
    assert isinstance(backends[1], VllmConfig) and backends[1].max_concurrency == 16
    assert backends[1].url == "http://10.0.0.5:8000/v1"
    assert isinstance(backends[4], OpenAIConfig) and backends[4].api_key_env == "OPENAI_API_KEY"
    assert cfg.inference.aliases == {
        "chat-default": ["Qwen/Qwen2.5-7B-Instruct", "smollm2-135m"],
        "fallback": ["gpt-4o-mini"],
    }
    assert cfg.gateway.allow_networks == ["192.168.10.0/24"]
    conf = tmp_path / "box.toml"
    conf.write_text(GOOD_INFERENCE)
    result = _cli(["check-config", str(conf)])
    assert result.exit_code == 0, result.output
    assert "ok" in result.output


def _check_config_lines(tmp_path: Path, text: str) -> list[str]:
    conf = tmp_path / "box.toml"
    conf.write_text(text)
    result = _cli(["check-config", str(conf)])
    assert result.exit_code == 1, result.output
    lines = [ln for ln in result.stderr.splitlines() if ln.strip()]
    assert all(ln.startswith(f"{conf}: line ") for ln in lines), lines
    return lines


def test_check_config_reports_an_open_gateway(tmp_path: Path) -> None:
    """`require_key = false` with no allow_networks and no force_open is refused, at its line."""
    (line,) = _check_config_lines(tmp_path, "[api]\nport = 8080\n[gateway]\nrequire_key = false\n")
    assert "line 4:" in line
    assert "open to anyone" in line and "force_open" in line
    for fix in ('allow_networks = ["10.0.0.0/8"]', "force_open = true"):
        assert parse_config(f"[gateway]\nrequire_key = false\n{fix}\n").gateway.require_key is False


def test_check_config_reports_an_alias_nobody_serves(tmp_path: Path) -> None:
    """An alias naming a model no backend serves is reported at the alias's line."""
    text = GOOD_INFERENCE.replace('fallback = ["gpt-4o-mini"]', 'fallback = ["gpt-5-huge"]')
    (line,) = _check_config_lines(tmp_path, text)
    number = text.splitlines().index('fallback = ["gpt-5-huge"]') + 1
    assert f"line {number}:" in line
    assert "'fallback'" in line and "'gpt-5-huge'" in line
    # With no backends configured, only the embedded default is served.
    (line,) = _check_config_lines(tmp_path, '\n[inference.aliases]\nfast = ["qwen"]\n')
    assert "line 3:" in line and "'qwen'" in line


def test_check_config_reports_a_duplicate_backend_name(tmp_path: Path) -> None:
    """Two backends with one name are an error naming the name, with a line number."""
    text = GOOD_INFERENCE.replace('name = "mac"', 'name = "gpu"')
    (line,) = _check_config_lines(tmp_path, text)
    assert re.search(r"line [1-9]\d*:", line)
    assert "'gpu'" in line and "twice" in line


def test_check_config_reports_an_unknown_backend_type(tmp_path: Path) -> None:
    """A backend `type` that does not exist is reported at its line, naming the known types."""
    text = (
        '[[inference.backends]]\nname = "tgi"\ntype = "tgi"\nurl = "http://x/v1"\nmodels = ["m"]\n'
    )
    (line,) = _check_config_lines(tmp_path, text)
    assert "line 3:" in line
    assert "'tgi'" in line and "type" in line and "vllm" in line
    (line,) = _check_config_lines(tmp_path, text.replace('type = "tgi"\n', ""))
    assert "line 1:" in line and "type" in line


@pytest.mark.parametrize(
    ("old", "new"),
    [('name = "mac"', 'name = "gpu"'), ('type = "mlx"', 'type = "tgi"')],
    ids=["duplicate-name", "unknown-type"],
)
def test_backend_problems_point_at_their_own_table(tmp_path: Path, old: str, new: str) -> None:
    """A problem in the third backend is reported at a line of the third backend's table."""
    text = GOOD_INFERENCE.replace(old, new)
    lines = text.splitlines()
    start = [i for i, ln in enumerate(lines, 1) if ln == "[[inference.backends]]"][2]
    (line,) = _check_config_lines(tmp_path, text)
    number = int(line.split("line ", 1)[1].split(":", 1)[0])
    assert start <= number < start + 6, line
