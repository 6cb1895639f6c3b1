"""Prometheus metrics (prometheus-client): requests, recognitions, searches, ingests, instance failures;
GET /metrics.

Under gunicorn every worker writes its samples to files in ``PROMETHEUS_MULTIPROC_DIR`` (set by
``tunescout serve`` before any worker starts) and ``/metrics`` adds them up, so a scrape sees the
whole server whichever worker answers it.
"""

from __future__ import annotations

import os
import time

from flask import Flask, Response, g, request
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)

REQUESTS = Counter(
    "tunescout_http_requests_total", "HTTP requests by endpoint, method and status", ["endpoint", "method", "status"]
)
LATENCY = Histogram(
    "tunescout_http_request_duration_seconds",
    "HTTP request latency by endpoint",
    ["endpoint"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
RECOGNITIONS = Counter("tunescout_recognitions_total", "Recognitions by outcome (match, no_match)", ["outcome"])
SONGS_INGESTED = Counter("tunescout_songs_ingested_total", "Songs fingerprinted and stored")
HASHES_INGESTED = Counter("tunescout_hashes_ingested_total", "Hashes stored with ingested songs")
SONGS_DELETED = Counter("tunescout_songs_deleted_total", "Songs deleted")
SEARCHES = Counter(
    "tunescout_searches_total",
    "Recognition searches by lookup steps taken (1: the rarest hashes settled it, or one lookup held every hash)",
    ["lookups"],
)
SECOND_QUERIES = Counter(
    "tunescout_second_queries_total",
    "Clips left unanswered but within reach by the first query, searched again with the richer second one",
)
TRIPLET_SEARCHES = Counter(
    "tunescout_triplet_searches_total",
    "Lookups of a clip's triplet keys (an index with third points), by what they settled",
    ["outcome"],
)
ROBUST_SEARCHES = Counter(
    "tunescout_robust_searches_total",
    "Searches of the robust path (speed, tempo, pitch) by row reads made (1: the rarest rows settled it)",
    ["lookups"],
)
PEAK_VERIFICATIONS = Counter(
    "tunescout_peak_verifications_total",
    "Clips that no search answered, whose best candidates were re-scored by their peaks, by outcome",
    ["outcome"],
)
TEMPO_FITS = Counter(
    "tunescout_tempo_fits_total",
    "Hash-search answers whose matches drifted, fitted by their peaks, by outcome (scaled: a tempo change found)",
    ["outcome"],
)
COUNTS_COPY_LOADS = Counter(
    "tunescout_counts_copy_loads_total",
    "Loads of an instance's common hash counts into a worker's memory (after a change)",
    ["instance"],
)
COUNTS_COPY_VALUES = Gauge(
    "tunescout_counts_copy_values",
    "Hash values in the largest worker's copy of an instance's common counts",
    ["instance"],
    multiprocess_mode="livemax",
)
MEMORY_INDEX_ROWS = Gauge(
    "tunescout_memory_index_rows",
    "Index rows in the largest worker's in-memory copy of an instance (recognizing.memory_index)",
    ["instance"],
    multiprocess_mode="livemax",
)
MEMORY_INDEX_BYTES = Gauge(
    "tunescout_memory_index_bytes",
    "Bytes of the largest worker's in-memory copy of an instance (recognizing.memory_index)",
    ["instance"],
    multiprocess_mode="livemax",
)
INSTANCE_FAILURES = Counter(
    "tunescout_instance_failures_total",
    "Fingerprint instance calls that failed, by instance and kind (error, timeout)",
    ["instance", "kind"],
)


def instance_failed(index: int, kind: str) -> None:
    INSTANCE_FAILURES.labels(str(index), kind).inc()


def counts_copy_loaded(index: int, values: int) -> None:
    COUNTS_COPY_LOADS.labels(str(index)).inc()
    COUNTS_COPY_VALUES.labels(str(index)).set(values)


def memory_index_loaded(index: int, rows: int, nbytes: int) -> None:
    MEMORY_INDEX_ROWS.labels(str(index)).set(rows)
    MEMORY_INDEX_BYTES.labels(str(index)).set(nbytes)


def search_finished(lookups: int) -> None:
    SEARCHES.labels(str(lookups)).inc()


def second_query() -> None:
    SECOND_QUERIES.inc()


def triplet_search(outcome: str) -> None:
    """outcome: answered, rejected, or passed_on (to the pair lookup)."""
    TRIPLET_SEARCHES.labels(outcome).inc()


def robust_finished(lookups: int) -> None:
    ROBUST_SEARCHES.labels(str(lookups)).inc()


def peak_verification(outcome: str) -> None:
    """outcome: answered, or none (no candidate cleared the bar, or none had peaks)."""
    PEAK_VERIFICATIONS.labels(outcome).inc()


def tempo_fit(scaled: int) -> None:
    TEMPO_FITS.labels("scaled" if scaled else "unscaled").inc()


def recognised(body: dict) -> None:
    RECOGNITIONS.labels("match" if body.get("results") else "no_match").inc()


def ingested(body: dict) -> None:
    SONGS_INGESTED.inc()
    HASHES_INGESTED.inc(body.get("total_hashes", 0))


def init_metrics(app: Flask) -> None:
    """Count and time every request; serve /metrics."""

    @app.before_request
    def _start():
        g.metrics_start = time.perf_counter()

    @app.after_request
    def _count(response):
        endpoint = request.url_rule.rule if request.url_rule is not None else "unmatched"
        REQUESTS.labels(endpoint, request.method, str(response.status_code)).inc()
        if "metrics_start" in g:
            LATENCY.labels(endpoint).observe(time.perf_counter() - g.metrics_start)
        return response

    @app.get("/metrics")
    def metrics():
        if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry)
        else:
            registry = REGISTRY
        return Response(generate_latest(registry), mimetype=CONTENT_TYPE_LATEST)
