"""The Tailscale tunnel to the model gateway: the plan (`tailscale serve` commands and the
tailnet policy snippet), applying it, and reading back what the box exposes.

`plan` and `verify` are pure. `apply` and `status` run the `tailscale` CLI through an injected
runner, so tests need no tailscaled; running it and parsing its JSON is `bridge.tailscale_cli`
(its parsers are re-exported here).
"""

from __future__ import annotations

import ipaddress
import json
import re
import shlex
import shutil
import subprocess
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import urlsplit

from bridge.config import TunnelPlanConfig
from bridge.tailscale_cli import Endpoint as Endpoint
from bridge.tailscale_cli import Exposure as Exposure
from bridge.tailscale_cli import Node as Node
from bridge.tailscale_cli import Runner as Runner
from bridge.tailscale_cli import TunnelError as TunnelError
from bridge.tailscale_cli import call, not_installed, read_exposure, read_node
from bridge.tailscale_cli import parse_node as parse_node
from bridge.tailscale_cli import parse_serve_status as parse_serve_status

Which = Callable[[str], "str | None"]
PolicyStyle = Literal["grants", "acls"]

FUNNEL_PORTS = (443, 8443, 10000)
"""The only ports Tailscale Funnel accepts."""

_TAG = re.compile(r"^tag:[A-Za-z0-9][A-Za-z0-9-]*$")
_LOGIN = re.compile(r"^[^\s@:]+@[^\s@:]+$")
_LOOPBACK = frozenset({"127.0.0.1", "localhost"})


@dataclass(frozen=True)
class TunnelGateway:
    """What a plan needs to know of the model gateway: where it listens, whom it lets in.

    The caller builds it from `[gateway]` (`appliance.tunnel_gateway`): the bridge never
    imports the gateway's config, so the arrow runs from appliance to both.
    """

    host: str
    port: int
    allow: tuple[str, ...] = ()
    """`[gateway.tunnel] allow`: tailnet logins and tags let in without a key."""
    trusted_proxies: tuple[str, ...] = ("127.0.0.1/32",)
    """`[gateway.tunnel] trusted_proxies`: CIDRs whose identity headers the gateway believes."""
    allow_funnel: bool = False
    """`[gateway.tunnel] allow_funnel`: whether the gateway lets Funnel requests through."""


@dataclass(frozen=True)
class TunnelPlan:
    """What `fieldbox tunnel apply` runs, and the tailnet policy that goes with it."""

    tailscale: str
    gateway_port: int
    https_port: int
    target: str
    box_tag: str
    funnel: bool
    allow_funnel: bool
    allow: list[str]
    commands: list[list[str]]
    reset: list[str]
    policy: dict[str, Any] | None
    reason: str = ""
    warnings: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def exposes(self) -> bool:
        """True when the plan serves the gateway at all."""
        return bool(self.commands)

    def policy_text(self) -> str:
        """The policy snippet as JSON (valid HuJSON), or "" when nothing is exposed."""
        if self.policy is None:
            return ""
        # One rule per line: reviewable at a glance, and diffs well against the policy file.
        parts = []
        for key, value in self.policy.items():
            body = json.dumps(value)
            if isinstance(value, list):
                body = "[\n" + ",\n".join(f"    {json.dumps(v)}" for v in value) + "\n  ]"
            parts.append(f"  {json.dumps(key)}: {body}")
        return "{\n" + ",\n".join(parts) + "\n}"

    def shell(self) -> list[str]:
        """The commands as shell lines."""
        return [shlex.join(argv) for argv in self.commands]


@dataclass(frozen=True)
class ApplyResult:
    """What `apply` did: success, a message for the operator, and what verification found."""

    ok: bool
    message: str
    ran: list[list[str]] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    node: Node | None = None
    exposure: Exposure | None = None


@dataclass(frozen=True)
class TunnelStatus:
    """What the box exposes now, or why tailscale cannot say."""

    ok: bool
    message: str
    node: Node | None = None
    exposure: Exposure | None = None


