"""Cost: gpt-5-nano USD per 1,000 abstracts, from the tokens the fake provider counted.

python bench/cost.py               # 1,000 papers, 2 inclusion + 2 exclusion criteria
The fake counts prompt tokens with o200k_base, output tokens of what it
answers, and simulates the provider's prefix cache (≥ 1,024-token prompts, in
128-token steps). Priced with DEFAULT_PRICING_PER_1M. Target: ≤ $0.08.
"""

from __future__ import annotations

import argparse
from decimal import Decimal

from common import api_client, fake_provider, fake_stats, papers, run_job, setup_service, write_results


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--papers", type=int, default=1000)
    parser.add_argument("--reasoning-tokens", type=int, default=0, help="reasoning tokens the fake adds per answer")
    args = parser.parse_args()
    with fake_provider(latency=0, reasoning_tokens=args.reasoning_tokens) as base_url:
        setup_service("cost", base_url)
        from crystallise.config import DEFAULT_PRICING_PER_1M
        from crystallise.tokens import Usage, cost_usd

        body, _ = run_job(api_client(), papers(args.papers))
        stats = fake_stats(base_url)
    counted = Usage(input_tokens=stats["prompt_tokens"], cached_input_tokens=stats["cached_tokens"],
                    output_tokens=stats["completion_tokens"], reasoning_tokens=stats["reasoning_tokens"])
    per_1000 = cost_usd("gpt-5-nano", counted) * Decimal(1000) / Decimal(args.papers)
    price = DEFAULT_PRICING_PER_1M["gpt-5-nano"]
    write_results("cost", {
        "papers": args.papers, "requests": stats["requests"],
        "input_tokens_per_paper": round(counted.input_tokens / args.papers, 1),
        "cached_tokens_per_paper": round(counted.cached_input_tokens / args.papers, 1),
        "output_tokens_per_paper": round(counted.output_tokens / args.papers, 1),
        "input_usd_per_1000": float(Decimal(counted.input_tokens - counted.cached_input_tokens) * price["input"] / 1_000_000 * 1000 / args.papers),
        "output_usd_per_1000": float(Decimal(counted.output_tokens) * price["output"] / 1_000_000 * 1000 / args.papers),
        "usd_per_1000_abstracts": float(round(per_1000, 5)),
        "job_cost_usd_matches": abs(Decimal(str(body["cost_usd"])) - cost_usd("gpt-5-nano", counted)) < Decimal("0.000001"),
        "target_usd": 0.08,
    })


if __name__ == "__main__":
    main()
