"""Counts for /metrics. The hot path bumps plain integers; prometheus_client formats them
only when scraped. Counts only: no id, address or byte of content.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector


class RelayMetrics:
    def __init__(self) -> None:
        self.connections_total = 0
        self.frames_in = 0
        self.frames_out = 0
        self.bytes_in = 0
        self.bytes_out = 0
        self.messages_delivered = 0
        self.rejections: Counter[str] = Counter()
        self.disconnects: Counter[str] = Counter()


class _Collector(Collector):
    def __init__(self, metrics: RelayMetrics, gauges: Callable[[], dict[str, float]]) -> None:
        self.metrics = metrics
        self.gauges = gauges

    def collect(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily]:
        m = self.metrics
        counts: tuple[tuple[str, int, str], ...] = (
            ("connections", m.connections_total, "Connections accepted"),
            ("frames_received", m.frames_in, "Frames received from clients"),
            ("frames_sent", m.frames_out, "Frames sent to clients"),
            ("bytes_received", m.bytes_in, "Bytes received from clients"),
            ("bytes_sent", m.bytes_out, "Bytes sent to clients"),
            ("messages_delivered", m.messages_delivered, "Message frames delivered to members"),
        )
        for name, value, text in counts:
            yield CounterMetricFamily(f"instantroom_{name}", text, value=value)
        rejections = CounterMetricFamily(
            "instantroom_rejections", "Frames or connections refused, by reason", labels=["reason"]
        )
        for reason, count in sorted(m.rejections.items()):
            rejections.add_metric([reason], count)
        yield rejections
        disconnects = CounterMetricFamily(
            "instantroom_disconnects",
            "Connections closed by the relay, by reason",
            labels=["reason"],
        )
        for reason, count in sorted(m.disconnects.items()):
            disconnects.add_metric([reason], count)
        yield disconnects
        for gauge, level in self.gauges().items():
            yield GaugeMetricFamily(f"instantroom_{gauge}", gauge.replace("_", " "), value=level)


def render_metrics(metrics: RelayMetrics, gauges: Callable[[], dict[str, float]]) -> bytes:
    registry = CollectorRegistry()
    registry.register(_Collector(metrics, gauges))
    return generate_latest(registry)
