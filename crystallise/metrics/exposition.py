"""GET /metrics: the Prometheus text format, for staff sessions or the bearer token.

Gauges are read from the database at scrape time with a few aggregate
queries (jobs by kind, status and lane; the task queue; live worker
clusters). Counters and histograms are the rows of `MetricCounter`, which
every process adds to (see `crystallise.metrics.store`), so one scrape of
any web process shows the calls made by all workers.
"""

from __future__ import annotations

import hmac
import math
from collections import defaultdict

from django.conf import settings
from django.db.models import Count
from django.http import HttpResponse, JsonResponse
from django.utils import timezone
from django.views.decorators.csrf import csrf_exempt
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from crystallise.api import read_only
from crystallise.errors import Category, error_body
from crystallise.metrics.record import JOB_DURATION_BUCKETS, KIND_OF_APP, LATENCY_BUCKETS, has_lane
from crystallise.metrics.store import MetricCounter

# Counters: stored name -> (exposed name without _total, help, label names).
COUNTERS = {
    "llm_requests": ("crystallise_llm_requests", "Requests to the LLM provider (each attempt; retries count again), "
                     "by outcome (ok, error, bad_output) and error category.", ("model", "outcome", "error_category")),
    "llm_tokens": ("crystallise_llm_tokens", "Tokens the provider reported, by model and type "
                   "(input, cached_input, output, reasoning; output includes reasoning).", ("model", "type")),
    "llm_cost_usd": ("crystallise_llm_cost_usd", "Cost in USD of the provider's reported usage, by model.", ("model",)),
    "items": ("crystallise_job_items", "Papers (screening) and records (indexing) given an outcome by job runs.",
              ("kind", "lane", "outcome")),
}
HISTOGRAMS = {
    "llm_request_seconds": ("crystallise_llm_request_seconds",
                            "Latency of one request to the LLM provider (client-side pacing wait included).", ("model",),
                            LATENCY_BUCKETS),
    "job_seconds": ("crystallise_job_duration_seconds",
                    "Duration (started to finished) of job runs that ended the job.", ("kind", "lane", "status"),
                    JOB_DURATION_BUCKETS),
}


def authorized(request) -> bool:
    user = getattr(request, "user", None)
    if user is not None and user.is_active and user.is_staff:
        return True
    token = settings.CRYSTALLISE_METRICS_TOKEN
    header = request.headers.get("Authorization", "")
    scheme, _, value = header.partition(" ")
    return bool(token) and scheme.lower() == "bearer" and hmac.compare_digest(value.strip().encode(), token.encode())


@csrf_exempt  # another method is a 405 in the error shape, not a CSRF 403 page
def metrics_view(request):
    if (refused := read_only(request)) is not None:
        return refused
    if not authorized(request):
        response = JsonResponse(error_body(
            Category.AUTH, "Metrics need a staff login or `Authorization: Bearer <CRYSTALLISE_METRICS_TOKEN>`."),
            status=401)
        response["WWW-Authenticate"] = 'Bearer realm="metrics"'
        return response
    registry = CollectorRegistry(auto_describe=False)
    registry.register(DatabaseCollector())
    return HttpResponse(generate_latest(registry), content_type=CONTENT_TYPE_LATEST)


class DatabaseCollector:
    def collect(self):
        yield from job_gauges()
        yield from queue_gauges()
        yield from rate_limit_gauges()
        yield from counter_families()

    def describe(self):
        return []


def job_models():
    from crystallise.jobs.models import BaseJob

    return BaseJob.__subclasses__()


def job_gauges():
    from crystallise.jobs.models import JobStatus

    family = GaugeMetricFamily("crystallise_jobs", "Jobs in the database by kind, status and lane.",
                               labels=("kind", "status", "lane"))
    for model in job_models():
        kind = KIND_OF_APP.get(model._meta.app_label, model._meta.model_name)
        has_mode = has_lane(model)
        counts: dict[tuple[str, str], int] = defaultdict(int)
        rows = model.objects.order_by().values("status", *(["mode"] if has_mode else [])).annotate(n=Count("pk"))
        for row in rows:
            counts[(row["status"], str(row.get("mode") or "online"))] += row["n"]
        for status in JobStatus.values:  # every status listed, so a rate or alert sees a zero, not a gap
            counts.setdefault((status, "online"), 0)
        for (status, lane), n in sorted(counts.items()):
            family.add_metric((kind, status, lane), n)
    yield family


