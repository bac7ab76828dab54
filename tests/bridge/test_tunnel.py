"""`fieldbox tunnel`: the `tailscale serve` commands and policy snippet generated from the
gateway's allowlist, the serve-status parser and verifier on recorded JSON, `apply` with a fake
runner, and `fieldbox tunnel apply` end to end against a fake `tailscale` on disk."""

from __future__ import annotations

import json
import stat
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from appliance.cli import main
from appliance.tunnel_gateway import tunnel_gateway
from bridge.config import TunnelPlanConfig
from bridge.tunnel import (
    TunnelError,
    TunnelGateway,
    TunnelPlan,
    apply,
    parse_node,
    parse_serve_status,
    plan,
    status,
    verify,
)
from tests.conftest import make_config

DATA = Path(__file__).parent / "data" / "tailscale"
HOST = "fieldbox-01.tail1234.ts.net"
SERVE = ["tailscale", "serve", "--bg", "--https=443", "http://127.0.0.1:8081"]


def _fixture(name: str) -> Any:
    return json.loads((DATA / name).read_text())


def _gateway(toml: str = "") -> TunnelGateway:
    # Built the way the CLI builds it, so these tests read `[gateway]` as a user writes it.
    return tunnel_gateway(make_config(Path("/nonexistent"), toml).gateway)


def _allow(*entries: str, extra: str = "") -> TunnelGateway:
    listed = ", ".join(f'"{e}"' for e in entries)
    return _gateway(f"[gateway.tunnel]\nallow = [{listed}]\n{extra}")


def _plan(*entries: str, **kw: Any) -> TunnelPlan:
    return plan(_allow(*entries), TunnelPlanConfig(), **kw)


def _sources(policy: dict[str, Any]) -> list[str]:
    rules = policy.get("grants", []) + policy.get("acls", [])
    return [src for rule in rules for src in rule["src"]]


# --- plan -------------------------------------------------------------------------------


def test_plan_users_and_tags() -> None:
    """One `serve --bg` command to the gateway port; the policy (valid JSON) grants exactly
    the allowlisted login and tag TCP 443 on the box's tag, and declares only that tag."""
    p = _plan("alice@example.com", "tag:office", "alice@example.com")
    assert p.exposes and p.commands == [SERVE]
    assert p.reset == ["tailscale", "serve", "reset"]
    assert p.shell() == ["tailscale serve --bg --https=443 http://127.0.0.1:8081"]
    assert p.warnings == []
    policy = json.loads(p.policy_text())
    assert policy == {
        "tagOwners": {"tag:fieldbox": ["autogroup:admin"]},
        "grants": [
            {"src": ["alice@example.com", "tag:office"], "dst": ["tag:fieldbox"], "ip": ["tcp:443"]}
        ],
    }
    assert any("tag:office" in n and "tagOwners" in n for n in p.notes)


def test_plan_custom_ports_cli_tag_and_acls() -> None:
    """The gateway port, the tailnet HTTPS port, the CLI path and the box tag all come from
    config; `acls` style writes one accept rule to `tag:port` over TCP."""
    gw = _gateway('[gateway]\nport = 9001\n[gateway.tunnel]\nallow = ["bob@example.org"]\n')
    tunnel = TunnelPlanConfig(tailscale="/usr/local/bin/tailscale", https_port=8443)
    p = plan(gw, tunnel, "tag:fb-north", style="acls")
    assert p.commands == [
        ["/usr/local/bin/tailscale", "serve", "--bg", "--https=8443", "http://127.0.0.1:9001"]
    ]
    policy = json.loads(p.policy_text())
    assert policy["acls"] == [
        {
            "action": "accept",
            "src": ["bob@example.org"],
            "proto": "tcp",
            "dst": ["tag:fb-north:8443"],
        }
    ]
    assert set(policy) == {"tagOwners", "acls"}
    assert plan(gw, tunnel, "tag:fb-north").policy["grants"][0]["ip"] == ["tcp:8443"]  # type: ignore[index]


@pytest.mark.parametrize(
    ("entries", "why"),
    [((), "allow is empty"), (("group:eng", "100.64.0.0/10"), "names no tailnet login or tag")],
)
def test_plan_empty_allowlist_exposes_nothing(entries: tuple[str, ...], why: str) -> None:
    """No usable entry: no command, no policy, and a reason; entries the gateway can never
    match (groups, IPs) are left out of the policy with a warning each."""
    p = _plan(*entries)
    assert not p.exposes and p.commands == [] and p.policy is None and p.policy_text() == ""
    assert why in p.reason and "exposes nothing" in p.reason
    assert len(p.warnings) == len(entries)


