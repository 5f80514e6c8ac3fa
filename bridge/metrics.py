"""Process metrics in the Prometheus text format, with no dependency.

A handful of counters and gauges is all a bridge needs to be watched: calls in
flight, how calls end, barge-ins, truncations, tools, and what the audio path
dropped.  Labels are fixed, small sets (end reasons, tool outcome), so the
series count stays bounded whatever callers do.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping


class Metrics:
    """Counters and gauges rendered for ``GET /metrics``."""

    def __init__(self) -> None:
        self.calls_active = 0
        self.calls_started = 0
        self.calls_rejected: Counter[str] = Counter()
        self.calls_ended: Counter[str] = Counter()
        self.session: Counter[str] = Counter()  # summed CallSession.stats
        self.tools: Counter[str] = Counter()  # ok / error
        self.model_connect_ms_sum = 0.0
        self.model_connect_count = 0

    def call_finished(self, reason: str, stats: dict[str, int]) -> None:
        self.calls_ended[reason] += 1
        self.session.update(stats)

    def render(
        self,
        extra_gauges: dict[str, float] | None = None,
        labelled_counters: Mapping[str, tuple[str, Mapping[str, int]]] | None = None,
    ) -> str:
        """The text exposition.  ``labelled_counters`` maps a metric name to
        ``(label, {value: count})`` for counters kept by other components (the model
        connector's pre-opened sockets, the pending-stream guard)."""
        lines = [
            "# TYPE bridge_calls_active gauge",
            f"bridge_calls_active {self.calls_active}",
            "# TYPE bridge_calls_started_total counter",
            f"bridge_calls_started_total {self.calls_started}",
            "# TYPE bridge_calls_rejected_total counter",
        ]
        lines += [
            f'bridge_calls_rejected_total{{reason="{r}"}} {n}'
            for r, n in sorted(self.calls_rejected.items())
        ]
        lines.append("# TYPE bridge_calls_ended_total counter")
        lines += [
            f'bridge_calls_ended_total{{reason="{r}"}} {n}'
            for r, n in sorted(self.calls_ended.items())
        ]
        for key, value in sorted(self.session.items()):
            lines.append(f"# TYPE bridge_{key}_total counter")
            lines.append(f"bridge_{key}_total {value}")
        lines.append("# TYPE bridge_tool_calls_total counter")
        lines += [
            f'bridge_tool_calls_total{{outcome="{o}"}} {n}' for o, n in sorted(self.tools.items())
        ]
        lines += [
            "# TYPE bridge_model_connect_ms summary",
            f"bridge_model_connect_ms_sum {self.model_connect_ms_sum}",
            f"bridge_model_connect_ms_count {self.model_connect_count}",
        ]
        for name, (label, counts) in sorted((labelled_counters or {}).items()):
            lines.append(f"# TYPE bridge_{name}_total counter")
            lines += [
                f'bridge_{name}_total{{{label}="{value}"}} {n}'
                for value, n in sorted(counts.items())
            ]
        for name, gauge in sorted((extra_gauges or {}).items()):
            lines += [f"# TYPE bridge_{name} gauge", f"bridge_{name} {gauge}"]
        return "\n".join(lines) + "\n"
