"""The `tailscale` CLI: running it (bounded, failures as messages) and reading its JSON,
`tailscale serve status --json` (the node's ServeConfig) into an `Exposure` and
`tailscale status --json` into a `Node`.

Written against the documented shapes of `ipn.ServeConfig` and `ipnstate.Status`; unknown
fields are ignored, and a wrong shape is a `TunnelError` rather than a silent "nothing".
"""

from __future__ import annotations

import json
import shlex
import subprocess
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

Runner = Callable[..., "subprocess.CompletedProcess[str]"]
"""`subprocess.run`, or a fake with its signature."""

# `tailscale serve` waits for an admin when the tailnet has HTTPS certificates off; a bound
# keeps `apply` from hanging on that prompt.
_TIMEOUT_S = 60.0


class TunnelError(Exception):
    """A plan that cannot be made, or tailscale output that cannot be read."""


@dataclass(frozen=True)
class Endpoint:
    """One thing `tailscale serve` exposes: a web handler or a TCP forward."""

    scheme: str
    host: str
    port: int
    path: str
    kind: str
    target: str
    funnel: bool = False
    foreground: bool = False
    service: str = ""

    def url(self) -> str:
        """Where tailnet clients reach it (TCP forwards answer on every node address)."""
        return f"{self.scheme}://{self.host or '<node>'}:{self.port}{self.path}"

    def describe(self) -> str:
        """One line: URL, what it serves, and the flags that matter."""
        flags = [f for f, on in (("Funnel on", self.funnel), ("foreground", self.foreground)) if on]
        if self.service:
            flags.append(f"service {self.service}")
        extra = f" ({', '.join(flags)})" if flags else ""
        return f"{self.url()} -> {self.kind} {self.target}{extra}"


@dataclass(frozen=True)
class Exposure:
    """Everything the box's serve config exposes."""

    endpoints: list[Endpoint] = field(default_factory=list)
    stray_funnel: list[str] = field(default_factory=list)

    @property
    def empty(self) -> bool:
        """True when nothing is served and no Funnel is on."""
        return not self.endpoints and not self.stray_funnel


@dataclass(frozen=True)
class Node:
    """This box as tailscaled reports it (`tailscale status --json`)."""

    state: str
    dns_name: str = ""
    tags: list[str] = field(default_factory=list)
    ips: list[str] = field(default_factory=list)
    tailnet: str = ""
    auth_url: str = ""


def parse_serve_status(data: Any) -> Exposure:
    """What `tailscale serve status --json` says is exposed (`null` and `{}` mean nothing)."""
    if data is None:
        return Exposure()
    if not isinstance(data, dict):
        raise TunnelError("`tailscale serve status --json` did not print a JSON object")
    endpoints: list[Endpoint] = []
    stray: list[str] = []
    _collect(data, endpoints, stray, foreground=False, service="")
    for sub in _obj(data, "Foreground").values():
        _collect(_as_obj(sub, "Foreground"), endpoints, stray, foreground=True, service="")
    for name, svc in _obj(data, "Services").items():
        _collect(_as_obj(svc, "Services"), endpoints, stray, foreground=False, service=name)
    return Exposure(endpoints, stray)


def _collect(
    cfg: dict[str, Any], out: list[Endpoint], stray: list[str], *, foreground: bool, service: str
) -> None:
    tcp = {_port(p): _as_obj(h, "TCP") for p, h in _obj(cfg, "TCP").items()}
    funnel = {hp for hp, on in _obj(cfg, "AllowFunnel").items() if on is True}
    for hostport, server in _obj(cfg, "Web").items():
        host, _, port_text = hostport.rpartition(":")
        port = _port(port_text)
        scheme = "http" if tcp.get(port, {}).get("HTTP") else "https"
        for mount, handler in sorted(_obj(_as_obj(server, "Web"), "Handlers").items()):
            kind, target = _handler(_as_obj(handler, "Handlers"))
            on = hostport in funnel
            out.append(Endpoint(scheme, host, port, mount, kind, target, on, foreground, service))
    for port, handler in sorted(tcp.items()):
        forward = handler.get("TCPForward")
        if isinstance(forward, str) and forward:
            sni = handler.get("TerminateTLS") or ""
            scheme = "tls-terminated-tcp" if sni else "tcp"
            on = any(hp.endswith(f":{port}") for hp in funnel)
            out.append(Endpoint(scheme, sni, port, "", "tcp", forward, on, foreground, service))
    stray.extend(hp for hp in sorted(funnel) if _port(hp.rpartition(":")[2]) not in tcp)


def _handler(handler: dict[str, Any]) -> tuple[str, str]:
    for key in ("Proxy", "Path", "Text"):
        value = handler.get(key)
        if isinstance(value, str) and value:
            return key.lower(), value
    return "unknown", json.dumps(handler)


