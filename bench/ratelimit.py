"""Rate limit: a provider allowing R requests/minute (429 + Retry-After above it).

python bench/ratelimit.py               # R = 600/min, 300 papers, concurrency 64
The client reads x-ratelimit-limit-requests and paces itself just under R
instead of hammering and backing off. Target: throughput ≥ 0.9 × R, 0 failed papers.
"""

from __future__ import annotations

import argparse

from common import api_client, fake_provider, fake_stats, papers, run_job, setup_service, write_results


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rpm", type=int, default=600)
    parser.add_argument("--papers", type=int, default=300)
    parser.add_argument("--latency", type=float, default=0.2)
    parser.add_argument("--concurrency", type=int, default=64)
    args = parser.parse_args()
    with fake_provider(latency=args.latency, rpm=args.rpm) as base_url:
        setup_service("ratelimit", base_url, CRYSTALLISE_LLM_CONCURRENCY=args.concurrency)
        body, wall = run_job(api_client(), papers(args.papers))
        stats = fake_stats(base_url)
    per_minute = args.papers / wall * 60
    write_results("ratelimit", {
        "rpm_limit": args.rpm, "papers": args.papers, "status": body["status"],
        "failed_papers": body["progress"]["errored"], "wall_s": round(wall, 2),
        "papers_per_minute": round(per_minute, 1), "ratio_to_limit": round(per_minute / args.rpm, 3),
        "responses_429": stats["status"].get("429", 0), "requests": stats["requests"], "target_ratio": 0.9,
    })


if __name__ == "__main__":
    main()
