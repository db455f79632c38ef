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
        # the pool (serve/router.py)
        self.backend_up = Gauge("homellm_backend_up", "Pool backend up (1) or down or out (0)", ["backend"],
                                registry=self.registry)  # fmt: skip
        self.backend_failures = Counter("homellm_backend_failures", "Requests a pool backend failed", ["backend"],
                                        registry=self.registry)  # fmt: skip
        self.backend_requests = Counter("homellm_backend_requests", "Requests each pool backend answered",
                                        ["backend"], registry=self.registry)  # fmt: skip
        self.queue_waiting = Gauge("homellm_queue_waiting", "Requests waiting for a free backend",
                                   registry=self.registry)  # fmt: skip
        self.queue_wait = Histogram(
            "homellm_queue_wait_seconds", "Time requests waited for a free backend", registry=self.registry,
            buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120),
        )  # fmt: skip
        self.queue_position = Histogram(
            "homellm_queue_position", "Requests served before a request while it waited", registry=self.registry,
            buckets=(0, 1, 2, 4, 8, 16, 32, 64, 128, 256),
        )  # fmt: skip
        self.queue_rejected = Counter("homellm_queue_rejected", "Requests refused: queue full or waited too long",
                                      registry=self.registry)  # fmt: skip

    def render(self) -> bytes:
        return generate_latest(self.registry)
