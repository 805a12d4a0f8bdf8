"""Soak: mixed load for N minutes against a real gunicorn and qcluster, with a faulty provider.

python bench/soak.py                 # 30 minutes, 6 clients, 5 % provider faults
python bench/soak.py --minutes 3     # a short check

Clients submit screening and indexing jobs, poll them, list, export (CSV, RIS, JSONL), cancel,
delete, record human reviews (when the reviews endpoint exists) and scrape /metrics, while the fake
provider fails 5 % of requests (500, 429, malformed and schema-invalid answers). Targets: no 5xx
answer at all; web and worker memory (RSS of each process tree) grow by less than 10 % from the end
of the warm-up to the end; every job reaches a terminal state once the load stops; stored rows agree
with the jobs' counters. Prints the figures and writes bench/results/soak.json; exits 1 if a target
is missed.
"""

from __future__ import annotations

import argparse
import http.client
import json
import random
import subprocess
import sys
import threading
import time
from collections import Counter
from urllib.parse import urlsplit

from common import CRITERIA, ROOT, fake_provider, papers, setup_service, write_results

KEY = "soak-client-key"
METRICS_TOKEN = "soak-metrics-token-0123456789"
EXPORTS = ("csv", "ris", "jsonl")
# (action, weight): what a client does next.
ACTIONS = (("submit", 8), ("submit_index", 2), ("poll", 45), ("list", 8), ("export", 10), ("cancel", 3),
           ("delete", 3), ("review", 6), ("evaluation", 3), ("healthz", 4), ("metrics", 2))


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def tree_rss_mb(pid: int) -> float:
    """Resident memory of a process and all its descendants (MB)."""
    rows = subprocess.run(["ps", "-e", "-o", "pid=,ppid=,rss="], capture_output=True, text=True).stdout.split("\n")
    children: dict[int, list[int]] = {}
    rss: dict[int, int] = {}
    for row in rows:
        if row.strip():
            p, pp, r = (int(x) for x in row.split())
            children.setdefault(pp, []).append(p)
            rss[p] = r
    total, todo = 0, [pid]
    while todo:
        p = todo.pop()
        total += rss.get(p, 0)
        todo += children.get(p, [])
    return total / 1024


class Client(threading.Thread):
    def __init__(self, base: str, shared: Shared, seed: int, until: float, think: float) -> None:
        super().__init__(daemon=True)
        self.netloc = urlsplit(base).netloc
        self.shared, self.rng, self.until, self.think = shared, random.Random(seed), until, think
        self.conn: http.client.HTTPConnection | None = None

    def request(self, method: str, path: str, body: dict | None = None, headers: dict | None = None):
        for attempt in (1, 2):  # a kept-alive connection the server closed is reopened once
            if self.conn is None:
                self.conn = http.client.HTTPConnection(self.netloc, timeout=60)
            try:
                self.conn.request(method, path, body=json.dumps(body) if body is not None else None,
                                  headers={"X-API-Key": KEY, "Content-Type": "application/json", **(headers or {})})
                response = self.conn.getresponse()
                data = response.read()
                self.shared.record(method, path, response.status, data)
                return response.status, data
            except (http.client.HTTPException, OSError):
                self.conn.close()
                self.conn = None
                if attempt == 2:
                    self.shared.record(method, path, 0, b"connection failed")
                    return 0, b""
        return 0, b""

    def run(self) -> None:
        names, weights = zip(*ACTIONS, strict=True)
        while time.monotonic() < self.until:
            getattr(self, "do_" + self.rng.choices(names, weights)[0])()
            time.sleep(self.rng.uniform(0, 2 * self.think))

    def do_submit(self) -> None:
        n = self.rng.randint(5, 60)
        body = {"criteria": CRITERIA, "papers": papers(n, seed=self.rng.randrange(10**9))}
        if self.rng.random() < 0.1:
            body["project_id"] = f"project-{self.rng.randrange(5)}"  # sometimes a 409: one active job per project
        status, data = self.request("POST", "/v1/screening/jobs", body)
        if status == 202:
            self.shared.add_job("screening", json.loads(data)["id"])

    def do_submit_index(self) -> None:
        records = [{"id": p["id"], "title": p["title"], "abstract": p["abstract"]}
                   for p in papers(self.rng.randint(3, 15), seed=self.rng.randrange(10**9))]
        status, data = self.request("POST", "/v1/indexer/jobs", {"records": records})
        if status == 202:
            self.shared.add_job("indexing", json.loads(data)["id"])

    def _job(self, kind: str = "screening", finished: bool | None = None) -> str | None:
        return self.shared.pick(self.rng, kind, finished)

    def do_poll(self) -> None:
        kind = "screening" if self.rng.random() < 0.8 else "indexing"
        job_id = self._job(kind)
        if job_id:
            prefix = "/v1/screening/jobs" if kind == "screening" else "/v1/indexer/jobs"
            status, data = self.request("GET", f"{prefix}/{job_id}")
            if status == 200:
                self.shared.seen(job_id, json.loads(data)["status"])

    def do_list(self) -> None:
        self.request("GET", "/v1/screening/jobs?page_size=20")

    def do_export(self) -> None:
        job_id = self._job()
        if job_id:
            self.request("GET", f"/v1/screening/jobs/{job_id}/results?format={self.rng.choice(EXPORTS)}")

    def do_cancel(self) -> None:
        job_id = self._job(finished=False)
        if job_id:
            self.request("DELETE", f"/v1/screening/jobs/{job_id}")

    def do_delete(self) -> None:
        job_id = self._job(finished=True)
        if job_id:
            status, _ = self.request("DELETE", f"/v1/screening/jobs/{job_id}")
            if status == 204:
                self.shared.forget(job_id)

    def do_review(self) -> None:
        job_id = self._job(finished=True)
        if job_id and self.shared.reviews:
            status, data = self.request("GET", f"/v1/screening/jobs/{job_id}/results?page_size=5")
            if status == 200:
                rows = json.loads(data)["results"]
                reviews = [{"paper_id": r["paper_id"], "decision": self.rng.choice(["include", "exclude"]),
                            "reviewer": f"reviewer-{self.rng.randrange(3)}"} for r in rows]
                if reviews:
                    self.request("POST", f"/v1/screening/jobs/{job_id}/reviews", {"reviews": reviews})

    def do_evaluation(self) -> None:
        job_id = self._job(finished=True)
        if job_id and self.shared.reviews:
            self.request("GET", f"/v1/screening/jobs/{job_id}/evaluation")

    def do_healthz(self) -> None:
        self.request("GET", "/healthz")

    def do_metrics(self) -> None:
        self.request("GET", "/metrics", headers={"Authorization": f"Bearer {METRICS_TOKEN}"})