def test_plan_policy_grants_exactly_the_allowlist() -> None:
    """Usable entries are granted in order, unusable ones dropped, nothing added."""
    p = _plan("tag:office", "group:eng", "carol@github", "tag:ci")
    assert _sources(p.policy or {}) == ["tag:office", "carol@github", "tag:ci"]
    assert any("group:eng" in w for w in p.warnings)


def test_plan_funnel_refused_unless_allowed() -> None:
    """Funnel needs `allow_funnel`; then the command is `tailscale funnel` and the policy
    carries the funnel node attribute. Funnel ports and tag names are checked."""
    with pytest.raises(TunnelError, match="refusing to plan Funnel"):
        _plan("alice@example.com", funnel=True)
    gw = _allow("alice@example.com", extra="allow_funnel = true\n")
    p = plan(gw, TunnelPlanConfig(), funnel=True)
    assert p.commands == [["tailscale", "funnel", *SERVE[2:]]]
    assert p.policy is not None
    assert p.policy["nodeAttrs"] == [{"target": ["tag:fieldbox"], "attr": ["funnel"]}]
    with pytest.raises(TunnelError, match="Funnel only serves ports"):
        plan(gw, TunnelPlanConfig(https_port=444), funnel=True)
    with pytest.raises(TunnelError, match="not a tailnet tag"):
        plan(gw, TunnelPlanConfig(), "fieldbox")


def test_plan_warns_when_the_gateway_cannot_take_tunnel_traffic() -> None:
    """A gateway bound to a LAN address, or one that does not trust 127.0.0.1's identity
    headers, cannot serve tunnel callers: the plan says so."""
    gw = _gateway(
        '[gateway]\nhost = "192.168.1.5"\n[gateway.tunnel]\nallow = ["alice@example.com"]\n'
        'trusted_proxies = ["10.0.0.0/8"]\n'
    )
    warnings = plan(gw, TunnelPlanConfig()).warnings
    assert len(warnings) == 2
    assert "192.168.1.5" in warnings[0] and "trusted_proxies" in warnings[1]


# --- parse_serve_status + verify on recorded output ----------------------------------------


@pytest.mark.parametrize(
    ("fixture", "endpoints", "problems"),
    [
        (
            "serve-status-gateway.json",
            [f"https://{HOST}:443/ -> proxy http://127.0.0.1:8081"],
            [],
        ),
        (
            "serve-status-wrong-port.json",
            [f"https://{HOST}:8443/ -> proxy http://127.0.0.1:8081"],
            ["the gateway is served at https://", "not exposed on HTTPS port 443"],
        ),
        (
            "serve-status-wrong-target.json",
            [f"https://{HOST}:443/ -> proxy http://127.0.0.1:8080"],
            ["something else is exposed: https://", "not exposed on HTTPS port 443"],
        ),
        (
            "serve-status-funnel.json",
            [f"https://{HOST}:443/ -> proxy http://127.0.0.1:8081 (Funnel on)"],
            ["Funnel is on for https://"],
        ),
        (
            "serve-status-extra.json",
            [
                f"https://{HOST}:443/ -> proxy http://127.0.0.1:8081",
                f"https://{HOST}:443/admin -> proxy http://127.0.0.1:8080/admin",
                "tcp://<node>:22 -> tcp 127.0.0.1:22",
            ],
            ["something else is exposed: https://", "something else is exposed: tcp://"],
        ),
        ("serve-status-empty.json", [], ["not exposed on HTTPS port 443"]),
        ("serve-status-null.json", [], ["not exposed on HTTPS port 443"]),
    ],
)
def test_parse_and_verify_recorded(fixture: str, endpoints: list[str], problems: list[str]) -> None:
    """Each recorded serve config parses into the endpoints it shows, and verification
    against the default plan finds exactly the expected problems."""
    exposure = parse_serve_status(_fixture(fixture))
    assert [e.describe() for e in exposure.endpoints] == endpoints
    found = verify(_plan("alice@example.com"), exposure)
    assert len(found) == len(problems), found
    for problem, expected in zip(found, problems, strict=True):
        assert expected in problem


def test_verify_funnel_when_planned_and_an_empty_plan() -> None:
    """Funnel on is right for a Funnel plan and wrong once it is off; with an empty
    allowlist the gateway must not be exposed at all."""
    funnel_plan = plan(
        _allow("alice@example.com", extra="allow_funnel = true\n"), TunnelPlanConfig(), funnel=True
    )
    assert verify(funnel_plan, parse_serve_status(_fixture("serve-status-funnel.json"))) == []
    off = verify(funnel_plan, parse_serve_status(_fixture("serve-status-gateway.json")))
    assert len(off) == 1 and "planned" in off[0]
    empty = _plan()
    assert verify(empty, parse_serve_status(_fixture("serve-status-empty.json"))) == []
    exposed = verify(empty, parse_serve_status(_fixture("serve-status-gateway.json")))
    assert len(exposed) == 1 and "allow is empty" in exposed[0]


