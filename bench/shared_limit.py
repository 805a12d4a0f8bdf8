"""Shared limit: four jobs on one provider key, run by two worker processes (two jobs each, as two
hosts would) on one PostgreSQL database, against a provider allowing R requests/minute.

python bench/shared_limit.py                          # 4 × 1,500 papers, 2 s latency, 10,000 RPM
python bench/shared_limit.py --papers 150 --latency 0.05 --rpm 3000   # smoke
python bench/shared_limit.py --stagger 3              # the second process starts 3 s later: shares change mid-run

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
import subprocess
import sys
import threading
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

PROCESSES = 2
JOBS_PER_PROCESS = 2


def start_worker(job_ids: list[str]) -> subprocess.Popen:
    """A process running these jobs at once with the service's own code (what a worker's task calls)."""
    return subprocess.Popen([sys.executable, __file__, "--run", ",".join(job_ids)], cwd=ROOT / "bench")


def run_jobs(job_ids: list[str]) -> None:
    import django

    django.setup()
    from screening.services import job_run

    threads = [threading.Thread(target=job_run, kwargs={"job_id": j}) for j in job_ids]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


def busiest_window(times: list[float], seconds: float) -> tuple[int, float]:
    """(most arrivals in any `seconds`, when that window starts, seconds after the first arrival)."""
    count, start = max(((bisect.bisect_left(times, t + seconds) - i, t) for i, t in enumerate(times)), default=(0, 0))
    return count, start - times[0] if times else 0.0


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--papers", type=int, default=1500, help="per job")
    parser.add_argument("--latency", type=float, default=2.0)
    parser.add_argument("--rpm", type=int, default=10_000)
    parser.add_argument("--stagger", type=float, default=0.0, help="seconds between starting the processes")
    parser.add_argument("--run", help=argparse.SUPPRESS)  # in a worker process: these job ids
    args = parser.parse_args()
    if args.run:
        return run_jobs(args.run.split(","))
    server = os.environ.get("BENCH_DATABASE_URL") or os.environ.get("DATABASE_URL") or ""
    if not server.startswith("postgres"):
        print("shared_limit: skipped, needs PostgreSQL (DATABASE_URL=postgres://...)")
        return
    with fake_provider(latency=args.latency, rpm=args.rpm, log_size=args.papers * 4 * 3) as base_url:
        setup_service("shared_limit", base_url)
        from django.db import connection

        from screening.models import ScreeningJob, ScreeningResult

        client = api_client()
        job_ids = [submit_job(client, papers(args.papers, seed=10 + i),
                              criteria={**CRITERIA, "research_question": f"{CRITERIA['research_question']} ({i})"})
                   for i in range(PROCESSES * JOBS_PER_PROCESS)]
        started = time.monotonic()
        workers = []
        for i in range(PROCESSES):
            if i:
                time.sleep(args.stagger)
            workers.append(start_worker(job_ids[i::PROCESSES]))
        for worker in workers:
            worker.wait()
        wall = time.monotonic() - started
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
    in_overlap = {j: sum(both[0] <= t <= both[1] for t in ts) / overlap for j, ts in per_job.items()} if overlap > 0 else {}
    fair = sum(in_overlap.values()) / 4 or 1  # no overlap (toy sizes): no shares to compare
    limit_per_s = args.rpm / 60
    write_results("shared_limit", {
        "jobs": 4, "papers_per_job": args.papers, "latency_s": args.latency, "rpm_limit": args.rpm,
        "processes": f"{PROCESSES} × {JOBS_PER_PROCESS} jobs", "stagger_s": args.stagger, "database": connection.vendor,
        "statuses": sorted(j.status for j in jobs.values()),
        "failed_papers": sum(j.errored for j in jobs.values()), "results_beyond_one_per_paper": duplicates,
        "wall_s": round(wall, 2),
        "aggregate_fill": round(len(times) / span / limit_per_s, 3),
        "busiest_10s_over_limit": round(busiest_window(times, 10.0)[0] / (10 * limit_per_s), 3),
        "busiest_10s_starts_at_s": round(busiest_window(times, 10.0)[1], 1),
        "busiest_1s_over_limit": round(busiest_window(times, 1.0)[0] / limit_per_s, 3),
        "first_15s_per_s_over_limit": [round(sum(s <= t - times[0] < s + 1 for t in times) / limit_per_s, 2)
                                       for s in range(15)],
        "requests": stats["requests"], "responses_429": stats["status"].get("429", 0),
        "refused_fraction": round(stats["status"].get("429", 0) / stats["requests"], 4),
        "all_four_running_s": round(overlap, 2),
        "job_share_over_fair": sorted(round(r / fair, 3) for r in in_overlap.values()),
        "limiter_db_writes": writes,
        "limiter_writes_per_process_per_100ms": round(writes / PROCESSES / (span * 10), 3),
        "targets": "aggregate ≥ 0.9, busiest 10 s ≤ 1, shares 0.8–1.2, ≤ 1 write/process/100 ms",
    })


if __name__ == "__main__":
    main()
