"""Scale: a 100,000-paper job. Worker peak RSS, and peak RSS of the web process
while it streams the job's CSV export (compared with a 10,000-paper export: flat
means it does not grow with the number of results).

python bench/scale.py                      # 100,000 papers (several minutes)
python bench/scale.py --papers 5000        # quicker
Targets: worker ≤ 300 MB; export RSS flat.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

from common import ROOT, fake_provider, papers, setup_service, write_results

# Peak RSS from /proc (VmHWM): ru_maxrss would include the parent's peak, which
# Linux carries across fork+exec.
HWM = """
def hwm_mb():
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
"""

WORKER = HWM + """
import json, sys, time, django
django.setup()
from screening.services import job_run
t0 = time.perf_counter()
status = job_run(job_id=sys.argv[1])
print(json.dumps({"status": status, "wall_s": time.perf_counter() - t0,
                  "peak_rss_mb": hwm_mb()}))
"""

EXPORT = HWM + """
import json, sys, django
django.setup()
from rest_framework.test import APIClient
client = APIClient(); client.credentials(HTTP_X_API_KEY="bench")
client.get("/healthz")
warm = hwm_mb()
response = client.get(f"/v1/screening/jobs/{sys.argv[1]}/results", {"format": "csv"})
size = 0
for chunk in response.streaming_content:
    size += len(chunk)
print(json.dumps({"bytes": size, "rss_before_mb": warm, "peak_rss_mb": hwm_mb()}))
"""


def run_child(code: str, *args: str) -> dict:
    out = subprocess.run([sys.executable, "-c", code, *args], cwd=ROOT, env=os.environ, capture_output=True, text=True)
    if out.returncode:
        raise RuntimeError(out.stderr[-2000:])
    return json.loads(out.stdout.strip().splitlines()[-1])


def create(n: int, seed: int) -> str:
    from common import CRITERIA

    from crystallise.auth import Caller, fingerprint
    from screening.services import job_create

    caller = Caller(label="bench", fingerprint=fingerprint("bench"))
    job, _ = job_create(caller=caller, criteria=CRITERIA, model="gpt-5-nano",
                        papers=papers(n, seed=seed), request_openai_key=None, enqueue=False)
    return str(job.pk)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--papers", type=int, default=100_000)
    parser.add_argument("--small", type=int, default=10_000, help="export size to compare against")
    parser.add_argument("--concurrency", type=int, default=64)
    args = parser.parse_args()
    with fake_provider(latency=0) as base_url:
        setup_service("scale", base_url, CRYSTALLISE_LLM_CONCURRENCY=args.concurrency)
        from django.db import connection

        t0 = time.perf_counter()
        big = create(args.papers, seed=1)
        submit_s = time.perf_counter() - t0
        small = create(args.small, seed=2)
        connection.close()
        worker = run_child(WORKER, big)
        run_child(WORKER, small)
        export_big = run_child(EXPORT, big)
        export_small = run_child(EXPORT, small)
    growth_big = export_big["peak_rss_mb"] - export_big["rss_before_mb"]
    growth_small = export_small["peak_rss_mb"] - export_small["rss_before_mb"]
    write_results("scale", {
        "papers": args.papers, "database": connection.vendor, "create_s": round(submit_s, 1),
        "worker_status": worker["status"], "worker_wall_s": round(worker["wall_s"], 1),
        "worker_papers_per_s": round(args.papers / worker["wall_s"], 1),
        "worker_peak_rss_mb": round(worker["peak_rss_mb"], 1), "target_worker_mb": 300,
        "export_bytes": export_big["bytes"], "export_peak_rss_mb": round(export_big["peak_rss_mb"], 1),
        "export_rss_growth_mb": round(growth_big, 1),
        f"export_rss_growth_mb_at_{args.small}": round(growth_small, 1),
    })


if __name__ == "__main__":
    main()