def queue_gauges():
    from django_q.models import OrmQ
    from django_q.status import Stat

    now = timezone.now()
    waiting = OrmQ.objects.filter(lock__lte=now).count()
    taken = OrmQ.objects.filter(lock__gt=now).count()
    depth = GaugeMetricFamily("crystallise_queue_tasks", "Tasks in the django-q2 queue (OrmQ rows): waiting for a "
                              "worker, or taken by one.", labels=("state",))
    depth.add_metric(("waiting",), waiting)
    depth.add_metric(("taken",), taken)
    yield depth
    try:
        clusters = len(Stat.get_all())
    except Exception:  # noqa: BLE001 - the cache (a table) may be unreadable; report no live cluster
        clusters = 0
    yield GaugeMetricFamily("crystallise_worker_clusters", "django-q2 clusters that checked in recently.", value=clusters)


def rate_limit_gauges():
    """Per provider key (the first 12 hex digits of its fingerprint, never the key): the limits it last
    advertised, and the jobs sharing it now (live leases) with the part of the limit they hold."""
    from django.db.models import Sum

    from crystallise.ratelimit.models import RateLimitKey, RateLimitLease

    requests = GaugeMetricFamily("crystallise_rate_limit_requests_per_minute",
                                 "Requests per minute the provider last advertised for the key.", labels=("key",))
    tokens = GaugeMetricFamily("crystallise_rate_limit_tokens_per_minute",
                               "Tokens per minute the provider last advertised for the key.", labels=("key",))
    holders = GaugeMetricFamily("crystallise_rate_limit_holders",
                                "Job runs holding a live share of the key's limit.", labels=("key",))
    held = GaugeMetricFamily("crystallise_rate_limit_share_held",
                             "The part of the key's limit (0-1) the live shares add up to.", labels=("key",))
    for fingerprint, rpm, tpm in RateLimitKey.objects.order_by("fingerprint").values_list(
            "fingerprint", "limit_requests", "limit_tokens"):
        if rpm is not None:
            requests.add_metric((fingerprint[:12],), rpm)
        if tpm is not None:
            tokens.add_metric((fingerprint[:12],), tpm)
    live = (RateLimitLease.objects.live().order_by("fingerprint").values("fingerprint").annotate(n=Count("pk"), share=Sum("share")))
    for row in live:
        holders.add_metric((row["fingerprint"][:12],), row["n"])
        held.add_metric((row["fingerprint"][:12],), round(row["share"] or 0.0, 6))
    yield from (requests, tokens, holders, held)


def counter_families():
    series: dict[str, list[tuple[dict, float]]] = defaultdict(list)
    for row in MetricCounter.objects.order_by("name", "labels"):
        series[row.name].append((row.label_dict, row.value))
    for name, (exposed, help_text, label_names) in COUNTERS.items():
        family = CounterMetricFamily(exposed, help_text, labels=label_names)
        for labels, value in series.get(name, []):
            family.add_metric(tuple(labels.get(n, "") for n in label_names), value)
        yield family
    for name, (exposed, help_text, label_names, bounds) in HISTOGRAMS.items():
        yield histogram(exposed, help_text, label_names, bounds, series.get(f"{name}_bucket", []),
                        series.get(f"{name}_sum", []))


def histogram(exposed: str, help_text: str, label_names: tuple, bounds: tuple[float, ...], buckets: list,
              sums: list) -> HistogramMetricFamily:
    """Per-bucket counts (as stored) made cumulative over every bound, per label set."""
    family = HistogramMetricFamily(exposed, help_text, labels=label_names)
    by_labels: dict[tuple, dict[float, float]] = defaultdict(lambda: dict.fromkeys((*bounds, math.inf), 0.0))
    for labels, value in buckets:
        key = tuple(labels.get(n, "") for n in label_names)
        bound = math.inf if labels["le"] == "+Inf" else float(labels["le"])
        by_labels[key][bound] = by_labels[key].get(bound, 0.0) + value
    totals = {tuple(labels.get(n, "") for n in label_names): value for labels, value in sums}
    for key, counts in sorted(by_labels.items()):
        running, cumulative = 0.0, []
        for bound in sorted(counts):
            running += counts[bound]
            cumulative.append(("+Inf" if bound == math.inf else repr(bound), running))
        family.add_metric(key, cumulative, sum_value=totals.get(key, 0.0))
    return family
