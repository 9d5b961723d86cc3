"""Prometheus metrics on a registry of our own (never the process-wide default, which other
libraries fill): what the worker counts, and the queue read from the journal when scraped.
Labels are presets and outcomes only: a file name or a hash per label would grow without end."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping

from prometheus_client import CollectorRegistry, Counter, Histogram, Info, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from daemon import __version__

OUTCOMES = ("done", "failed", "quarantined")
DURATION_BUCKETS = (1, 2, 5, 10, 20, 30, 60, 120, 300, 600, 1200, 1800, 3600)


class _Queue(Collector):
    """stylebox_queue_jobs{state}, counted when scraped, so it is never stale."""

    def __init__(self, counts: Callable[[], Mapping[str, int]]) -> None:
        self._counts = counts

    def collect(self) -> Iterator[Metric]:
        family = GaugeMetricFamily(
            "stylebox_queue_jobs", "Jobs in the journal, by state", labels=["state"]
        )
        for state, count in self._counts().items():
            family.add_metric([str(state)], count)
        yield family


class Metrics:
    """The daemon's metrics; the worker reports to it, /metrics renders it."""

    def __init__(
        self, *, device: str, presets: Iterable[str], counts: Callable[[], Mapping[str, int]]
    ) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self._jobs = Counter(
            "stylebox_jobs",
            "Jobs that reached a final state, by preset and outcome",
            ["preset", "outcome"],
            registry=self.registry,
        )
        self._duration = Histogram(
            "stylebox_job_duration_seconds",
            "Seconds from a job's start to its result, by preset",
            ["preset"],
            buckets=DURATION_BUCKETS,
            registry=self.registry,
        )
        self._evaluations = Counter(
            "stylebox_evaluations", "Objective evaluations computed", registry=self.registry
        )
        Info("stylebox_build", "The running stylebox", registry=self.registry).info(
            {"version": __version__, "device": device}
        )
        self.registry.register(_Queue(counts))
        for preset in presets:  # every series from the start, so rate() sees the first job
            self._duration.labels(preset)
            for outcome in OUTCOMES:
                self._jobs.labels(preset, outcome)

    def finished(self, preset: str, outcome: str, seconds: float | None = None) -> None:
        """A job reached a final state; `seconds` from its start, for a done one."""
        self._jobs.labels(preset, outcome).inc()
        if seconds is not None:
            self._duration.labels(preset).observe(seconds)

    def evaluated(self) -> None:
        """One evaluation of one photo's objective."""
        self._evaluations.inc()

    def render(self) -> bytes:
        """The text exposition format."""
        return generate_latest(self.registry)
