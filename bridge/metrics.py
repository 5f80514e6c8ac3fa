"""The bridge's Prometheus metrics, with ``prometheus-client``'s conventions.

Why the library: operators' dashboards and alerts expect ``_total`` counters, real
histograms (``_bucket``/``_sum``/``_count``) and the standard ``process_*`` series, and
the library gets the exposition format right (escaping, content type, OpenMetrics).

Each :class:`Metrics` owns its :class:`~prometheus_client.CollectorRegistry`, never the
global one: tests and the demo build several apps in one process, and series registered
twice in one registry would collide.  Labels are small fixed sets (end reasons, reject
reasons, tool outcome, model error codes as the API names them), so the series count
stays bounded whatever callers do.

Values that already live elsewhere (active calls, pre-opened sockets, the store's
backlog) are read at scrape time by a collector instead of being copied on the hot path.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.gc_collector import GCCollector
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector

__all__ = ["CONTENT_TYPE_LATEST", "Metrics"]

# Session statistics (CallSession.stats) exported as counters: name -> help.
SESSION_COUNTERS: dict[str, str] = {
    "barge_ins": "Caller spoke over the agent and playback was cut",
    "truncates": "conversation.item.truncate sent to the model after a barge-in",
    "clears": "Twilio clear messages sent",
    "deltas_forwarded": "Model audio deltas forwarded to Twilio",
    "deltas_dropped": "Late model audio deltas dropped after an interruption",
    "bad_frames": "Malformed caller-leg frames survived",
    "stale_marks": "Mark echoes from a cleared playback generation (ignored)",
    "preconnect_dropped": "Caller audio frames dropped while the model was connecting",
    "media_in": "Twilio media frames received",
    "caller_events": "Caller-leg frames received (all kinds)",
    "model_problems": "Malformed model events survived",
    "audio_in_bytes": "Caller audio bytes received",
}

#: Seconds from the caller's end of speech to the agent's first audio (phone-call scale).
TURN_BUCKETS = (0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 8.0, float("inf"))
#: Seconds to open the model's WebSocket (near zero when pre-connected).
CONNECT_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, float("inf"))
#: Seconds without a model during a reconnect.
GAP_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, float("inf"))
#: Seconds for the stream token check (a shared-database round trip in a fleet).
TOKEN_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 2.0, float("inf"))


class _Live(Collector):
    """Gauges and labelled counters read when scraped from callables (no bookkeeping on
    the hot path: the state that already holds the numbers is read as it is)."""

    def __init__(self, gauges: Mapping[str, tuple[str, Callable[[], float]]]) -> None:
        self.gauges = dict(gauges)
        self.counters: dict[str, tuple[str, str, Callable[[], Mapping[str, int]]]] = {}

    def collect(self) -> Iterator[Metric]:
        for name, (doc, read) in self.gauges.items():
            try:
                value = float(read())
            except Exception:  # noqa: BLE001 - one broken reading must not fail a scrape
                continue
            yield GaugeMetricFamily(name, doc, value=value)
        for name, (doc, label, read_counts) in self.counters.items():
            try:
                counts = dict(read_counts())
            except Exception:  # noqa: BLE001
                continue
            family = CounterMetricFamily(name, doc, labels=[label])
            for label_value, count in sorted(counts.items()):
                family.add_metric([label_value], count)
            yield family


class Metrics:
    """Every series the bridge exports, in one registry per app instance."""

    def __init__(self, *, process: bool = True) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        if process:
            ProcessCollector(registry=r)
            PlatformCollector(registry=r)
            GCCollector(registry=r)
        self.calls_started = Counter("bridge_calls_started", "Media Streams started", registry=r)
        self.calls_rejected = Counter(
            "bridge_calls_rejected", "Calls or streams refused, by reason", ["reason"], registry=r
        )
        self.calls_ended = Counter(
            "bridge_calls_ended", "Calls ended, by end reason", ["reason"], registry=r
        )
        self.session = {
            key: Counter(f"bridge_{key}", doc, registry=r) for key, doc in SESSION_COUNTERS.items()
        }
        self.tools = Counter("bridge_tool_calls", "Tool calls, by outcome", ["outcome"], registry=r)
        self.model_errors = Counter(
            "bridge_model_errors", "Model error events, by error code", ["code"], registry=r
        )
        self.model_connects = Counter(
            "bridge_model_connects", "Model connections taken for calls", registry=r
        )
        self.preconnect = Counter(
            "bridge_preconnect",
            "Streams that found a pre-opened model socket on this replica (hit) or not (miss)",
            ["result"],
            registry=r,
        )
        self.model_connect_seconds = Histogram(
            "bridge_model_connect_seconds",
            "Time to get an open model connection for a starting call",
            buckets=CONNECT_BUCKETS,
            registry=r,
        )
        self.turn_latency_seconds = Histogram(
            "bridge_turn_latency_seconds",
            "Caller end of speech to the agent's first audio sent (from transcript timings)",
            buckets=TURN_BUCKETS,
            registry=r,
        )
        self.token_check_seconds = Histogram(
            "bridge_stream_token_check_seconds",
            "Stream token check, replay claim included",
            buckets=TOKEN_BUCKETS,
            registry=r,
        )
        self.reconnects = Counter(
            "bridge_reconnects",
            "Model connections replaced mid-call after a loss, by cause",
            ["cause"],
            registry=r,
        )
        self.reconnect_gap_seconds = Histogram(
            "bridge_reconnect_gap_seconds",
            "From losing the model connection to the new session being ready",
            buckets=GAP_BUCKETS,
            registry=r,
        )
        self.rollovers = Counter(
            "bridge_rollovers", "Sessions replaced before the API's maximum age", registry=r
        )
        self.fallbacks = Counter(
            "bridge_fallbacks",
            "Calls that gave up on the model (apology, then transfer or hang-up), by cause",
            ["cause"],
            registry=r,
        )
        self.protocol_problems = Counter(
            "bridge_protocol_problems",
            "Malformed frames or events survived, by kind",
            ["kind"],
            registry=r,
        )
        self._live = _Live({})
        r.register(self._live)

    def gauge(self, name: str, doc: str, read: Callable[[], float]) -> None:
        """Export ``bridge_<name>`` as a gauge whose value ``read()`` gives at scrape time."""
        self._live.gauges[f"bridge_{name}"] = (doc, read)

    def counts(
        self, name: str, doc: str, label: str, read: Callable[[], Mapping[str, int]]
    ) -> None:
        """Export ``bridge_<name>_total{label=...}`` from a mapping read at scrape time."""
        self._live.counters[f"bridge_{name}"] = (doc, label, read)

    def reject(self, reason: str) -> None:
        self.calls_rejected.labels(reason).inc()

    def call_finished(self, reason: str, stats: Mapping[str, int]) -> None:
        self.calls_ended.labels(reason).inc()
        for key, value in stats.items():
            counter = self.session.get(key)
            if counter is not None and value:
                counter.inc(value)

    def value(self, name: str, labels: Mapping[str, str] | None = None) -> float:
        """A sample's current value (0 when absent): for tests and the CLI."""
        found = self.registry.get_sample_value(name, dict(labels or {}))
        return 0.0 if found is None else found

    def render(self) -> bytes:
        return generate_latest(self.registry)
