"""Push the metrics of a prometheus_client registry over OTLP (gRPC or HTTP/protobuf), periodically.

Each export turns one ``registry.collect()`` into one OpenTelemetry SDK ``MetricsData`` batch sent by
the SDK's OTLP exporter. Points are built here: the OTel API has no observable histogram and an SDK
``MetricReader`` reads only SDK instruments, so neither keeps Prometheus' buckets and start times.

Mapping (OpenTelemetry spec "Prometheus and OpenMetrics Compatibility", Prometheus -> OTLP):
- gauge, unknown -> Gauge named like the family.
- counter -> cumulative monotonic Sum named without ``_total`` (the OpenMetrics family name;
  Prometheus' OTLP ingestion appends ``_total`` again, so the series name survives the round trip).
- histogram -> cumulative explicit-bucket Histogram: bounds = the finite ``le`` values; per-bucket
  counts = Prometheus' cumulative ones differenced (the last = ``_count`` minus the highest finite
  bucket); count = ``_count``; sum = ``_sum`` (unset without it); min and max unset.
- info -> cumulative non-monotonic Sum of 1, info labels as attributes, named with its ``_info``
  suffix; stateset -> cumulative non-monotonic Sum, one 0/1 point per state, the state in an
  attribute named like the family (the spec asks a Sum, not a Gauge: the 1s are counts).
- summary (no Summary point in the SDK) and gaugehistogram (dropped by the spec) are skipped,
  logged once per name; exemplars are dropped.
- labels -> attributes unchanged; HELP -> description; unit = the family's UNIT, else from the name's
  last word (``_UNITS``): seconds "s", milliseconds "ms", bytes "By", ratio "1", and so on.
- Time = collect time (or the sample's timestamp). Cumulative start time = the ``_created`` sample;
  without one (data model, "handling unknown start time") a series' first point has start == time,
  later points keep it, and a monotonic value that drops starts a new sequence.
- Resource: service.name=keylife, service.version, service.instance.id (UUID v4 per process); then
  OTEL_RESOURCE_ATTRIBUTES and OTEL_SERVICE_NAME; then the caller's attributes, which win.

TLS with certificate verification (OTEL_EXPORTER_OTLP_*CERTIFICATE apply) unless ``insecure=True``
(plain text: loopback, tests); ``http://`` without it or ``https://`` with it is refused. Failures are
logged and counted in ``keylife_otlp_exports_total{outcome}`` on the same registry, never raised.
"""

from __future__ import annotations

import contextlib
import logging
import math
import re
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Literal

from opentelemetry.sdk.metrics import export as otel
from opentelemetry.sdk.resources import OTELResourceDetector, Resource
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from prometheus_client import CollectorRegistry
from prometheus_client.metrics_core import CounterMetricFamily
from prometheus_client.metrics_core import Metric as Family
from prometheus_client.samples import Sample

import keylife

log = logging.getLogger(__name__)

SCOPE_NAME = "keylife.exporter.otlp"
INSTANCE_ID = str(uuid.uuid4())
SERVICE = {"service.name": "keylife", "service.version": keylife.__version__, "service.instance.id": INSTANCE_ID}
OUTCOMES = ("success", "failure", "collect_error")
_UNITS = {"seconds": "s", "milliseconds": "ms", "bytes": "By", "ratio": "1", "celsius": "Cel", "meters": "m"}
_UNITS |= {"volts": "V", "amperes": "A", "joules": "J", "grams": "g"}
_CUMULATIVE = otel.AggregationTemporality.CUMULATIVE
_SCHEME = re.compile(r"^([a-zA-Z][a-zA-Z0-9+.-]*)://")


@dataclass
class OtlpSettings:
    endpoint: str  # gRPC: host:port or http(s)://host:port; HTTP: a URL ("/v1/metrics" added when it has no path)
    protocol: Literal["grpc", "http/protobuf"] = "grpc"
    interval_seconds: float = 15.0
    headers: dict[str, str] = field(default_factory=dict)
    insecure: bool = False  # plain text instead of verified TLS: loopback and tests only
    timeout_seconds: float = 10.0

    def __post_init__(self) -> None:
        if self.protocol not in ("grpc", "http/protobuf"):
            raise ValueError(f"OTLP protocol must be 'grpc' or 'http/protobuf', not {self.protocol!r}")
        if not (self.interval_seconds > 0 and self.timeout_seconds > 0):
            raise ValueError("OTLP interval_seconds and timeout_seconds must be positive")
        scheme = match.group(1).lower() if (match := _SCHEME.match(self.endpoint)) else None
        if scheme not in (None, "http", "https") or (scheme is None and self.protocol != "grpc"):
            raise ValueError(f"OTLP endpoint {self.endpoint!r}: expected an http:// or https:// URL")
        if scheme is not None and (scheme == "http") != self.insecure:
            raise ValueError(f"OTLP endpoint {self.endpoint!r}: http:// needs insecure=True, https:// excludes it")


