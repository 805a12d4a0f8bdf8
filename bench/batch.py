"""The batch lane: cost, resilience, ingest CPU and restarts, against the fake provider's Batch API.

python bench/batch.py                      # all parts
python bench/batch.py --part cost          # gpt-5-nano USD per 1,000 abstracts, batch price. Target ≤ $0.035
python bench/batch.py --part resilience    # 10,000 papers, 1 % failed lines, one chunk expires half done
python bench/batch.py --part restart       # a worker dies while batches are in flight

Resilience: the job is cut into 2,500-request batches; the fake fails 1 % of the lines (HTTP 500
inside the batch) and expires the second batch with half its lines answered. The job must end
completed with every paper decided once, and only the lines without an answer may be sent again.
Ingest CPU is this process's CPU time (time.process_time) spent in the ticks that collected output
files (download, parse by custom_id, validate, write the rows), per paper collected. Target ≤ 0.5 ms.
With SQLite the database's own work is in that figure; set BENCH_DATABASE_URL=postgres://… to
measure against PostgreSQL (a fresh database is created next to it).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from decimal import Decimal

from common import api_client, fake_provider, fake_stats, papers, setup_service, submit_job, write_results


def fake_batches(base_url: str, config: dict | None = None, stats: bool = False) -> dict:
    root = base_url.rsplit("/v1", 1)[0]
    if stats:
        with urllib.request.urlopen(f"{root}/_fake/batches/stats") as response:
            return json.load(response)
    request = urllib.request.Request(f"{root}/_fake/batches/config", data=json.dumps(config or {}).encode(),
                                     headers={"Content-Type": "application/json"}, method="POST")
    with urllib.request.urlopen(request) as response:
        return json.load(response)


def drive(job_id: str, max_polls: int = 200) -> tuple[int, float, float]:
    """The worker's run (first tick), then scheduled polls until the job ends: (polls, wall s, CPU s of the polls)."""
    from crystallise.tasks import poll_batches
    from screening.models import ScreeningJob
    from screening.services import job_run

    before = time.process_time()
    job_run(job_id=job_id)
    drive.submit_cpu = time.process_time() - before
    polls, cpu, started = 0, 0.0, time.perf_counter()
    while ScreeningJob.objects.filter(pk=job_id, status__in=("pending", "running")).exists() and polls < max_polls:
        before = time.process_time()
        poll_batches()
        cpu += time.process_time() - before
        polls += 1
    return polls, time.perf_counter() - started, cpu


def database_vendor() -> str:
    from django.db import connection

    return connection.vendor


def cost(n: int) -> dict:
    with fake_provider(latency=0) as base_url:
        setup_service("batch_cost", base_url, CRYSTALLISE_BATCH_POLL_SECONDS=0)
        fake_batches(base_url, {"steps": 1})
        from crystallise.config import TIER_PRICING_PER_1M
        from crystallise.tokens import Usage, cost_usd
        from screening.models import ScreeningJob

        job_id = submit_job(api_client(), papers(n), mode="batch")
        drive(job_id)
        job = ScreeningJob.objects.get(pk=job_id)
        stats = fake_stats(base_url)
    counted = Usage(input_tokens=stats["prompt_tokens"], cached_input_tokens=stats["cached_tokens"],
                    output_tokens=stats["completion_tokens"], reasoning_tokens=stats["reasoning_tokens"])
    per_1000 = cost_usd("gpt-5-nano", counted, "batch") * 1000 / Decimal(n)
    online_per_1000 = cost_usd("gpt-5-nano", counted) * 1000 / Decimal(n)
    return {
        "papers": n, "status": job.status, "batches": len(job.batches),
        "input_tokens_per_paper": round(counted.input_tokens / n, 1),
        "output_tokens_per_paper": round(counted.output_tokens / n, 1),
        "batch_price_per_1m": {k: float(v) for k, v in TIER_PRICING_PER_1M["batch"]["gpt-5-nano"].items()},
        "usd_per_1000_abstracts_batch": float(round(per_1000, 5)),
        "usd_per_1000_abstracts_online_same_tokens": float(round(online_per_1000, 5)),
        # Each answer is priced on its own (rounded to 1e-8 USD), so the sum may differ by n × 0.5e-8.
        "job_cost_usd": float(job.cost_usd),
        "job_cost_usd_matches": abs(job.cost_usd - cost_usd("gpt-5-nano", counted, "batch")) <= Decimal(n) * Decimal("0.00000001"),
        "target_usd": 0.035,
    }