def _obj(cfg: dict[str, Any], key: str) -> dict[str, Any]:
    return _as_obj(cfg.get(key), key)


def _as_obj(value: Any, where: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise TunnelError(f"unexpected serve config: {where} is not a JSON object")
    return value


def _port(text: Any) -> int:
    try:
        port = int(text)
    except (TypeError, ValueError):
        raise TunnelError(f"unexpected serve config: {text!r} is not a port") from None
    if not 0 < port < 65536:
        raise TunnelError(f"unexpected serve config: port {port} is out of range")
    return port


def parse_node(data: Any) -> Node:
    """This box's state, DNS name and tags from `tailscale status --json`."""
    if not isinstance(data, dict) or not isinstance(data.get("BackendState"), str):
        raise TunnelError("`tailscale status --json` did not print a status object")
    # Before login `Self` is mostly empty and `CurrentTailnet` is null: read what is there.
    me: dict[str, Any] = data["Self"] if isinstance(data.get("Self"), dict) else {}
    tailnet: dict[str, Any] = (
        data["CurrentTailnet"] if isinstance(data.get("CurrentTailnet"), dict) else {}
    )
    return Node(
        state=data["BackendState"],
        dns_name=str(me.get("DNSName") or "").rstrip("."),
        tags=[t for t in me.get("Tags") or [] if isinstance(t, str)],
        ips=[ip for ip in data.get("TailscaleIPs") or [] if isinstance(ip, str)],
        tailnet=str(tailnet.get("Name") or ""),
        auth_url=str(data.get("AuthURL") or ""),
    )


def not_installed(cli: str) -> str:
    """The message for a missing `tailscale` CLI."""
    return (
        f"the tailscale CLI ({cli!r}) is not installed or not on PATH: install Tailscale"
        " (https://tailscale.com/download) or set [bridge.tunnel] tailscale to its path."
        " Nothing was changed."
    )


def read_node(exe: str, run: Runner) -> tuple[Node | None, str]:
    """`tailscale status --json` as a Node, and an error unless it is `Running`."""
    data, error = call_json(run, [exe, "status", "--json"])
    if error:
        return None, error
    try:
        node = parse_node(data)
    except TunnelError as exc:
        return None, str(exc)
    if node.state == "Running":
        return node, ""
    hints = {
        "NeedsLogin": "tailscale is not logged in: run `sudo tailscale up`"
        + (f" and log in at {node.auth_url}" if node.auth_url else ""),
        "NeedsMachineAuth": "this machine waits for an admin to approve it in the admin console",
        "Stopped": "tailscale is stopped: run `sudo tailscale up`",
        "Starting": "tailscale is still starting: try again in a moment",
    }
    hint = hints.get(node.state, "tailscale is not running: run `sudo tailscale up`")
    return node, f"{hint} (BackendState {node.state}). Nothing was changed."


def read_exposure(exe: str, run: Runner) -> tuple[Exposure | None, str]:
    """`tailscale serve status --json` as an Exposure, or an error message."""
    data, error = call_json(run, [exe, "serve", "status", "--json"])
    if error:
        return None, error
    try:
        return parse_serve_status(data), ""
    except TunnelError as exc:
        return None, str(exc)


def call_json(run: Runner, argv: list[str]) -> tuple[Any, str]:
    """Run a command that prints JSON: (decoded value, "") or (None, error message)."""
    out, error = call(run, argv)
    if error:
        return None, error
    try:
        return json.loads(out), ""
    except json.JSONDecodeError:
        return None, f"`{shlex.join(argv)}` did not print JSON: {out.strip()[:200]!r}"


def call(run: Runner, argv: list[str]) -> tuple[str, str]:
    """Run one command, bounded: (stdout, "") or ("", a message carrying its stderr)."""
    shown = shlex.join(argv)
    try:
        proc = run(argv, capture_output=True, text=True, timeout=_TIMEOUT_S, check=False)
    except subprocess.TimeoutExpired:
        return "", (
            f"`{shown}` did not finish in {_TIMEOUT_S:.0f}s; if HTTPS certificates are off for"
            " the tailnet it waits for an admin to turn them on: run it once by hand"
        )
    except OSError as exc:
        return "", f"`{shown}` could not run: {exc}"
    if proc.returncode != 0:
        said = (proc.stderr or "").strip() or (proc.stdout or "").strip() or "no output"
        hint = ""
        if "access denied" in said.lower():
            hint = " (run as root, or allow this user once: sudo tailscale set --operator=$USER)"
        return "", f"`{shown}` failed (exit {proc.returncode}): {said}{hint}"
    return proc.stdout or "", ""
