"""End-to-end screening benchmark: one job through the API and the worker path.

python bench/screening_job.py --papers 1000 --latency 0.3 --concurrency 64
Starts its own OpenAI-compatible fake (separate process), uses a fresh
database (DATABASE_URL if set, else a temporary SQLite file), submits the
job over the API (Django test client), runs it with the worker code, and
prints wall time, the ideal bound ceil(N/C)·latency, and the ratio.
Results go to bench/results/screening_job.json.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def real_papers(n: int) -> list[dict]:
    data = ROOT.parent / "shared" / "data" / "cohen_2006"
    rows = []
    for name in ("Triptans.csv", "ADHD.csv"):
        with (data / name).open(newline="", encoding="utf-8") as fh:
            rows += [r for r in csv.DictReader(fh) if r["abstract"].strip()]
    return [{"id": f"b{i}", "title": rows[i % len(rows)]["title"], "abstract": rows[i % len(rows)]["abstract"]}
            for i in range(n)]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--papers", type=int, default=1000)
    parser.add_argument("--latency", type=float, default=0.3)
    parser.add_argument("--concurrency", type=int, default=64)
    args = parser.parse_args()

    fake = subprocess.Popen([sys.executable, "-m", "tests.fake_openai", "--port", "0", "--latency", str(args.latency)],
                            cwd=ROOT, stdout=subprocess.PIPE, text=True)
    base_url = fake.stdout.readline().split()[1]
    tmp = tempfile.mkdtemp()
    os.environ.setdefault("DATABASE_URL", f"sqlite:///{tmp}/bench.sqlite3")
    os.environ.update(DJANGO_SETTINGS_MODULE="crystallise_site.settings.base", DJANGO_DEBUG="true",
                      CRYSTALLISE_OPENAI_BASE_URL=base_url, CRYSTALLISE_OPENAI_API_KEY="sk-bench",
                      CRYSTALLISE_LLM_BACKEND="openai", CRYSTALLISE_LLM_CONCURRENCY=str(args.concurrency),
                      CRYSTALLISE_LOG_LEVEL="WARNING", DJANGO_ALLOWED_HOSTS="testserver,localhost")
    import django

    django.setup()
    from django.core.management import call_command
    from django.db import connection
    from rest_framework.test import APIClient

    if connection.vendor == "postgresql":
        call_command("flush", "--noinput", verbosity=0)
    call_command("migrate", verbosity=0)
    from screening.services import job_run

    try:
        client = APIClient()
        client.credentials(HTTP_X_API_KEY="bench")
        papers = real_papers(args.papers)
        criteria = {"inclusion": ["randomized controlled trial", "adults with migraine or ADHD"],
                    "exclusion": ["animal study", "case report"]}
        t0 = time.perf_counter()
        response = client.post("/v1/screening/jobs", {"criteria": criteria, "papers": papers}, format="json")
        submit = time.perf_counter() - t0
        job_id = response.json()["id"]
        t1, c1 = time.perf_counter(), time.process_time()
        if os.environ.get("BENCH_PROFILE"):
            from pyinstrument import Profiler

            profiler = Profiler(async_mode="disabled")
            profiler.start()
        if os.environ.get("BENCH_CPROFILE"):
            import cProfile

            cProfile.runctx("job_run(job_id=job_id)", globals(), locals(), os.environ["BENCH_CPROFILE"])
        else:
            job_run(job_id=job_id)
        wall, cpu = time.perf_counter() - t1, time.process_time() - c1
        if os.environ.get("BENCH_PROFILE"):
            profiler.stop()
            Path(os.environ["BENCH_PROFILE"]).write_text(profiler.output_text(unicode=False, show_all=False))
        body = client.get(f"/v1/screening/jobs/{job_id}").json()
        ideal = math.ceil(args.papers / args.concurrency) * args.latency
        figures = {
            "papers": args.papers, "latency_s": args.latency, "concurrency": args.concurrency,
            "database": connection.vendor, "submit_s": round(submit, 3), "wall_s": round(wall, 3),
            "ideal_s": round(ideal, 3), "ratio": round(wall / ideal, 3) if ideal else None,
            "papers_per_s": round(args.papers / wall, 1),
            "worker_cpu_ms_per_paper": round(1000 * cpu / args.papers, 3), "status": body["status"], "progress": body["progress"],
            "usage": body["usage"], "cost_usd": body["cost_usd"], "estimated_cost_usd": body["estimated_cost_usd"],
        }
    finally:
        fake.terminate()
    for key, value in figures.items():
        print(f"{key:>20}  {value}")
    out = ROOT / "bench" / "results"
    out.mkdir(parents=True, exist_ok=True)
    (out / "screening_job.json").write_text(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
