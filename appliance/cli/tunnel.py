"""`fieldbox tunnel ...`: expose the model gateway on the tailnet with `tailscale serve`."""

from __future__ import annotations

import dataclasses
import json
import sys
from typing import TYPE_CHECKING, Any

import click

from appliance.cli.context import Context, pass_ctx
from appliance.config import FieldboxConfig

if TYPE_CHECKING:
    from bridge.tunnel import Exposure, TunnelPlan


@click.group()
def tunnel() -> None:
    """The Tailscale tunnel to the model gateway: plan, apply, status."""


_tag = click.option(
    "--tag",
    "box_tag",
    default="tag:fieldbox",
    show_default=True,
    help="The tailnet tag this box carries; the policy grants access to it.",
)
_funnel = click.option(
    "--funnel",
    is_flag=True,
    help="Serve through Funnel (public internet); needs [gateway.tunnel] allow_funnel.",
)


def _plan(cfg: FieldboxConfig, box_tag: str, funnel: bool, acls: bool = False) -> TunnelPlan:
    from appliance.tunnel_gateway import tunnel_gateway
    from bridge.tunnel import TunnelError, plan

    try:
        return plan(
            tunnel_gateway(cfg.gateway),
            cfg.bridge.tunnel,
            box_tag,
            funnel=funnel,
            style="acls" if acls else "grants",
        )
    except TunnelError as exc:
        raise click.ClickException(str(exc)) from exc


def _echo_lines(title: str, lines: list[str], err: bool = False, bullet: str = "  - ") -> None:
    if lines:
        click.echo(title, err=err)
        for line in lines:
            click.echo(f"{bullet}{line}", err=err)


def _echo_exposure(exposure: Exposure) -> None:
    if exposure.empty:
        click.echo("nothing is exposed through `tailscale serve`")
    for endpoint in exposure.endpoints:
        click.echo(f"exposed: {endpoint.describe()}")
    for hostport in exposure.stray_funnel:
        click.echo(f"Funnel on with nothing served: {hostport}")


@tunnel.command("plan")
@_tag
@_funnel
@click.option("--acls", is_flag=True, help="Write the policy as `acls` rules, not `grants`.")
@click.option("--json", "as_json", is_flag=True, help="Print the whole plan as JSON.")
@pass_ctx
def tunnel_plan(ctx: Context, box_tag: str, funnel: bool, acls: bool, as_json: bool) -> None:
    """The `tailscale serve` commands and the tailnet policy snippet, from [gateway.tunnel]."""
    p = _plan(ctx.cfg, box_tag, funnel, acls)
    if as_json:
        click.echo(json.dumps(dataclasses.asdict(p), indent=2))
        return
    if not p.exposes:
        click.echo(f"# Nothing to expose: {p.reason}")
        click.echo(
            f"# To take down an earlier tunnel: fieldbox tunnel apply --reset ({' '.join(p.reset)})"
        )
    else:
        click.echo("# Commands `fieldbox tunnel apply` runs on this box:")
        for line in p.shell():
            click.echo(line)
        click.echo("")
        click.echo("# Tailnet policy: merge into the policy file (admin console, Access controls):")
        click.echo(p.policy_text())
        _echo_lines("# Before it works:", p.notes, bullet="#   - ")
    _echo_lines("# Warnings:", p.warnings, err=True, bullet="#   - ")


@tunnel.command("apply")
@_tag
@_funnel
@click.option("--reset", is_flag=True, help="Clear the box's whole serve config first.")
@pass_ctx
def tunnel_apply(ctx: Context, box_tag: str, funnel: bool, reset: bool) -> None:
    """Run the plan through the tailscale CLI and verify it; exit 1 with the problems if not."""
    from bridge.tunnel import apply

    result = apply(_plan(ctx.cfg, box_tag, funnel), reset=reset)
    for argv in result.ran:
        click.echo(f"ran: {' '.join(argv)}")
    _echo_lines("warnings:", result.warnings, err=True)
    if not result.ok:
        click.echo(result.message, err=True)
        sys.exit(1)
    click.echo(result.message)


@tunnel.command("status")
@_tag
@_funnel
@click.option("--json", "as_json", is_flag=True, help="Print node, exposure and problems as JSON.")
@pass_ctx
def tunnel_status(ctx: Context, box_tag: str, funnel: bool, as_json: bool) -> None:
    """What the box exposes now, checked against the plan; exit 1 if it differs or is unknown."""
    from appliance.tunnel_gateway import tunnel_gateway
    from bridge.tunnel import TunnelError, plan, status, verify

    current = status(ctx.cfg.bridge.tunnel)
    problems: list[str] = []
    if current.exposure is not None:
        try:
            wanted = plan(
                tunnel_gateway(ctx.cfg.gateway), ctx.cfg.bridge.tunnel, box_tag, funnel=funnel
            )
        except TunnelError as exc:
            problems = [f"no plan to compare with: {exc}"]
        else:
            problems = verify(wanted, current.exposure)
    if as_json:
        out: dict[str, Any] = dataclasses.asdict(current)
        out["problems"] = problems
        click.echo(json.dumps(out, indent=2))
    elif not current.ok:
        click.echo(current.message, err=True)
    else:
        click.echo(f"tailnet node: {current.message}")
        if current.exposure is not None:
            _echo_exposure(current.exposure)
        if problems:
            _echo_lines("differs from the plan:", problems)
        else:
            click.echo("matches the plan")
    if not current.ok or problems:
        sys.exit(1)
