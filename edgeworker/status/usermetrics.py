"""Metrics defined by handler code: counters, gauges and histograms (``edgeworker.metrics``).

Each process keeps its values in plain Python objects: ``inc``/``set``/``observe`` are a dict
lookup and an addition, no lock, no shared memory. The worker's metrics flush
(``edgeworker.status.metrics``, every 0.5 s) adds the deltas of counters and histograms into the
status zone with atomic ``incr`` (so their values are summed over every worker and survive
reloads and worker restarts) and writes each worker's gauges as one record of its own (so a
gauge is per worker: exported with a ``worker`` label, and gone with its worker).

Definitions are written to the zone too, so that any worker answering a scrape knows every
metric, wherever it was defined (the master's ``init``, a handler module a worker imported).

Zone layout (every key of user metrics is described here, and read by :class:`Reader`):

- ``ud␟<name>``: the definition (JSON: ``kind``, ``help``, ``labels``, ``buckets``, ``shape``);
- ``u␟<name>␟<shape>␟<label values as a JSON array>␟<field>``: a counter's ``v``, a
  histogram's ``s`` (sum) and ``b<i>`` (bucket ``i``, not cumulative), summed over workers;
- ``ug␟<pid>``: a worker's gauges (JSON: ``id``, ``gauges``: name -> [shape, [[label values,
  value], ...]]), deleted by the master when the worker is reaped.

``shape`` is a checksum of (kind, labels, buckets): a metric redefined by a reload with other
labels or buckets starts afresh, and series of the old shape are ignored.
"""

from __future__ import annotations

import math
import re
import zlib
from bisect import bisect_left
from typing import Any

import msgspec

from .. import runtime

#: Prometheus's rules for metric and label names.
NAME_RE = re.compile(r"^[a-zA-Z_:][a-zA-Z0-9_:]*$")
LABEL_RE = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")
#: Names of edgeworker's own metrics start with this: user metrics may not.
RESERVED_PREFIX = "edgeworker_"
#: Histogram bounds when none are given (Prometheus client libraries' defaults), +Inf implied.
DEFAULT_BUCKETS: tuple[float, ...] = (
    0.005,
    0.01,
    0.025,
    0.05,
    0.075,
    0.1,
    0.25,
    0.5,
    0.75,
    1.0,
    2.5,
    5.0,
    7.5,
    10.0,
)
#: Label sets a metric keeps per process; further new ones are dropped (a warning, once).
MAX_LABEL_SETS = 1000
MAX_BUCKETS = 64
MAX_LABEL_VALUE = 1024
#: A series' zone key may not be longer (the zone takes keys of up to 65535 bytes).
MAX_KEY = 16384
KINDS = ("counter", "gauge", "histogram")
SEP = "\x1f"

_encode = msgspec.json.Encoder().encode
_decode = msgspec.json.decode

#: name -> metric, in this process
_registry: dict[str, Metric] = {}
#: names whose definition this process has not written to the zone yet
_unsent: set[str] = set()
#: this worker's gauges record has been written once
_gauges_written = False
#: metrics whose flush failed (logged once each)
_failed: set[str] = set()


