"""Throughput: wall time of one screening job against the ideal bound ceil(N/C)·latency.

python bench/throughput.py                      # 5,000 papers, 300 ms, concurrency 64
python bench/throughput.py --papers 200 --latency 0.05   # smoke
Target: ratio ≤ 1.15.
"""

from __future__ import annotations

import argparse
import math

from common import api_client, fake_provider, papers, run_job, setup_service, write_results


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--papers", type=int, default=5000)
    parser.add_argument("--latency", type=float, default=0.3)
    parser.add_argument("--concurrency", type=int, default=64)
    args = parser.parse_args()
    with fake_provider(latency=args.latency) as base_url:
        setup_service("throughput", base_url, CRYSTALLISE_LLM_CONCURRENCY=args.concurrency)
        from django.db import connection

        body, wall = run_job(api_client(), papers(args.papers))
    ideal = math.ceil(args.papers / args.concurrency) * args.latency
    write_results("throughput", {
        "papers": args.papers, "latency_s": args.latency, "concurrency": args.concurrency,
        "database": connection.vendor, "status": body["status"], "errored": body["progress"]["errored"],
        "wall_s": round(wall, 2), "ideal_s": round(ideal, 2), "ratio": round(wall / ideal, 3),
        "papers_per_s": round(args.papers / wall, 1), "target_ratio": 1.15,
    })


if __name__ == "__main__":
    main()