def plan(
    gateway: TunnelGateway,
    tunnel: TunnelPlanConfig,
    box_tag: str = "tag:fieldbox",
    *,
    funnel: bool = False,
    style: PolicyStyle = "grants",
) -> TunnelPlan:
    """The commands and policy that expose the gateway to exactly `[gateway.tunnel] allow`."""
    if not _TAG.match(box_tag):
        raise TunnelError(f"{box_tag!r} is not a tailnet tag (tag:name, letters, digits, dashes)")
    if funnel and not gateway.allow_funnel:
        raise TunnelError(
            "refusing to plan Funnel: [gateway.tunnel] allow_funnel is false, so the gateway"
            " would refuse every request from the public internet anyway"
        )
    if funnel and tunnel.https_port not in FUNNEL_PORTS:
        ports = ", ".join(map(str, FUNNEL_PORTS))
        raise TunnelError(f"Funnel only serves ports {ports}, not [bridge.tunnel] https_port")
    allow, warnings = _allow_entries(gateway.allow)
    warnings += _gateway_warnings(gateway)
    target = f"http://127.0.0.1:{gateway.port}"
    common: dict[str, Any] = {
        "tailscale": tunnel.tailscale,
        "gateway_port": gateway.port,
        "https_port": tunnel.https_port,
        "target": target,
        "box_tag": box_tag,
        "funnel": funnel,
        "allow_funnel": gateway.allow_funnel,
        "allow": allow,
        "reset": [tunnel.tailscale, "serve", "reset"],
        "warnings": warnings,
    }
    if not allow:
        why = "is empty" if not gateway.allow else "names no tailnet login or tag"
        reason = (
            f"[gateway.tunnel] allow {why}: the gateway would let no tunnel caller in,"
            " so the plan exposes nothing"
        )
        return TunnelPlan(commands=[], policy=None, reason=reason, **common)
    verb = "funnel" if funnel else "serve"
    commands = [[tunnel.tailscale, verb, "--bg", f"--https={tunnel.https_port}", target]]
    notes = [
        f"tag the box so the policy applies to it: sudo tailscale up --advertise-tags={box_tag}",
    ]
    tags = [a for a in allow if a.startswith("tag:")]
    if tags:
        notes.append(f"the tags in src ({', '.join(tags)}) must already be in tagOwners")
    policy = _policy(allow, box_tag, tunnel.https_port, funnel, style)
    return TunnelPlan(commands=commands, policy=policy, notes=notes, **common)


def _allow_entries(entries: Sequence[str]) -> tuple[list[str], list[str]]:
    allow: list[str] = []
    warnings: list[str] = []
    for entry in entries:
        if entry in allow:
            continue
        if _TAG.match(entry) or _LOGIN.match(entry):
            allow.append(entry)
        else:
            # The gateway compares the caller's login or node tags only; a group or an IP
            # here would be granted by the policy yet refused by the gateway.
            warnings.append(
                f"[gateway.tunnel] allow entry {entry!r} is neither a tailnet login nor a tag:"
                " the gateway never matches it, so the policy leaves it out"
            )
    return allow, warnings


def _gateway_warnings(gateway: TunnelGateway) -> list[str]:
    warnings: list[str] = []
    if gateway.host not in ("0.0.0.0", "::", "127.0.0.1", "localhost", "::1"):
        warnings.append(
            f"[gateway] host is {gateway.host!r}: `tailscale serve` proxies to 127.0.0.1 only,"
            " so it cannot reach the gateway; set host to 0.0.0.0 or 127.0.0.1"
        )
    if not any(_has_loopback(cidr) for cidr in gateway.trusted_proxies):
        warnings.append(
            "127.0.0.1 (where `tailscale serve` connects from) is not in [gateway.tunnel]"
            " trusted_proxies: the gateway will refuse every tunnel caller with 403"
        )
    return warnings


def _has_loopback(cidr: str) -> bool:
    try:
        return ipaddress.ip_address("127.0.0.1") in ipaddress.ip_network(cidr, strict=False)
    except ValueError:
        return False  # check_gateway reports bad CIDRs


def _policy(
    allow: list[str], box_tag: str, port: int, funnel: bool, style: PolicyStyle
) -> dict[str, Any]:
    policy: dict[str, Any] = {"tagOwners": {box_tag: ["autogroup:admin"]}}
    if style == "grants":
        policy["grants"] = [{"src": list(allow), "dst": [box_tag], "ip": [f"tcp:{port}"]}]
    else:
        rule = {
            "action": "accept",
            "src": list(allow),
            "proto": "tcp",
            "dst": [f"{box_tag}:{port}"],
        }
        policy["acls"] = [rule]
    if funnel:
        policy["nodeAttrs"] = [{"target": [box_tag], "attr": ["funnel"]}]
    return policy