class Metric:
    """What every kind shares: the definition, and the series by label values."""

    kind = ""
    #: the label a reader adds to each series (gauges: ``worker``), reserved for the kind
    _reserved_labels: tuple[str, ...] = ()

    def __init__(
        self,
        name: str,
        help: str,
        labels: tuple[str, ...],
        max_label_sets: int,
        buckets: tuple[float, ...] = (),
    ) -> None:
        self.name = name
        self.help = help
        self.labels = labels
        self.buckets = buckets
        self.max_label_sets = max_label_sets
        self.shape = format(zlib.crc32(_encode([self.kind, labels, buckets])), "08x")
        self._config = runtime.config  # the configuration it was defined under
        self._cells: dict[Any, list] = {}  # the call's labels (as given) -> cell
        self._series: dict[tuple[str, ...], list] = {}  # label values -> cell
        self._last: dict[tuple[str, ...], list] = {}  # label values -> cell as flushed last
        self._prefixes: dict[tuple[str, ...], str] = {}  # label values -> zone key prefix
        self._warned = False
        if not labels:
            self._cells[()] = self._series[()] = self._new_cell()

    # -- definition ------------------------------------------------------------------------
    def definition(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "help": self.help,
            "labels": list(self.labels),
            "buckets": list(self.buckets),
            "shape": self.shape,
        }

    def same_shape(self, other: Metric) -> bool:
        return (self.kind, self.labels, self.buckets) == (other.kind, other.labels, other.buckets)

    def sample_names(self) -> set[str]:
        return sample_names(self.kind, self.name)

    # -- series ----------------------------------------------------------------------------
    def _new_cell(self) -> list:
        return [0]

    def _cell(self, key: Any, labels: dict[str, Any]) -> list | None:
        """The cell of ``labels`` (the slow path: first use of this way of calling), or None
        when the metric has ``max_label_sets`` label sets already."""
        if labels.keys() != set(self.labels):
            given = ", ".join(sorted(labels)) or "none"
            want = ", ".join(self.labels) or "none"
            raise ValueError(f'metric "{self.name}": labels {given} given, expected {want}')
        values = tuple(_label_value(self.name, n, labels[n]) for n in self.labels)
        cell = self._series.get(values)
        if cell is None:
            if len(self._series) >= self.max_label_sets:
                if not self._warned:
                    self._warned = True
                    runtime.log.warning(
                        'metric "%s": more than %d label sets in this process; new label sets '
                        "are dropped (first dropped: %s)",
                        self.name,
                        self.max_label_sets,
                        dict(zip(self.labels, values, strict=True)),
                    )
                return None
            if len(self._prefix(values).encode()) > MAX_KEY:
                raise ValueError(
                    f'metric "{self.name}": label values of more than {MAX_KEY} bytes in all'
                )
            cell = self._series[values] = self._new_cell()
        if key is not None and len(self._cells) < 2 * self.max_label_sets:
            self._cells[key] = cell
        return cell

    def _cell_of(self, value: Any, labels: dict[str, Any]) -> list | None:
        """The cell of ``labels`` once ``value`` is known good (a number, not NaN); None when
        the label set is dropped (see ``_cell``)."""
        if (value.__class__ is not int and value.__class__ is not float) or value != value:
            self._bad_value(value)
        if labels:
            return self._lookup(labels)
        return self._cells.get(()) or self._cell(None, labels)

    def _lookup(self, labels: dict[str, Any]) -> list | None:
        key = tuple(labels.items())
        try:
            cell = self._cells.get(key)
        except TypeError:  # an unhashable label value: str() makes it a label value
            return self._cell(None, labels)
        if cell is None:
            return self._cell(key, labels)
        return cell

    def _bad_value(self, value: Any, why: str = "invalid value") -> None:
        if value.__class__ not in (int, float):
            raise TypeError(
                f'metric "{self.name}": value must be an int or a float, not {type(value).__name__}'
            )
        raise ValueError(f'metric "{self.name}": {why} {value!r}')

    def _prefix(self, values: tuple[str, ...]) -> str:
        p = self._prefixes.get(values)
        if p is None:
            p = self._prefixes[values] = SEP.join(
                ("u", self.name, self.shape, _encode(list(values)).decode(), "")
            )
        return p

    def __repr__(self) -> str:
        labels = f", labels={self.labels}" if self.labels else ""
        return f"<{self.kind} {self.name}{labels}>"


class Counter(Metric):
    """A value that only goes up, summed over every worker (``inc``)."""

    kind = "counter"

    def inc(self, value: float = 1, **labels: Any) -> None:
        """Add ``value`` (≥ 0) to the series of ``labels`` (every label of the definition)."""
        if (value.__class__ is int or value.__class__ is float) and value < 0:
            self._bad_value(value, "a counter only goes up, not by")
        cell = self._cell_of(value, labels)
        if cell is None:
            return
        cell[0] += value


class Gauge(Metric):
    """A value that goes up and down, per worker (``set``, ``inc``, ``dec``).

    Exported with a ``worker`` label (the worker id): aggregate with ``sum``/``max`` in the
    query. A worker's gauges go when the worker goes."""

    kind = "gauge"
    _reserved_labels = ("worker",)

    def set(self, value: float, **labels: Any) -> None:
        """Set the series of ``labels`` to ``value``."""
        cell = self._cell_of(value, labels)
        if cell is None:
            return
        cell[0] = value

    def inc(self, value: float = 1, **labels: Any) -> None:
        """Add ``value`` (may be negative) to the series of ``labels``."""
        cell = self._cell_of(value, labels)
        if cell is None:
            return
        cell[0] += value

    def dec(self, value: float = 1, **labels: Any) -> None:
        """Subtract ``value`` from the series of ``labels``."""
        self.inc(-value, **labels)


