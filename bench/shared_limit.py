"""Shared limit: four jobs on one provider key, run by two `qcluster` processes (two hosts' worth,
two workers each) on one PostgreSQL database, against a provider allowing R requests/minute.

python bench/shared_limit.py                          # 4 × 1,500 papers, 2 s latency, 10,000 RPM
python bench/shared_limit.py --papers 150 --latency 0.05 --rpm 3000   # smoke

Figures, from the fake provider's arrival log: the aggregate admitted rate over the span of the
admissions (and how many were refused), the busiest 10-second window (never above the limit), each
job's rate while all four ran against a fair quarter of the aggregate, and the limiter's own writes
(rows inserted, updated or deleted in its tables, from PostgreSQL's statistics) per worker process
per 100 ms. Targets: aggregate ≥ 0.90 of R; busiest 10 s ≤ R; each job within ±20 % of fair;
≤ 1 limiter write per process per 100 ms. Needs PostgreSQL (DATABASE_URL or BENCH_DATABASE_URL).
"""

from __future__ import annotations

import argparse
import bisect
import os
import signal
import subprocess
import sys
import time

from common import (
    CRITERIA,
    ROOT,
    api_client,
    fake_arrivals,
    fake_provider,
    fake_stats,
    limiter_writes,
    papers,
    setup_service,
    submit_job,
    write_results,
)

CLUSTERS = 2
WORKERS = 2  # per cluster: four worker processes, one job each


def start_cluster(name: str) -> subprocess.Popen:
    env = {**os.environ, "CRYSTALLISE_WORKERS": str(WORKERS), "CRYSTALLISE_LOG_LEVEL": "INFO"}
    log = open(f"{os.environ['BENCH_TMP']}/{name}.log", "w")  # noqa: SIM115 (closed with the process)
    return subprocess.Popen([sys.executable, "manage.py", "qcluster"], cwd=ROOT, env=env, stdout=log,
                            stderr=subprocess.STDOUT, start_new_session=True)


def busiest_window(times: list[float], seconds: float) -> int:
    return max((bisect.bisect_left(times, t + seconds) - i for i, t in enumerate(times)), default=0)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--papers", type=int, default=1500, help="per job")
    parser.add_argument("--latency", type=float, default=2.0)
    parser.add_argument("--rpm", type=int, default=10_000)
    args = parser.parse_args()
    server = os.environ.get("BENCH_DATABASE_URL") or os.environ.get("DATABASE_URL") or ""
    if not server.startswith("postgres"):
        print("shared_limit: skipped, needs PostgreSQL (DATABASE_URL=postgres://...)")
        return
    import tempfile

    os.environ["BENCH_TMP"] = tempfile.mkdtemp()
    with fake_provider(latency=args.latency, rpm=args.rpm, log_size=args.papers * 4 * 3) as base_url:
        setup_service("shared_limit", base_url)
        from django.db import connection

        from screening.models import ScreeningJob, ScreeningResult

        clusters = [start_cluster(f"cluster{i}") for i in range(CLUSTERS)]
        try:
            client = api_client()
            job_ids = [submit_job(client, papers(args.papers, seed=10 + i),
                                  criteria={**CRITERIA, "research_question": f"{CRITERIA['research_question']} ({i})"})
                       for i in range(4)]
            started = time.monotonic()
            while ScreeningJob.objects.filter(pk__in=job_ids, status__in=("pending", "running")).exists():
                if any(c.poll() is not None for c in clusters):
                    raise RuntimeError(f"a qcluster exited; logs in {os.environ['BENCH_TMP']}")
                time.sleep(0.2)
            wall = time.monotonic() - started
        finally:
            for cluster in clusters:
                cluster.send_signal(signal.SIGTERM)
            for cluster in clusters:
                try:
                    cluster.wait(30)
                except subprocess.TimeoutExpired:
                    os.killpg(cluster.pid, signal.SIGKILL)
        writes = limiter_writes()
        jobs = {str(j.pk): j for j in ScreeningJob.objects.filter(pk__in=job_ids)}
        duplicates = sum(ScreeningResult.objects.filter(job_id=j).count() - jobs[j].total for j in job_ids)
        stats, arrivals = fake_stats(base_url), fake_arrivals(base_url)

    admitted = [a for a in arrivals if a["status"] == 200]
    times = [a["t"] for a in admitted]
    span = times[-1] - times[0]
    per_job = {j: [a["t"] for a in admitted if a["cache_key"] == f"crystallise-screening-{j}"] for j in job_ids}
    # While all four ran: from the last job's first call to the first job's last one.
    both = (max(t[0] for t in per_job.values()), min(t[-1] for t in per_job.values()))
    overlap = both[1] - both[0]
    in_overlap = {j: sum(both[0] <= t <= both[1] for t in ts) / overlap for j, ts in per_job.items()}
    fair = sum(in_overlap.values()) / 4
    limit_per_s = args.rpm / 60
    write_results("shared_limit", {
        "jobs": 4, "papers_per_job": args.papers, "latency_s": args.latency, "rpm_limit": args.rpm,
        "processes": f"{CLUSTERS} qcluster × {WORKERS} workers", "database": connection.vendor,
        "statuses": sorted(j.status for j in jobs.values()),
        "failed_papers": sum(j.errored for j in jobs.values()), "results_beyond_one_per_paper": duplicates,
        "wall_s": round(wall, 2),
        "aggregate_fill": round(len(times) / span / limit_per_s, 3),
        "busiest_10s_over_limit": round(busiest_window(times, 10.0) / (10 * limit_per_s), 3),
        "busiest_1s_over_limit": round(busiest_window(times, 1.0) / limit_per_s, 3),
        "requests": stats["requests"], "responses_429": stats["status"].get("429", 0),
        "refused_fraction": round(stats["status"].get("429", 0) / stats["requests"], 4),
        "all_four_running_s": round(overlap, 2),
        "job_share_over_fair": sorted(round(r / fair, 3) for r in in_overlap.values()),
        "limiter_db_writes": writes,
        "limiter_writes_per_process_per_100ms": round(writes / (CLUSTERS * WORKERS) / (span * 10), 3),
        "targets": "aggregate ≥ 0.9, busiest 10 s ≤ 1, shares 0.8–1.2, ≤ 1 write/process/100 ms",
    })


if __name__ == "__main__":
    main()
