"""Rate limit: one job against a provider allowing R requests/minute (and optionally T tokens/minute),
advertised in x-ratelimit-* headers, 429 + Retry-After past it; default settings (concurrency ceiling 512).

python bench/ratelimit.py                    # 2,000 papers, 2 s latency, 6,000 RPM: request-bound
python bench/ratelimit.py --tpm 2400000      # the same account bound by tokens (~800 counted per call)
python bench/ratelimit.py --papers 100 --latency 0.05 --rpm 1200   # smoke

Fill: what the provider admitted per second, from the first admitted call to the last, over what it
allows (requests, or tokens counted against TPM: prompt + output budget); the job's papers/s over its
whole wall time (which also holds one latency of tail) is reported too. Targets: fill ≥ 0.90,
refused ≤ 1 % of calls.
"""

from __future__ import annotations

import argparse
import collections

from common import (
    api_client,
    fake_arrivals,
    fake_provider,
    fake_stats,
    limiter_writes,
    papers,
    run_job,
    setup_service,
    write_results,
)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rpm", type=int, default=6000)
    parser.add_argument("--tpm", type=int, default=None)
    parser.add_argument("--papers", type=int, default=2000)
    parser.add_argument("--latency", type=float, default=2.0)
    parser.add_argument("--concurrency", type=int, default=None, help="ceiling (default: the service's default)")
    args = parser.parse_args()
    name = "ratelimit_tpm" if args.tpm else "ratelimit"
    env = {} if args.concurrency is None else {"CRYSTALLISE_LLM_CONCURRENCY": args.concurrency}
    with fake_provider(latency=args.latency, rpm=args.rpm, tpm=args.tpm, log_size=args.papers * 3) as base_url:
        setup_service(name, base_url, **env)
        from django.db import connection

        body, wall = run_job(api_client(), papers(args.papers))
        writes = limiter_writes()
        stats, arrivals = fake_stats(base_url), fake_arrivals(base_url)
    admitted = [a["t"] for a in arrivals if a["status"] == 200]
    span = admitted[-1] - admitted[0]
    refused = stats["status"].get("429", 0)
    figures = {
        "papers": args.papers, "latency_s": args.latency, "rpm_limit": args.rpm, "tpm_limit": args.tpm,
        "database": connection.vendor, "status": body["status"], "failed_papers": body["progress"]["errored"],
        "wall_s": round(wall, 2), "papers_per_s": round(args.papers / wall, 1),
        "fill_requests": round(len(admitted) / span / (args.rpm / 60), 3),
    }
    if args.tpm:
        figures["tokens_counted_per_call"] = round(stats["rate_tokens"] / len(admitted))
        figures["fill_tokens"] = round(stats["rate_tokens"] / span / (args.tpm / 60), 3)
    per_call = stats["rate_tokens"] / len(admitted) if args.tpm else 0
    allowed_per_minute = min(args.rpm, args.tpm / per_call) if args.tpm else args.rpm
    figures.update({
        "allowed_calls_per_s": round(allowed_per_minute / 60, 1),
        "fill_over_wall": round(args.papers / wall / (allowed_per_minute / 60), 3),
        "requests": stats["requests"], "responses_429": refused,
        "refused_fraction": round(refused / stats["requests"], 4), "max_in_flight": stats["max_in_flight"],
        # When the refusals came: seconds after the first call -> count.
        "refused_by_second": dict(sorted(collections.Counter(
            int(a["t"] - arrivals[0]["t"]) for a in arrivals if a["status"] == 429).items())),
        "limiter_db_writes": writes,
        "limiter_writes_per_100ms": round(writes / (wall * 10), 3),
        "target_fill": 0.9, "target_refused": 0.01,
    })
    write_results(name, figures)


if __name__ == "__main__":
    main()