class Histogram(Metric):
    """Observations counted in buckets, with their sum, summed over every worker
    (``observe``)."""

    kind = "histogram"
    _reserved_labels = ("le",)

    def _new_cell(self) -> list:
        return [0.0] + [0] * (len(self.buckets) + 1)  # sum, then the bucket counts

    def observe(self, value: float, **labels: Any) -> None:
        """Count ``value`` in the series of ``labels``."""
        cell = self._cell_of(value, labels)
        if cell is None:
            return
        cell[0] += value
        cell[1 + bisect_left(self.buckets, value)] += 1


_CLASSES: dict[str, type[Metric]] = {"counter": Counter, "gauge": Gauge, "histogram": Histogram}


def _label_value(metric: str, label: str, value: Any) -> str:
    text = value if value.__class__ is str else str(value)
    if not text.isascii():
        try:
            text.encode()
        except UnicodeEncodeError:  # lone surrogates (undecodable bytes): escaped
            text = text.encode("utf-8", "backslashreplace").decode()
    if len(text) > MAX_LABEL_VALUE:
        raise ValueError(
            f'metric "{metric}": the value of label "{label}" is longer than '
            f"{MAX_LABEL_VALUE} characters"
        )
    return text


def family(kind: str, name: str) -> str:
    """The exposed name: a counter's without its ``_total`` suffix (added back on samples)."""
    if kind == "counter" and name.endswith("_total"):
        return name[: -len("_total")]
    return name


def sample_names(kind: str, name: str) -> set[str]:
    fam = family(kind, name)
    if kind == "counter":
        return {fam + "_total"}
    if kind == "histogram":
        return {fam + "_bucket", fam + "_sum", fam + "_count"}
    return {fam}


# ------------------------------------------------------------------------------ definitions
def define(
    kind: str,
    name: Any,
    help: Any,
    labels: Any = (),
    *,
    buckets: Any = None,
    max_label_sets: Any = MAX_LABEL_SETS,
) -> Metric:
    """Define (or find again) the metric ``name``. Defining it again with the same kind,
    labels and buckets returns the same object (a module imported again, a handler that
    defines it per call); with another one it is a ``ValueError`` — except under a new
    configuration (a reload), where the new definition replaces the old."""
    if not isinstance(name, str) or not NAME_RE.match(name):
        raise ValueError(
            f"invalid metric name {name!r}: Prometheus names match [a-zA-Z_:][a-zA-Z0-9_:]*"
        )
    if name.startswith(RESERVED_PREFIX):
        raise ValueError(
            f'invalid metric name "{name}": the {RESERVED_PREFIX} prefix is edgeworker\'s own'
        )
    if not isinstance(help, str) or not help.strip():
        raise ValueError(f'metric "{name}": help must be a non-empty string')
    if isinstance(labels, str):
        labels = (labels,)
    try:
        labels = tuple(labels)
    except TypeError:
        raise TypeError(f'metric "{name}": labels must be a sequence of names') from None
    cls = _CLASSES[kind]
    for label in labels:
        if not isinstance(label, str) or not LABEL_RE.match(label) or label.startswith("__"):
            raise ValueError(
                f'metric "{name}": invalid label name {label!r} (Prometheus label '
                "names match [a-zA-Z_][a-zA-Z0-9_]* and do not start with __)"
            )
        if label in cls._reserved_labels:
            raise ValueError(f'metric "{name}": the label "{label}" is reserved for a {kind}')
    if len(set(labels)) != len(labels):
        raise ValueError(f'metric "{name}": a label is named twice in {labels}')
    if (
        isinstance(max_label_sets, bool)
        or not isinstance(max_label_sets, int)
        or (max_label_sets < 1)
    ):
        raise ValueError(f'metric "{name}": max_label_sets must be a positive int')
    bounds: tuple[float, ...] = ()
    if kind == "histogram":
        bounds = _buckets(name, DEFAULT_BUCKETS if buckets is None else buckets)
    elif buckets is not None:
        raise ValueError(f'metric "{name}": only a histogram has buckets')
    metric = cls(name, help, labels, max_label_sets, bounds)
    existing = _registry.get(name)
    if existing is not None:
        if existing.same_shape(metric):
            existing.help = help
            existing.max_label_sets = max(existing.max_label_sets, max_label_sets)
            return existing
        if existing._config is runtime.config:
            raise ValueError(
                f'metric "{name}" is already defined as a {existing.kind} with labels '
                f"{existing.labels}"
                + (f" and buckets {existing.buckets}" if existing.kind == "histogram" else "")
                + "; a name has one definition"
            )
    clash = metric.sample_names()
    for other in _registry.values():
        if other.name != name and other.sample_names() & clash:
            raise ValueError(
                f'metric "{name}" ({kind}) would expose the same names as '
                f'{other.kind} "{other.name}": ' + ", ".join(sorted(other.sample_names() & clash))
            )
    _registry[name] = metric
    _unsent.add(name)
    return metric