def verify(plan: TunnelPlan, exposure: Exposure) -> list[str]:
    """Problems: the gateway not exposed or exposed wrongly, Funnel on, anything else exposed."""
    problems: list[str] = []
    found = False
    for e in exposure.endpoints:
        gateway = _is_gateway(e, plan.gateway_port)
        planned = gateway and e.scheme == "https" and e.port == plan.https_port
        if plan.exposes and planned and e.path == "/" and not e.service:
            found = True
            if e.foreground:
                problems.append(
                    f"{e.url()} is served only by a foreground `tailscale serve` session,"
                    " which ends with it; `fieldbox tunnel apply` serves it with --bg"
                )
            if e.funnel and not plan.funnel:
                why = (
                    "allow_funnel is false" if not plan.allow_funnel else "the plan has no --funnel"
                )
                problems.append(
                    f"Funnel is on for {e.url()}: the gateway is reachable from the public"
                    f" internet ({why})"
                )
            if plan.funnel and not e.funnel:
                problems.append(f"Funnel was planned for {e.url()} but is off")
        elif gateway and not plan.exposes:
            problems.append(f"the gateway is exposed at {e.describe()}; {plan.reason}")
        elif gateway:
            problems.append(
                f"the gateway is served at {e.describe()}, not at HTTPS port {plan.https_port}"
                " path / (run `fieldbox tunnel apply --reset`)"
            )
        else:
            problems.append(
                f"something else is exposed: {e.describe()} (run `fieldbox tunnel apply --reset`)"
            )
    if plan.exposes and not found:
        problems.append(
            f"the gateway is not exposed on HTTPS port {plan.https_port}"
            f" (expected: {'; '.join(plan.shell())})"
        )
    problems.extend(
        f"Funnel is on for {hp} with nothing served there" for hp in exposure.stray_funnel
    )
    return problems


def _is_gateway(e: Endpoint, gateway_port: int) -> bool:
    if e.kind != "proxy":
        return False
    url = urlsplit(e.target if "://" in e.target else f"http://{e.target}")
    try:
        port = url.port
    except ValueError:
        return False
    return url.hostname in _LOOPBACK and port == gateway_port


def apply(
    plan: TunnelPlan,
    run: Runner = subprocess.run,
    *,
    reset: bool = False,
    which: Which = shutil.which,
) -> ApplyResult:
    """Run the plan's commands, then check `tailscale serve status --json` against it."""
    exe = which(plan.tailscale)
    if exe is None:
        return ApplyResult(False, not_installed(plan.tailscale))
    ran: list[list[str]] = []
    node, error = read_node(exe, run)
    if error or node is None:
        return ApplyResult(False, error, node=node)
    for argv in ([plan.reset] if reset else []) + plan.commands:
        ran.append(argv)
        _, error = call(run, [exe, *argv[1:]])
        if error:
            return ApplyResult(False, error, ran=ran, node=node)
    exposure, error = read_exposure(exe, run)
    if error or exposure is None:
        return ApplyResult(False, error, ran=ran, node=node)
    problems = verify(plan, exposure)
    warnings = list(plan.warnings)
    if plan.exposes and plan.box_tag not in node.tags:
        warnings.append(
            f"this box does not carry {plan.box_tag}, so the policy snippet does not apply to it:"
            f" sudo tailscale up --advertise-tags={plan.box_tag}"
        )
    if problems:
        message = "the tunnel does not match the plan:\n" + "\n".join(f"- {p}" for p in problems)
    elif plan.exposes:
        port = "" if plan.https_port == 443 else f":{plan.https_port}"
        where = "the public internet (Funnel)" if plan.funnel else "the tailnet"
        message = f"the gateway is exposed to {where} at https://{node.dns_name}{port}/"
    else:
        message = f"nothing exposed: {plan.reason}"
    return ApplyResult(not problems, message, ran, problems, warnings, node, exposure)


def status(
    tunnel: TunnelPlanConfig, run: Runner = subprocess.run, *, which: Which = shutil.which
) -> TunnelStatus:
    """What the box exposes through `tailscale serve` now, or why that cannot be told."""
    exe = which(tunnel.tailscale)
    if exe is None:
        return TunnelStatus(False, not_installed(tunnel.tailscale))
    node, error = read_node(exe, run)
    if error or node is None:
        return TunnelStatus(False, error, node)
    exposure, error = read_exposure(exe, run)
    if error or exposure is None:
        return TunnelStatus(False, error, node)
    message = f"{node.dns_name} ({', '.join(node.tags) or 'no tags'}) in tailnet {node.tailnet}"
    return TunnelStatus(True, message, node, exposure)
