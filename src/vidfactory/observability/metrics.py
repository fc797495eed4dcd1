"""Prometheus metrics, exported at `GET /metrics`. Two sources, chosen per metric for being right when the
API runs as several processes and workers run on other hosts:

- What only the API process sees (requests, result-cache lookups) is counted here, in the process. Run
  several API processes on one host (gunicorn/uvicorn workers) with `PROMETHEUS_MULTIPROC_DIR` set to one
  empty directory, and every process's scrape sums them all (prometheus-client's multiprocess mode);
  separate replicas are separate scrape targets, summed by Prometheus.
- What the fleet shares (queue, jobs, workers, holds, webhooks, breakers, phases, ledger checks) is read
  from the database at scrape time (observability/fleet.py): every replica reports the same values,
  whatever process or host did the work, across restarts. Aggregate those with max(), not sum().
"""

from __future__ import annotations

import os

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector

__all__ = ["admission_batch_size", "cache_lookups", "http_request_duration", "http_requests", "multiprocess_dir_env",
           "render"]

multiprocess_dir_env = "PROMETHEUS_MULTIPROC_DIR"

process_registry = CollectorRegistry()
http_requests = Counter("vidfactory_http_requests", "HTTP requests answered, by route template and status.",
                        ["route", "method", "status"], registry=process_registry)
http_request_duration = Histogram(
    "vidfactory_http_request_duration_seconds", "Time to answer an HTTP request, by route template.",
    ["route", "method"], registry=process_registry,
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0))
cache_lookups = Counter("vidfactory_cache_lookups", "Result-cache lookups at submission, by result.", ["result"],
                        registry=process_registry)
admission_batch_size = Histogram(
    "vidfactory_admission_batch_size", "Submissions committed in one write transaction (group commit).",
    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256), registry=process_registry)


def _live_registry() -> CollectorRegistry:
    """This process's counters, or every API process's when they share a multiprocess directory."""
    if not os.environ.get(multiprocess_dir_env):
        return process_registry
    registry = CollectorRegistry()
    MultiProcessCollector(registry)
    return registry


def render(*collectors: Collector) -> bytes:
    """The exposition text: the process metrics, then what `collectors` read at this scrape."""
    scraped = CollectorRegistry(auto_describe=False)
    for collector in collectors:
        scraped.register(collector)
    return generate_latest(_live_registry()) + generate_latest(scraped)