def test_parse_foreground_and_malformed() -> None:
    """A foreground session's config counts (and is flagged); a wrong shape is an error, not
    an empty exposure."""
    data = {"Foreground": {"sess1": _fixture("serve-status-gateway.json")}}
    exposure = parse_serve_status(data)
    assert [e.foreground for e in exposure.endpoints] == [True]
    assert "foreground" in verify(_plan("alice@example.com"), exposure)[0]
    malformed: list[Any] = [
        "x",
        {"TCP": []},
        {"Web": {f"{HOST}:https": {}}},
        {"Web": {f"{HOST}:0": {}}},
    ]
    for bad in malformed:
        with pytest.raises(TunnelError):
            parse_serve_status(bad)


def test_parse_node() -> None:
    """`tailscale status --json`: state, DNS name without its dot, tags; before login, the
    login URL and no tags."""
    node = parse_node(_fixture("status-running.json"))
    assert (node.state, node.dns_name, node.tags, node.tailnet) == (
        "Running",
        HOST,
        ["tag:fieldbox"],
        "example.com",
    )
    out = parse_node(_fixture("status-needs-login.json"))
    assert out.state == "NeedsLogin" and out.tags == [] and out.auth_url.startswith("https://")
    with pytest.raises(TunnelError):
        parse_node({"Self": {}})


# --- apply and status with a fake runner ----------------------------------------------------


class FakeTailscale:
    """Answers `tailscale` argv with recorded output; records every call and its options."""

    def __init__(self, status_json: Any, serve_json: Any, fail: dict[str, str] | None = None):
        self.status_json = status_json
        self.serve_json = serve_json
        self.fail = fail or {}
        self.calls: list[list[str]] = []
        self.options: list[dict[str, Any]] = []

    def __call__(self, argv: Sequence[str], **kw: Any) -> subprocess.CompletedProcess[str]:
        self.calls.append(list(argv))
        self.options.append(kw)
        args = " ".join(argv[1:])
        if args in self.fail:
            return subprocess.CompletedProcess(argv, 1, "", self.fail[args])
        out = {"status --json": self.status_json, "serve status --json": self.serve_json}
        text = json.dumps(out[args]) if args in out else "Available within your tailnet:\n"
        return subprocess.CompletedProcess(argv, 0, text, "")


def _found(name: str) -> str:
    return name


def test_apply_success_and_reset() -> None:
    """Status, the serve command, then serve status: verified, with the URL in the message;
    every call is bounded by a timeout. `reset` clears first."""
    fake = FakeTailscale(_fixture("status-running.json"), _fixture("serve-status-gateway.json"))
    result = apply(_plan("alice@example.com"), fake, which=_found)
    assert result.ok and result.problems == [] and result.warnings == []
    assert f"https://{HOST}/" in result.message
    assert fake.calls == [
        ["tailscale", "status", "--json"],
        SERVE,
        ["tailscale", "serve", "status", "--json"],
    ]
    assert all(o["timeout"] > 0 and o["capture_output"] for o in fake.options)
    fake.calls.clear()
    assert apply(_plan("alice@example.com"), fake, reset=True, which=_found).ok
    assert fake.calls[1] == ["tailscale", "serve", "reset"] and fake.calls[2] == SERVE


def test_apply_without_the_cli() -> None:
    """No `tailscale` on PATH: a clear message, nothing run, not ok."""
    fake = FakeTailscale({}, {})
    result = apply(plan(_allow("alice@example.com"), TunnelPlanConfig(tailscale="/nope/ts")), fake)
    assert not result.ok and "not installed" in result.message and "/nope/ts" in result.message
    assert fake.calls == []


def test_apply_command_fails() -> None:
    """A failing command stops the run; its stderr (and a hint for access denied) is in the
    message."""
    denied = "Access denied: serve config denied"
    fake = FakeTailscale(_fixture("status-running.json"), {}, fail={" ".join(SERVE[1:]): denied})
    result = apply(_plan("alice@example.com"), fake, which=_found)
    assert not result.ok and denied in result.message and "--operator" in result.message
    assert result.ran == [SERVE] and len(fake.calls) == 2


def test_apply_verification_fails() -> None:
    """Commands succeed but Funnel is on: not ok, and the problem is listed."""
    fake = FakeTailscale(_fixture("status-running.json"), _fixture("serve-status-funnel.json"))
    result = apply(_plan("alice@example.com"), fake, which=_found)
    assert not result.ok and len(result.problems) == 1 and "Funnel" in result.problems[0]
    assert "does not match the plan" in result.message