class Shared:
    """Jobs the clients know of (id -> kind, last status seen) and every answer's status."""

    def __init__(self, reviews: bool) -> None:
        self.lock = threading.Lock()
        self.jobs: dict[str, list[str]] = {}
        self.statuses: Counter = Counter()
        self.by_action: Counter = Counter()
        self.server_errors: list[str] = []
        self.reviews = reviews

    def record(self, method: str, path: str, status: int, data: bytes) -> None:
        route = path.split("?")[0].split("/")
        shape = "/".join("{id}" if len(part) == 36 else part for part in route[:6])
        with self.lock:
            self.statuses[status] += 1
            self.by_action[f"{method} {shape} {status}"] += 1
            if status >= 500 or status == 0:
                self.server_errors.append(f"{status} {method} {path}: {data[:300]!r}")

    def add_job(self, kind: str, job_id: str) -> None:
        with self.lock:
            self.jobs[job_id] = [kind, "pending"]

    def seen(self, job_id: str, status: str) -> None:
        with self.lock:
            if job_id in self.jobs:
                self.jobs[job_id][1] = status

    def forget(self, job_id: str) -> None:
        with self.lock:
            self.jobs.pop(job_id, None)

    def pick(self, rng: random.Random, kind: str, finished: bool | None) -> str | None:
        with self.lock:
            ids = [j for j, (k, s) in self.jobs.items()
                   if k == kind and (finished is None or (s in ("completed", "failed", "cancelled")) == finished)]
        return rng.choice(ids) if ids else None


