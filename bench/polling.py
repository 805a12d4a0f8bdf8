"""Polling: GET /v1/screening/jobs/{id} of a running 5,000-paper job under 100 concurrent clients.

python bench/polling.py            # gunicorn, 100 clients, 15 s
The job runs in a real worker process against the fake provider (300 ms) while
an asyncio load generator (aiohttp, one connection per client) polls through
gunicorn. Each client polls once per --interval (1 s, as the docs recommend);
--interval 0 makes it a closed loop (every client as fast as it can), which
measures saturation throughput instead. Target: p99 ≤ 20 ms, 0 errors.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import statistics
import subprocess
import sys
import time

from common import ROOT, api_client, fake_provider, fresh_database_url, papers, setup_django, submit_job, write_results


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def load(url: str, clients: int, seconds: float, interval: float) -> tuple[list[float], int, int]:
    import aiohttp

    latencies: list[float] = []
    errors = 0
    active = 0
    deadline = time.perf_counter() + seconds

    async def client(session, index):
        nonlocal errors, active
        # Spread the clients' phases over one interval, as independent pollers would be.
        await asyncio.sleep(interval * index / clients)
        while time.perf_counter() < deadline:
            t0 = time.perf_counter()
            try:
                async with session.get(url, headers={"X-API-Key": "bench"}) as response:
                    body = await response.json()
                    if response.status != 200:
                        errors += 1
                    elif body["status"] == "running":
                        active += 1
            except aiohttp.ClientError:
                errors += 1
            elapsed = time.perf_counter() - t0
            latencies.append(elapsed)
            await asyncio.sleep(max(0.0, interval - elapsed))

    connector = aiohttp.TCPConnector(limit=clients)
    async with aiohttp.ClientSession(connector=connector) as session:
        await asyncio.gather(*(client(session, i) for i in range(clients)))
    return latencies, errors, active


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--papers", type=int, default=5000)
    parser.add_argument("--clients", type=int, default=100)
    parser.add_argument("--latency", type=float, default=0.3, help="provider latency while the job runs")
    parser.add_argument("--seconds", type=float, default=15)
    parser.add_argument("--interval", type=float, default=1.0, help="seconds between one client's polls (0: closed loop)")
    parser.add_argument("--web-workers", type=int, default=2, help="gunicorn workers (default: one per core here)")
    parser.add_argument("--threads", type=int, default=1, help="threads per gunicorn worker (gthread when > 1)")
    args = parser.parse_args()
    with fake_provider(latency=args.latency) as base_url:
        db_url = fresh_database_url("polling")
        env = dict(CRYSTALLISE_OPENAI_BASE_URL=base_url, CRYSTALLISE_OPENAI_API_KEY="sk-bench", CRYSTALLISE_LLM_CONCURRENCY=64)
        setup_django(db_url, **env)
        job_id = submit_job(api_client(), papers(args.papers))
        # Production settings for the served process: DEBUG off (no query log, no static autorefresh).
        child_env = {**os.environ, "DJANGO_DEBUG": "false", "DJANGO_SECRET_KEY": "bench-" + "x" * 50}
        worker = subprocess.Popen([sys.executable, "-c", "import django; django.setup(); "
                                   f"from screening.services import job_run; job_run(job_id='{job_id}')"],
                                  cwd=ROOT, env=child_env)
        port = free_port()
        web = subprocess.Popen([sys.executable, "-m", "gunicorn", "crystallise_site.wsgi", "--bind", f"127.0.0.1:{port}",
                                "--workers", str(args.web_workers), "--threads", str(args.threads), "--log-level", "warning"], cwd=ROOT, env=child_env)
        try:
            url = f"http://127.0.0.1:{port}/v1/screening/jobs/{job_id}"
            for _ in range(100):
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                    break
                except OSError:
                    time.sleep(0.1)
            asyncio.run(load(url, 5, 1.0, 0))  # warm every gunicorn worker's imports and connections
            latencies, errors, active = asyncio.run(load(url, args.clients, args.seconds, args.interval))
        finally:
            web.terminate()
            worker.terminate()
            web.wait()
            worker.wait()
    latencies.sort()
    pct = lambda p: round(1000 * latencies[min(len(latencies) - 1, int(p * len(latencies)))], 2)  # noqa: E731
    write_results("polling", {
        "clients": args.clients, "poll_interval_s": args.interval, "seconds": args.seconds, "web_workers": args.web_workers, "threads": args.threads,
        "requests": len(latencies), "requests_per_s": round(len(latencies) / args.seconds, 1),
        "answers_while_running": active, "errors": errors,
        "p50_ms": pct(0.50), "p90_ms": pct(0.90), "p99_ms": pct(0.99), "max_ms": round(1000 * latencies[-1], 2),
        "mean_ms": round(1000 * statistics.fmean(latencies), 2), "target_p99_ms": 20,
    })


if __name__ == "__main__":
    main()
