"""Overhead: the pipeline's own CPU per paper (worker + DB writes) with a 0 ms provider.

python bench/overhead.py            # 2,000 papers
Measured as this process's CPU time around the job run (the fake provider and
the database server run in other processes). Target: ≤ 2 ms per paper.
"""

from __future__ import annotations

import argparse
import time

from common import api_client, fake_provider, papers, setup_service, submit_job, write_results


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--papers", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--profile", help="write a pyinstrument text profile here")
    args = parser.parse_args()
    with fake_provider(latency=0) as base_url:
        setup_service("overhead", base_url, CRYSTALLISE_LLM_CONCURRENCY=args.concurrency)
        from django.db import connection

        from screening.services import job_run

        client = api_client()
        job_id = submit_job(client, papers(args.papers))
        profiler = None
        if args.profile:
            from pyinstrument import Profiler

            profiler = Profiler()
            profiler.start()
        wall0, cpu0 = time.perf_counter(), time.process_time()
        job_run(job_id=job_id)
        wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
        if profiler:
            profiler.stop()
            with open(args.profile, "w") as fh:
                fh.write(profiler.output_text())
        status = client.get(f"/v1/screening/jobs/{job_id}").json()["status"]
    write_results("overhead", {
        "papers": args.papers, "database": connection.vendor, "status": status,
        "wall_s": round(wall, 2), "cpu_s": round(cpu, 2),
        "cpu_ms_per_paper": round(1000 * cpu / args.papers, 3), "target_ms": 2.0,
    })


if __name__ == "__main__":
    main()