class PrometheusBridge:
    """One ``registry.collect()`` -> one OTLP batch (an OTel "MetricProducer"). Not thread-safe."""

    def __init__(self, registry: CollectorRegistry, resource: Resource) -> None:
        self._registry, self._resource = registry, resource
        self._scope = InstrumentationScope(SCOPE_NAME, keylife.__version__)
        self._streams: dict[tuple, tuple[int, float]] = {}  # series -> (start ns, last value), of the last cycle
        self._next = self._streams
        self._skipped: set[str] = set()

    def produce(self) -> otel.MetricsData:
        now, self._next = time.time_ns(), {}
        metrics = [metric for family in self._registry.collect() for metric in self._convert(family, now)]
        self._streams = self._next  # series gone from this collect are forgotten
        scope_metrics = otel.ScopeMetrics(scope=self._scope, metrics=metrics, schema_url="")
        return otel.MetricsData([otel.ResourceMetrics(self._resource, [scope_metrics], schema_url="")])

    def _convert(self, family: Family, now: int) -> Iterator[otel.Metric]:
        kind, name = family.type, family.name
        if kind in ("gauge", "unknown"):
            points = [otel.NumberDataPoint(dict(s.labels), 0, _time(s, now), float(s.value)) for s in family.samples]
            yield self._metric(family, name, otel.Gauge(points))
        elif kind == "counter":
            created = {_key(s.labels): s.value for s in family.samples if s.name == name + "_created"}
            totals = self._numbers(name, [s for s in family.samples if s.name == name + "_total"], created, now, True)
            yield self._metric(family, name, otel.Sum(totals, _CUMULATIVE, True))
        elif kind in ("info", "stateset"):
            otel_name = name + "_info" if kind == "info" else name
            points = self._numbers(otel_name, family.samples, {}, now, False)
            yield self._metric(family, otel_name, otel.Sum(points, _CUMULATIVE, False))
        elif kind == "histogram":
            yield self._metric(family, name, otel.Histogram(self._histogram(family, now), _CUMULATIVE))
        elif name not in self._skipped:
            self._skipped.add(name)
            log.warning("OTLP export skips %s metric %s (no OTLP mapping)", kind, name)

    @staticmethod
    def _metric(family: Family, name: str, data: otel.DataT) -> otel.Metric:
        return otel.Metric(name=name, description=family.documentation, unit=_unit(family), data=data)

    def _start(self, key: tuple, value: float, created: float | None, at: int, monotonic: bool) -> int:
        if created is not None:
            start = _ns(created)
        else:
            previous = self._streams.get(key)
            start = at if previous is None or (monotonic and value < previous[1]) else previous[0]
        self._next[key] = (start, value)
        return start

    def _numbers(self, name: str, samples: list, created: dict, now: int, mono: bool) -> list[otel.NumberDataPoint]:
        points = []
        for s in samples:
            labels, at = _key(s.labels), _time(s, now)
            start = self._start((name, labels), s.value, created.get(labels), at, mono)
            points.append(otel.NumberDataPoint(dict(s.labels), start, at, float(s.value)))
        return points

    def _histogram(self, family: Family, now: int) -> list[otel.HistogramDataPoint]:
        name, series = family.name, {}
        for s in family.samples:
            is_bucket = s.name == name + "_bucket"
            labels = _key({k: v for k, v in s.labels.items() if not (is_bucket and k == "le")})
            entry = series.setdefault(labels, {"buckets": [], "time": _time(s, now)})
            if is_bucket:
                entry["buckets"].append((float(s.labels["le"]), s.value))
            else:
                entry[s.name.removeprefix(name)] = s.value  # _count, _sum, _created
        points = []
        for labels, entry in series.items():
            buckets = sorted(entry["buckets"])
            count = entry.get("_count", buckets[-1][1] if buckets and math.isinf(buckets[-1][0]) else None)
            if count is None:
                continue  # the spec drops a histogram without a count
            bounds = [le for le, _ in buckets if not math.isinf(le)]
            cumulative = [value for le, value in buckets if not math.isinf(le)] + [count]
            counts = [max(0, round(c - p)) for p, c in zip([0.0, *cumulative[:-1]], cumulative, strict=True)]
            at, total = entry["time"], entry.get("_sum")
            start = self._start((name, labels), count, entry.get("_created"), at, True)
            point = otel.HistogramDataPoint(dict(labels), start, at, round(count), total, counts, bounds, None, None)
            points.append(point)
        return points