def test_apply_not_logged_in_untagged_and_timeout() -> None:
    """Not logged in: nothing runs past status, the login URL is shown. An untagged box
    gets a warning. A hung command is reported, not waited on forever."""
    fake = FakeTailscale(_fixture("status-needs-login.json"), {})
    result = apply(_plan("alice@example.com"), fake, which=_found)
    assert (
        not result.ok
        and "not logged in" in result.message
        and "login.tailscale.com" in result.message
    )
    assert len(fake.calls) == 1
    untagged = _fixture("status-running.json")
    del untagged["Self"]["Tags"]
    fake = FakeTailscale(untagged, _fixture("serve-status-gateway.json"))
    result = apply(_plan("alice@example.com"), fake, which=_found)
    assert result.ok and "--advertise-tags=tag:fieldbox" in result.warnings[0]

    def hang(argv: Sequence[str], **kw: Any) -> subprocess.CompletedProcess[str]:
        raise subprocess.TimeoutExpired(list(argv), kw["timeout"])

    result = apply(_plan("alice@example.com"), hang, which=_found)
    assert not result.ok and "did not finish" in result.message


def test_status() -> None:
    """What is exposed, or why tailscale cannot say."""
    fake = FakeTailscale(_fixture("status-running.json"), _fixture("serve-status-extra.json"))
    now = status(TunnelPlanConfig(), fake, which=_found)
    assert now.ok and now.exposure is not None and len(now.exposure.endpoints) == 3
    assert HOST in now.message
    assert "not installed" in status(TunnelPlanConfig(tailscale="/nope/ts"), fake).message
    logged_out = FakeTailscale(_fixture("status-needs-login.json"), {})
    assert not status(TunnelPlanConfig(), logged_out, which=_found).ok


# --- the real CLI against a fake `tailscale` on disk ------------------------------------------

_FAKE = """#!{python}
import json, sys
from pathlib import Path

here = Path(__file__).parent
data = Path({data!r})
args = sys.argv[1:]
with open(here / "argv.log", "a") as log:
    log.write(json.dumps(args) + "\\n")
served = here / "served"
if args == ["status", "--json"]:
    print((data / "status-running.json").read_text())
elif args == ["serve", "status", "--json"]:
    name = "serve-status-gateway.json" if served.exists() else "serve-status-empty.json"
    print((data / name).read_text())
elif args == ["serve", "--bg", "--https=443", "http://127.0.0.1:8081"]:
    served.write_text("on")
    print("Available within your tailnet:")
elif args == ["serve", "reset"]:
    served.unlink(missing_ok=True)
else:
    print("fake tailscale: unexpected", args, file=sys.stderr)
    sys.exit(2)
"""


def test_cli_apply_end_to_end(tmp_path: Path) -> None:
    """`fieldbox tunnel plan` prints the command and policy; `apply` runs a real `tailscale`
    executable (a fake that records argv and answers with recorded JSON) and verifies it;
    `status` then matches the plan; Funnel without allow_funnel exits 1."""
    fake = tmp_path / "tailscale"
    fake.write_text(_FAKE.format(python=sys.executable, data=str(DATA)))
    fake.chmod(fake.stat().st_mode | stat.S_IXUSR)
    config = tmp_path / "fieldbox.toml"
    config.write_text(
        '[gateway.tunnel]\nallow = ["alice@example.com", "tag:office"]\n'
        f'[bridge.tunnel]\ntailscale = "{fake}"\n'
    )
    env = {"FIELDBOX_CONFIG": str(config), "FIELDBOX_DATA": str(tmp_path / "data")}
    runner = CliRunner()

    planned = runner.invoke(main, ["tunnel", "plan"], env=env)
    assert planned.exit_code == 0, planned.output
    assert f"{fake} serve --bg --https=443 http://127.0.0.1:8081" in planned.output
    assert '"tag:fieldbox"' in planned.output and '"tcp:443"' in planned.output

    before = runner.invoke(main, ["tunnel", "status"], env=env)
    assert before.exit_code == 1 and "not exposed" in before.output

    applied = runner.invoke(main, ["tunnel", "apply", "--reset"], env=env)
    assert applied.exit_code == 0, applied.output
    assert f"https://{HOST}/" in applied.output
    log = [json.loads(line) for line in (tmp_path / "argv.log").read_text().splitlines()]
    assert log[-4:] == [
        ["status", "--json"],
        ["serve", "reset"],
        SERVE[1:],
        ["serve", "status", "--json"],
    ]

    after = runner.invoke(main, ["tunnel", "status"], env=env)
    assert after.exit_code == 0 and "matches the plan" in after.output

    refused = runner.invoke(main, ["tunnel", "apply", "--funnel"], env=env)
    assert refused.exit_code == 1 and "refusing to plan Funnel" in refused.output