def consistency() -> dict:
    """Every job terminal, and the stored rows agree with each job's counters."""
    from indexer.models import IndexJob, IndexResult
    from screening.models import ScreeningJob, ScreeningResult

    problems: list[str] = []
    for model, result_model, done in ((ScreeningJob, ScreeningResult, "screened"), (IndexJob, IndexResult, "processed")):
        for job in model.objects.all():
            rows = result_model.objects.filter(job=job)
            count, distinct = rows.count(), rows.values("position").distinct().count()
            if job.is_active:
                problems.append(f"{model.__name__} {job.pk} still {job.status}")
            if count != distinct:
                problems.append(f"{model.__name__} {job.pk}: {count} results for {distinct} positions")
            if count != getattr(job, done):
                problems.append(f"{model.__name__} {job.pk}: {count} results, counter says {getattr(job, done)}")
            if job.status == "completed" and count != job.total:
                problems.append(f"{model.__name__} {job.pk} completed with {count} of {job.total} results")
    return {
        "jobs": {m.__name__: dict(Counter(m.objects.values_list("status", flat=True))) for m in (ScreeningJob, IndexJob)},
        "results": ScreeningResult.objects.count() + IndexResult.objects.count(),
        "problems": problems,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--minutes", type=float, default=30.0, help="length of the load (default 30)")
    parser.add_argument("--warmup", type=float, default=None, help="minutes before memory is measured "
                        "(default: a sixth of the run, at least 0.5)")
    parser.add_argument("--clients", type=int, default=6)
    parser.add_argument("--think", type=float, default=0.15, help="mean pause between a client's requests (s)")
    parser.add_argument("--faults", type=float, default=0.05, help="share of provider requests that fail")
    parser.add_argument("--latency", type=float, default=0.05, help="provider latency (s)")
    parser.add_argument("--web-workers", type=int, default=2)
    args = parser.parse_args()
    warmup = args.warmup if args.warmup is not None else max(0.5, args.minutes / 6)
    f = args.faults
    faults = {"p_500": round(f * 0.6, 4), "p_429": round(f * 0.2, 4), "p_malformed": round(f * 0.1, 4),
              "p_schema_invalid": round(f * 0.1, 4), "fault_retry_after": 0.2}
    with fake_provider(latency=args.latency, seed=7, **faults) as base_url:
        setup_service("soak", base_url, CRYSTALLISE_LLM_CONCURRENCY=16, CRYSTALLISE_LLM_BACKOFF=0.1,
                      CRYSTALLISE_METRICS_TOKEN=METRICS_TOKEN, CRYSTALLISE_WORKERS=2)
        from django.urls import get_resolver

        reviews = "screening-job-reviews" in get_resolver().reverse_dict
        port = free_port()
        web = subprocess.Popen([sys.executable, "-m", "gunicorn", "crystallise_site.wsgi", "--bind",
                                f"127.0.0.1:{port}", "--workers", str(args.web_workers), "--config", "gunicorn.conf.py",
                                "--log-level", "warning"], cwd=ROOT)
        worker = subprocess.Popen([sys.executable, "manage.py", "qcluster"], cwd=ROOT)
        base = f"http://127.0.0.1:{port}"
        shared = Shared(reviews)
        samples: list[tuple[float, float, float]] = []
        try:
            time.sleep(3)
            started = time.monotonic()
            until = started + args.minutes * 60
            clients = [Client(base, shared, seed, until, args.think) for seed in range(args.clients)]
            for client in clients:
                client.start()
            while any(c.is_alive() for c in clients):
                samples.append((time.monotonic() - started, tree_rss_mb(web.pid), tree_rss_mb(worker.pid)))
                time.sleep(10)
            samples.append((time.monotonic() - started, tree_rss_mb(web.pid), tree_rss_mb(worker.pid)))
            # The load has stopped: every job must end (the worker drains the queue).
            from crystallise.jobs.models import ACTIVE_STATUSES
            from indexer.models import IndexJob
            from screening.models import ScreeningJob

            drain_started = time.monotonic()
            while (ScreeningJob.objects.filter(status__in=ACTIVE_STATUSES).exists()
                   or IndexJob.objects.filter(status__in=ACTIVE_STATUSES).exists()):
                if time.monotonic() - drain_started > 600:
                    break
                time.sleep(1)
            drain = time.monotonic() - drain_started
            checks = consistency()
        finally:
            web.terminate()
            worker.terminate()
            web.wait(timeout=30)
            worker.wait(timeout=60)
    after_warmup = [s for s in samples if s[0] >= warmup * 60] or samples[-1:]
    growth = {name: round(100 * (after_warmup[-1][i] - after_warmup[0][i]) / after_warmup[0][i], 1)
              for i, name in ((1, "web"), (2, "worker"))}
    total = sum(shared.statuses.values())
    five_xx = sum(n for status, n in shared.statuses.items() if status >= 500 or status == 0)
    figures = {
        "minutes": args.minutes, "warmup_minutes": warmup, "clients": args.clients, "provider_faults": args.faults,
        "reviews_endpoint": reviews,
        "requests": total, "requests_per_s": round(total / (args.minutes * 60), 1),
        "status_counts": {str(k): v for k, v in sorted(shared.statuses.items())},
        "server_errors_5xx": five_xx, "first_5xx": shared.server_errors[:5],
        "rss_mb_web": [round(after_warmup[0][1], 1), round(after_warmup[-1][1], 1)],
        "rss_mb_worker": [round(after_warmup[0][2], 1), round(after_warmup[-1][2], 1)],
        "rss_growth_pct": growth,
        "drain_seconds": round(drain, 1),
        **checks,
        "by_action": dict(sorted(shared.by_action.items())),
    }
    write_results("soak", figures)
    ok = five_xx == 0 and max(growth.values()) < 10 and not checks["problems"]
    print("\nsoak:", "all targets met" if ok else "TARGET MISSED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
