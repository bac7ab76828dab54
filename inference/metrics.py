"""The gateway's Prometheus collectors: per backend and per requested name (alias or model)."""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)


class GatewayMetrics:
    """Counters, histograms and gauges of one gateway process (its own registry)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        labels = ["backend", "alias"]
        self.requests = Counter(
            "fieldbox_gateway_requests_total",
            "Model calls answered, by backend, requested name and endpoint",
            [*labels, "endpoint"],
            registry=r,
        )
        self.errors = Counter(
            "fieldbox_gateway_errors_total",
            "Model calls that failed, by backend, requested name and reason",
            [*labels, "reason"],
            registry=r,
        )
        self.latency = Histogram(
            "fieldbox_gateway_request_seconds",
            "Time from a request arriving to its last byte",
            labels,
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.ttft = Histogram(
            "fieldbox_gateway_time_to_first_token_seconds",
            "Time from a streamed request arriving to its first token",
            labels,
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.tokens = Counter(
            "fieldbox_gateway_tokens_total",
            "Tokens in (prompt) and out (completion)",
            [*labels, "direction"],
            registry=r,
        )
        self.queue_depth = Gauge(
            "fieldbox_gateway_queue_depth",
            "Calls waiting for their turn at a backend",
            ["backend"],
            registry=r,
        )
        self.in_flight = Gauge(
            "fieldbox_gateway_in_flight",
            "Calls being served by a backend",
            ["backend"],
            registry=r,
        )
        self.backend_up = Gauge(
            "fieldbox_gateway_backend_up",
            "1 when the backend's last probe passed",
            ["backend"],
            registry=r,
        )
        self.rejected = Counter(
            "fieldbox_gateway_rejected_total",
            "Calls refused before reaching a backend, by reason",
            ["reason"],
            registry=r,
        )
        # `.labels()` takes a lock each call: children are looked up once and kept.
        self._children: dict[tuple[str, ...], Any] = {}

    def child(self, metric: Any, *labels: str) -> Any:
        """The labelled child of `metric`, cached."""
        key = (metric._name, *labels)
        found = self._children.get(key)
        if found is None:
            found = self._children[key] = metric.labels(*labels)
        return found
