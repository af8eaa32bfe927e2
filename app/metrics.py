"""Prometheus metrics of one gateway process, on a registry of its own (one per app, so two apps
in one process, as in the tests, do not mix their numbers)."""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

# Label sets whose metric children are kept at hand, at most (then the cache starts over).
MAX_CACHED_CHILDREN = 10_000

# Seconds; upstream generations run long, so the buckets reach minutes.
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self._children: dict[tuple[int, tuple[str, ...]], Any] = {}
        labels = ("route", "method", "model", "status")
        self.requests = Counter(
            "gateway_requests", "HTTP requests answered", labels, registry=self.registry
        )
        self.request_seconds = Histogram(
            "gateway_request_duration_seconds",
            "HTTP request duration (a stream: until its last byte)",
            labels,
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.upstream_seconds = Histogram(
            "gateway_upstream_duration_seconds",
            "Duration of one generation at the upstream",
            ("model", "backend", "status"),
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.ttft_seconds = Histogram(
            "gateway_upstream_ttft_seconds",
            "Time to the first output delta of a streamed generation",
            ("model", "backend"),
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.tokens = Counter(
            "gateway_tokens",
            "Tokens used, by kind (input, output, reasoning, cached)",
            ("model", "kind"),
            registry=self.registry,
        )
        self.active_streams = Gauge(
            "gateway_active_streams", "Event streams open on this process", registry=self.registry
        )
        self.queue_depth = Gauge(
            "gateway_background_queue_depth",
            "Background jobs waiting in the shared queue",
            registry=self.registry,
        )
        self.running_jobs = Gauge(
            "gateway_background_running_jobs",
            "Background jobs running on any replica",
            registry=self.registry,
        )
        self.oldest_job_age = Gauge(
            "gateway_background_oldest_queued_job_age_seconds",
            "Age of the oldest queued background job",
            registry=self.registry,
        )
        self.job_wait_seconds = Histogram(
            "gateway_background_job_wait_seconds",
            "Time from queueing to a worker of this process claiming the job",
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )

    def child(self, metric: Any, *labels: str) -> Any:
        """`metric.labels(*labels)`, looked up once per label set: prometheus_client validates,
        converts and locks on every `labels()` call, five times per request."""
        key = (id(metric), labels)
        found = self._children.get(key)
        if found is None:
            if len(self._children) >= MAX_CACHED_CHILDREN:
                self._children.clear()
            found = self._children[key] = metric.labels(*labels)
        return found

    def render(self) -> bytes:
        return generate_latest(self.registry)
