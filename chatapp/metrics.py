"""What operators see: Prometheus metrics at /metrics (prometheus-client), and their sums
for the /info page, correct under several gunicorn workers; and the chat's own metrics (the
realtime layer's are in realtime/metrics.py).

Under gunicorn, gunicorn.conf.py points PROMETHEUS_MULTIPROC_DIR at an empty directory before
the first worker starts: each worker writes its values to its own files there, and a scrape,
whichever worker answers it, adds up every worker's (gauges marked `live*` count only the
workers alive: gunicorn's `child_exit` hook drops a dead worker's). Counters of a worker that
died stay in the sums, as Prometheus expects of a counter. Without that variable (an app made
in a test process), the process's default registry is read (config.py reads the variable;
prometheus-client reads it too, to write each worker's files).
"""

from __future__ import annotations

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
    multiprocess,
)

MESSAGES = Counter("chat_messages_stored", "Chat messages stored (from clients and the HTTP API)")
STORE_SECONDS = Histogram(
    "chat_store_batch_seconds",
    "Time to store one batch of messages (one transaction or pipeline)",
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 5.0),
)


def _registry(multiproc_dir: str | None) -> CollectorRegistry:
    """Every worker's metrics (in `multiproc_dir`), or this process's."""
    if not multiproc_dir:
        return REGISTRY
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry, multiproc_dir)
    return registry


def exposition(multiproc_dir: str | None = None) -> tuple[bytes, str]:
    """The body and content type of /metrics (`multiproc_dir`: PROMETHEUS_MULTIPROC_DIR)."""
    return generate_latest(_registry(multiproc_dir)), CONTENT_TYPE_LATEST


def figures(multiproc_dir: str | None = None) -> dict[str, dict[str, float]]:
    """Each chat_ sample's value by its labels ("" without labels), summed over workers as
    the scrape sums them: {"chat_closes_total": {"1000": 3.0, "1001": 1.0}, ...}."""
    found: dict[str, dict[str, float]] = {}
    for family in _registry(multiproc_dir).collect():
        for sample in family.samples:
            if sample.name.startswith("chat_") and not sample.name.endswith(("_bucket", "_created")):
                label = ",".join(sample.labels.values())
                found.setdefault(sample.name, {})[label] = sample.value
    return found
