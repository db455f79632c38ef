"""Prometheus metrics for ``/metrics`` (admin keys only)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "homellm_requests", "Requests by route and status", ["route", "status"], registry=self.registry
        )
        self.tokens = Counter("homellm_tokens", "Tokens by model and direction", ["model", "direction"],
                              registry=self.registry)  # fmt: skip
        self.duration = Histogram(
            "homellm_request_duration_seconds", "Request duration", ["route"], registry=self.registry,
            buckets=(0.005, 0.025, 0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300),
        )  # fmt: skip
        self.ttft = Histogram("homellm_time_to_first_token_seconds", "Time to first token", ["model"],
                              registry=self.registry, buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30))  # fmt: skip
        self.active = Gauge("homellm_active_requests", "Requests in flight", registry=self.registry)
        self.cancelled = Counter("homellm_cancelled", "Streams the client left early", registry=self.registry)

    def render(self) -> bytes:
        return generate_latest(self.registry)