def _buckets(name: str, buckets: Any) -> tuple[float, ...]:
    try:
        bounds = [float(b) for b in buckets]
    except (TypeError, ValueError):
        raise ValueError(f'metric "{name}": buckets must be a sequence of numbers') from None
    if bounds and bounds[-1] == math.inf:
        bounds.pop()  # +Inf is always there
    if not bounds:
        raise ValueError(f'metric "{name}": at least one finite bucket bound is needed')
    if len(bounds) > MAX_BUCKETS:
        raise ValueError(f'metric "{name}": at most {MAX_BUCKETS} buckets')
    if any(math.isnan(b) or math.isinf(b) for b in bounds):
        raise ValueError(f'metric "{name}": bucket bounds must be finite numbers')
    if any(a >= b for a, b in zip(bounds, bounds[1:], strict=False)):
        raise ValueError(f'metric "{name}": bucket bounds must be strictly increasing')
    return tuple(bounds)


def registered() -> dict[str, Metric]:
    """This process's metrics by name (a copy)."""
    return dict(_registry)


# ---------------------------------------------------------------------------------- flushes
def start_worker() -> None:
    """A worker, right after the fork: values inherited from the master (counted in ``init``)
    were flushed by the master, so they are not flushed again; every definition is written
    once more, by this worker."""
    global _gauges_written
    for m in _registry.values():
        m._last = {v: list(cell) for v, cell in m._series.items()}
    _unsent.update(_registry)
    _gauges_written = False


def flush(z: Any, gauges_key: str | None = None, worker_id: int | None = None) -> None:
    """Write new definitions, add the deltas of counters and histograms, and (in a worker,
    ``gauges_key`` given) this worker's gauges when one changed."""
    global _gauges_written
    for name in list(_unsent):
        m = _registry.get(name)
        if m is not None:
            z.set("ud" + SEP + name, _encode(m.definition()))
        _unsent.discard(name)
    incr = z.incr
    gauges_changed = False
    for m in list(_registry.values()):
        last = m._last
        if m.kind == "gauge":
            if not gauges_changed:
                for values, cell in m._series.items():
                    prev = last.get(values)
                    if prev is None or prev[0] != cell[0]:
                        gauges_changed = True
                        break
            continue
        for values, cell in list(m._series.items()):
            prev = last.get(values)
            if prev is None:
                prev = last[values] = [0] * len(cell)
            elif prev == cell:
                continue
            try:
                _add_deltas(incr, m, values, cell, prev)
            except Exception:  # one series the zone refuses must not stop the others
                if m.name not in _failed:
                    _failed.add(m.name)
                    runtime.log.exception('metric "%s": flushing %s failed', m.name, values)
    if gauges_key is not None and (gauges_changed or not _gauges_written):
        doc: dict[str, Any] = {}
        for m in _registry.values():
            if m.kind != "gauge":
                continue
            doc[m.name] = [m.shape, [[list(v), cell[0]] for v, cell in m._series.items()]]
            m._last = {v: list(cell) for v, cell in m._series.items()}
        z.set(gauges_key, _encode({"id": worker_id, "gauges": doc}))
        _gauges_written = True


