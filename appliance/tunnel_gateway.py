"""The gateway facts a tunnel plan needs, read from `[gateway]` for `bridge.tunnel`.

The bridge may import only `store`, so it never sees the gateway's config type: the
appliance, which composes every section, hands it these few values instead.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from bridge.tunnel import TunnelGateway
    from inference.config import GatewayConfig


def tunnel_gateway(gateway: GatewayConfig) -> TunnelGateway:
    """The `[gateway]` values `bridge.tunnel.plan` uses: port, host and the tunnel rules."""
    # Imported here, as its callers import `bridge.tunnel`: only when a tunnel is asked about.
    from bridge.tunnel import TunnelGateway

    return TunnelGateway(
        host=gateway.host,
        port=gateway.port,
        allow=tuple(gateway.tunnel.allow),
        trusted_proxies=tuple(gateway.tunnel.trusted_proxies),
        allow_funnel=gateway.tunnel.allow_funnel,
    )