def _key(labels: dict[str, str]) -> tuple:
    return tuple(sorted(labels.items()))


def _time(sample: Sample, now: int) -> int:
    ts = sample.timestamp
    if hasattr(ts, "sec"):  # prometheus_client.samples.Timestamp
        return ts.sec * 1_000_000_000 + ts.nsec
    return now if ts is None else _ns(float(ts))


def _ns(seconds: float) -> int:
    whole = math.floor(seconds)  # split first: seconds * 1e9 would lose the nanoseconds to rounding
    return whole * 1_000_000_000 + round((seconds - whole) * 1e9)


def _unit(family: Family) -> str:
    return _UNITS.get(family.unit, family.unit) if family.unit else _UNITS.get(family.name.rsplit("_", 1)[-1], "")


class _ExportsCollector:
    """``keylife_otlp_exports_total{outcome}``, zero-filled."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts = dict.fromkeys(OUTCOMES, 0)

    def inc(self, outcome: str) -> None:
        with self._lock:
            self._counts[outcome] += 1

    def collect(self) -> list[Family]:
        help_text = "OTLP metric exports by outcome: success, failure (refused or unreachable), collect_error."
        family = CounterMetricFamily("keylife_otlp_exports", help_text, labels=["outcome"])
        with self._lock:
            for outcome, n in self._counts.items():
                family.add_metric([outcome], n)
        return [family]

    describe = collect  # the registry's check for duplicate names at register()


def _make_exporter(settings: OtlpSettings) -> otel.MetricExporter:
    if settings.protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter

        headers = {k.lower(): v for k, v in settings.headers.items()}  # gRPC metadata keys are lowercase
        return OTLPMetricExporter(
            endpoint=settings.endpoint, insecure=settings.insecure, headers=headers, timeout=settings.timeout_seconds
        )
    from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter as HttpExporter

    endpoint = settings.endpoint.rstrip("/")
    if "/" not in endpoint.split("://", 1)[1]:
        endpoint += "/v1/metrics"
    return HttpExporter(endpoint=endpoint, headers=dict(settings.headers), timeout=settings.timeout_seconds)


class OtlpMetricsPusher:
    """Exports ``registry`` to an OTLP receiver every ``settings.interval_seconds`` once started."""

    def __init__(
        self, registry: CollectorRegistry, settings: OtlpSettings, resource_attributes: dict[str, str]
    ) -> None:
        environment = OTELResourceDetector().detect().attributes  # OTEL_RESOURCE_ATTRIBUTES, OTEL_SERVICE_NAME
        resource = Resource.create({**SERVICE, **environment, **resource_attributes})
        self._settings = settings
        self._bridge = PrometheusBridge(registry, resource)
        self._exporter = _make_exporter(settings)
        self._exports = _ExportsCollector()
        self._registry = registry
        registry.register(self._exports)
        self._lock = threading.Lock()  # one export at a time: periodic, force_flush, shutdown
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._closed = False
        self._last_ok = True

    def start(self) -> None:
        """Start the periodic push (a daemon thread); a no-op when started or shut down already."""
        if self._closed or self._thread is not None:
            return
        self._thread = threading.Thread(target=self._run, name="keylife-otlp-push", daemon=True)
        self._thread.start()

    def force_flush(self) -> bool:
        """Export now; True when the receiver accepted the batch (False after shutdown)."""
        return False if self._closed else self._export()

    def shutdown(self) -> None:
        """Stop the push, send a last batch if started and the previous export went through, close."""
        if self._closed:
            return
        self._closed = True
        self._stop.set()
        if self._thread is not None:
            self._thread.join(self._settings.timeout_seconds + 1)
            if self._last_ok:
                self._export()
        try:
            self._exporter.shutdown()
        except Exception:
            log.exception("OTLP exporter shutdown failed")
        with contextlib.suppress(KeyError):
            self._registry.unregister(self._exports)

    def _run(self) -> None:
        while not self._stop.wait(self._settings.interval_seconds):
            self._export()

    def _export(self) -> bool:
        with self._lock:
            try:
                data = self._bridge.produce()
            except Exception:
                log.exception("OTLP export skipped: collecting the metrics registry failed")
                self._exports.inc("collect_error")
                return False
            try:
                result = self._exporter.export(data, timeout_millis=self._settings.timeout_seconds * 1000)
            except Exception:
                log.exception("OTLP metrics export to %s raised", self._settings.endpoint)
                result = otel.MetricExportResult.FAILURE
            self._last_ok = result is otel.MetricExportResult.SUCCESS
            self._exports.inc("success" if self._last_ok else "failure")
            if not self._last_ok:
                log.warning("OTLP metrics export to %s failed; counted, next try next cycle", self._settings.endpoint)
            return self._last_ok