def resilience(n: int, chunk: int) -> dict:
    with fake_provider(latency=0, seed=7) as base_url:
        setup_service("batch_resilience", base_url, CRYSTALLISE_BATCH_POLL_SECONDS=0,
                      CRYSTALLISE_BATCH_MAX_REQUESTS=chunk, CRYSTALLISE_BATCH_ENQUEUED_TOKENS="gpt-5-nano=100000000")
        fake_batches(base_url, {"steps": 1, "p_line_error": 0.01, "script": ["ok", "expire:0.5"]})
        from screening.models import ScreeningJob, ScreeningResult

        job_id = submit_job(api_client(), papers(n), mode="batch")
        polls, wall, cpu = drive(job_id)
        job = ScreeningJob.objects.get(pk=job_id)
        results = ScreeningResult.objects.filter(job_id=job_id)
        decided = results.count()
        distinct = results.values("paper_id").distinct().count()
        errored = results.filter(decision__isnull=True).count()
        stats = fake_batches(base_url, stats=True)
    by_round = Counter()
    missing_after = Counter()
    for entry in job.batches:
        by_round[entry["round"]] += entry["requests"]
        missing_after[entry["round"]] += entry["requests"] - entry["counts"]["completed"]
    resubmitted_exactly_missing = all(by_round[r + 1] == missing_after[r] for r in by_round if r + 1 in by_round)
    return {
        "papers": n, "status": job.status, "decided": decided, "decided_once": decided == distinct == n,
        "errored": errored, "batches": len(job.batches),
        "statuses": dict(Counter(e["status"] for e in job.batches)),
        "requests_per_round": dict(sorted(by_round.items())),
        "unanswered_per_round": dict(sorted(missing_after.items())),
        "resubmitted_exactly_the_unanswered": resubmitted_exactly_missing,
        "lines_sent": stats["lines"], "lines_sent_twice": stats["submitted_twice"],
        "polls": polls, "wall_seconds": round(wall, 1),
        "ingest_cpu_ms_per_paper": round(cpu * 1000 / n, 3), "target_ingest_ms": 0.5,
        "submit_cpu_ms_per_paper": round(drive.submit_cpu * 1000 / n, 3),
        "database": database_vendor(),
    }


def restart(n: int) -> dict:
    with fake_provider(latency=0) as base_url:
        setup_service("batch_restart", base_url, CRYSTALLISE_BATCH_POLL_SECONDS=0, CRYSTALLISE_BATCH_MAX_REQUESTS=250)
        fake_batches(base_url, {"steps": 3})
        from datetime import timedelta

        from django.utils import timezone

        from crystallise.jobs.lifecycle import recover
        from crystallise.tasks import poll_batches
        from screening.models import ScreeningJob
        from screening.services import job_run

        job_id = submit_job(api_client(), papers(n), mode="batch")
        job_run(job_id=job_id)  # submits every batch, then the worker "dies"
        submitted = fake_batches(base_url, stats=True)["batches"]
        ScreeningJob.objects.filter(pk=job_id).update(heartbeat_at=timezone.now() - timedelta(hours=1))
        resumed = recover(model=ScreeningJob)["resumed"]
        job_run(job_id=job_id)  # the re-enqueued run, on another worker: a tick that polls the recorded batches
        polls = 0
        while ScreeningJob.objects.filter(pk=job_id, status="running").exists() and polls < 50:
            poll_batches()
            polls += 1
        job = ScreeningJob.objects.get(pk=job_id)
        stats = fake_batches(base_url, stats=True)
    return {"papers": n, "status": job.status, "screened": job.screened, "batches_before_restart": submitted,
            "batches_after": stats["batches"], "recovery_resumed": resumed, "polls_after_restart": polls,
            "lines_sent_twice": stats["submitted_twice"],
            "nothing_submitted_twice": stats["batches"] == submitted and stats["submitted_twice"] == 0}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--part", choices=["cost", "resilience", "restart", "all"], default="all")
    parser.add_argument("--papers", type=int, default=10_000, help="papers of the resilience run")
    parser.add_argument("--chunk", type=int, default=2_500, help="requests per batch in the resilience run")
    parser.add_argument("--cost-papers", type=int, default=1_000, help="papers of the cost run")
    args = parser.parse_args()
    if args.part == "all":
        # One process per part: each sets Django up on its own fresh database.
        for part in ("cost", "resilience", "restart"):
            subprocess.run([sys.executable, __file__, "--part", part, "--papers", str(args.papers),
                            "--chunk", str(args.chunk), "--cost-papers", str(args.cost_papers)], check=True)
        return
    run = {"cost": lambda: cost(args.cost_papers), "resilience": lambda: resilience(args.papers, args.chunk),
           "restart": lambda: restart(1000)}[args.part]
    write_results(f"batch_{args.part}", run())


if __name__ == "__main__":
    main()