def _add_deltas(incr: Any, m: Metric, values: tuple[str, ...], cell: list, prev: list) -> None:
    """Add what ``cell`` counted since ``prev`` to the zone; ``prev`` becomes ``cell``."""
    prefix = m._prefix(values)
    if m.kind == "counter":
        incr(prefix + "v", cell[0] - prev[0], init=0)
        prev[0] = cell[0]
        return
    for i in range(len(cell)):
        d = cell[i] - prev[i]
        if d:
            incr(f"{prefix}b{i - 1}" if i else prefix + "s", d, init=0)
            prev[i] = cell[i]


# ----------------------------------------------------------------------------------- reading
class Reader:
    """Collects the user-metric keys of the status zone (``add``), then gives them as the
    ``user_metrics`` part of the status document (``document``)."""

    PREFIXES = ("ud", "u", "ug")

    def __init__(self) -> None:
        self.defs: dict[str, dict[str, Any]] = {}
        self.values: dict[tuple[str, str, str], dict[str, Any]] = {}  # (name, shape, labels)
        self.gauges: list[dict[str, Any]] = []

    def add(self, parts: list[str], v: Any) -> None:
        """One zone key (split on ``␟``) with its value."""
        kind = parts[0]
        if kind == "ud" and len(parts) == 2 and isinstance(v, dict):
            self.defs[parts[1]] = v
        elif kind == "u" and len(parts) == 5 and isinstance(v, (int, float)):
            fields = self.values.setdefault((parts[1], parts[2], parts[3]), {})
            fields[parts[4]] = v
        elif kind == "ug" and len(parts) == 2 and isinstance(v, dict):
            self.gauges.append(v)

    def document(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for name in sorted(self.defs):
            d = self.defs[name]
            kind = d.get("kind")
            if kind not in KINDS:
                continue
            labels = list(d.get("labels") or ())
            doc: dict[str, Any] = {"type": kind, "help": d.get("help", ""), "labels": labels}
            if kind == "histogram":
                doc["buckets"] = list(d.get("buckets") or ())
            doc["series"] = self._series(name, kind, d.get("shape"), labels, doc)
            out[name] = doc
        return out

    def _series(
        self, name: str, kind: str, shape: Any, labels: list[str], doc: dict[str, Any]
    ) -> list[dict[str, Any]]:
        series: list[dict[str, Any]] = []
        if kind == "gauge":
            for rec in sorted(self.gauges, key=lambda r: (r.get("id") is None, r.get("id"))):
                entry = (rec.get("gauges") or {}).get(name)
                if not entry or entry[0] != shape:
                    continue
                for values, value in entry[1]:
                    if len(values) == len(labels):
                        lb = dict(zip(labels, values, strict=True))
                        lb["worker"] = str(rec.get("id"))
                        series.append({"labels": lb, "value": value})
            return _merge_gauges(series)
        for (n, s, raw), fields in sorted(self.values.items()):
            if n != name or s != shape:
                continue
            try:
                values = _decode(raw)
            except msgspec.DecodeError:
                continue
            if not isinstance(values, list) or len(values) != len(labels):
                continue
            lb = dict(zip(labels, values, strict=True))
            if kind == "counter":
                series.append({"labels": lb, "value": fields.get("v", 0)})
            else:
                series.append(_histogram(doc["buckets"], fields, lb))
        if not series and not labels:  # defined, never counted: zero
            if kind == "counter":
                series.append({"labels": {}, "value": 0})
            else:
                series.append(_histogram(doc["buckets"], {}, {}))
        return series


def _merge_gauges(series: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Two processes with one worker id (one retiring after a reload, one serving): summed."""
    merged: dict[tuple, dict[str, Any]] = {}
    for s in series:
        k = tuple(sorted(s["labels"].items()))
        if k in merged:
            merged[k]["value"] += s["value"]
        else:
            merged[k] = s
    return list(merged.values())


def _histogram(bounds: list[float], fields: dict[str, Any], labels: dict[str, Any]) -> dict:
    cum = 0
    buckets: dict[str, int] = {}
    for i, bound in enumerate([*map(repr, map(float, bounds)), "+Inf"]):
        cum += fields.get(f"b{i}", 0)
        buckets[bound] = cum
    return {
        "labels": labels,
        "buckets": buckets,
        "sum": round(fields.get("s", 0.0), 9),
        "count": cum,
    }
