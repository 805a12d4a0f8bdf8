"""Polling: GET /v1/screening/jobs/{id} of a running 5,000-paper job under 100 concurrent clients.

python bench/polling.py            # gunicorn, 100 clients, 15 s
The job runs in a real worker process against the fake provider (300 ms) while
an asyncio load generator (a minimal HTTP/1.1 client on uvloop, one connection
per client) polls
through gunicorn with an admin-created API key. Each client polls once per
--interval (1 s; the clients' phases are spread over the first interval);
--interval 0 makes it a closed loop (every client as fast as it can), which
measures saturation throughput instead. Target: p99 ≤ 20 ms, 0 errors.

Why not wrk: wrk opens all its connections first and, when paced by a script's
delay(), sends each request after the pause on an already open connection.
gunicorn (sync, and gthread for a new connection) gives a connection a worker
as soon as it is accepted, so wrk's pauses were measured as queueing (p50 in
the hundreds of ms). Real pollers connect when they have a request to send.

Besides latency it reports the CPU each process used during the load window:
the web processes' CPU per poll is the figure that does not depend on what
else the machine is doing. The fake provider stands in for a machine elsewhere:
it runs at the lowest CPU priority (nice 19, as in every benchmark) so it takes
the spare CPU, not the service's (--provider-nice 0 to compare). The load
generator is not niced: it times the answers, and its own waits for CPU would
count as latency.
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
from pathlib import Path

import uvloop
from common import ROOT, api_client, fake_provider, papers, setup_service, submit_job, write_results


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a process and its live children (Linux /proc)."""
    total = 0.0
    tick = os.sysconf("SC_CLK_TCK")
    pids = [pid]
    while pids:
        current = pids.pop()
        try:
            fields = Path(f"/proc/{current}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / tick
            for task in Path(f"/proc/{current}/task").iterdir():
                pids += [int(c) for c in (task / "children").read_text().split()]
        except (FileNotFoundError, ProcessLookupError):
            continue
    return total


def run_clients(url: str, key: str, clients: int, seconds: float, interval: float) -> dict:
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        latencies, errors, active = runner.run(load(url, key, clients, seconds, interval))
    latencies.sort()
    pct = lambda p: round(1000 * latencies[min(len(latencies) - 1, int(p * len(latencies)))], 2)  # noqa: E731
    return {
        "requests": len(latencies), "errors": errors, "answers_while_running": active,
        "p50_ms": pct(0.50), "p90_ms": pct(0.90), "p99_ms": pct(0.99), "p99_9_ms": pct(0.999),
        "max_ms": round(1000 * latencies[-1], 2), "mean_ms": round(1000 * statistics.fmean(latencies), 2),
    }


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def load(url: str, key: str, clients: int, seconds: float, interval: float) -> tuple[list[float], int, int]:
    """Each client: one HTTP/1.1 GET per interval on its own connection (kept alive when the server allows).

    A minimal client on asyncio streams: a general-purpose HTTP client cost ~1.8 ms
    of CPU per request here, CPU taken from the service on the same 2 cores.
    """
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    request = (f"GET {parts.path} HTTP/1.1\r\nHost: {parts.netloc}\r\nX-API-Key: {key}\r\n"
               "Accept: application/json\r\n\r\n").encode()
    latencies: list[float] = []
    errors = 0
    active = 0
    deadline = time.perf_counter() + seconds

    async def get(conn):
        if conn[0] is None:
            conn[0], conn[1] = await asyncio.open_connection(parts.hostname, parts.port)
        reader, writer = conn
        writer.write(request)
        status = int((await reader.readline()).split()[1])
        length, close = 0, False
        while (line := await reader.readline()) not in (b"\r\n", b""):
            name, _, value = line.partition(b":")
            name = name.strip().lower()
            if name == b"content-length":
                length = int(value)
            elif name == b"connection" and value.strip().lower() == b"close":
                close = True
        body = await reader.readexactly(length)
        if close:
            writer.close()
            conn[0] = conn[1] = None
        return status, body

    async def client(index):
        nonlocal errors, active
        conn = [None, None]
        # Spread the clients' phases over one interval, as independent pollers would be.
        await asyncio.sleep(interval * index / clients)
        while time.perf_counter() < deadline:
            t0 = time.perf_counter()
            try:
                status, body = await get(conn)
                if status != 200:
                    errors += 1
                elif b'"status":"running"' in body:
                    active += 1
            except (OSError, ValueError, IndexError, asyncio.IncompleteReadError):
                errors += 1
                conn[0] = conn[1] = None
            elapsed = time.perf_counter() - t0
            latencies.append(elapsed)
            await asyncio.sleep(max(0.0, interval - elapsed))
        if conn[1] is not None:
            conn[1].close()

    await asyncio.gather(*(client(i) for i in range(clients)))
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
    parser.add_argument("--provider-nice", type=int, default=19, help="CPU niceness of the fake provider")
    args = parser.parse_args()
    with fake_provider(latency=args.latency, nice=args.provider_nice) as base_url:
        setup_service("polling", base_url, CRYSTALLISE_LLM_CONCURRENCY=64)
        # An admin-created key, as a deployed service's clients have (dev mode is not a deployment).
        from crystallise.models import ApiKey

        _, secret = ApiKey.objects.create_key(name="bench")
        client = api_client()
        client.credentials(HTTP_X_API_KEY=secret)
        job_id = submit_job(client, papers(args.papers))
        # Worker and web inherit setup_service's environment (production settings: DEBUG off).
        worker = subprocess.Popen([sys.executable, "-c", "import django; django.setup(); "
                                   f"from screening.services import job_run; job_run(job_id='{job_id}')"],
                                  cwd=ROOT)
        port = free_port()
        web = subprocess.Popen([sys.executable, "-m", "gunicorn", "crystallise_site.wsgi", "--bind", f"127.0.0.1:{port}",
                                "--workers", str(args.web_workers), "--threads", str(args.threads), "--log-level", "warning"], cwd=ROOT)
        try:
            url = f"http://127.0.0.1:{port}/v1/screening/jobs/{job_id}"
            for _ in range(100):
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                    break
                except OSError:
                    time.sleep(0.1)
            asyncio.run(load(url, secret, 5, 1.0, 0))  # warm every gunicorn worker's imports and connections
            # Measure while the job is screening: the worker process here is started
            # for the benchmark (a deployed qcluster worker has imported everything
            # long before), so its start-up and the job's preparation are not polled.
            from screening.models import ScreeningJob

            deadline = time.monotonic() + 120
            while ScreeningJob.objects.values_list("screened", flat=True).get(pk=job_id) == 0:
                if time.monotonic() > deadline or worker.poll() is not None:
                    raise RuntimeError("the job did not start screening")
                time.sleep(0.1)
            cpu_before = {"web": cpu_seconds(web.pid), "worker": cpu_seconds(worker.pid), "loadgen": time.process_time()}
            started = time.perf_counter()
            figures = run_clients(url, secret, args.clients, args.seconds, args.interval)
            elapsed = time.perf_counter() - started
            cpu = {name: cpu_seconds(proc.pid) - cpu_before[name] for name, proc in (("web", web), ("worker", worker))}
            cpu["loadgen"] = time.process_time() - cpu_before["loadgen"]
        finally:
            web.terminate()
            worker.terminate()
            web.wait()
            worker.wait()
    write_results("polling", {
        "clients": args.clients, "poll_interval_s": args.interval, "seconds": args.seconds,
        "web_workers": args.web_workers, "threads": args.threads, "provider_nice": args.provider_nice,
        "requests_per_s": round(figures["requests"] / elapsed, 1), **figures,
        "web_cpu_ms_per_poll": round(1000 * cpu["web"] / max(1, figures["requests"]), 2),
        "web_cpu_share": round(cpu["web"] / elapsed, 2), "worker_cpu_share": round(cpu["worker"] / elapsed, 2),
        "load_generator_cpu_share": round(cpu["loadgen"] / elapsed, 2),
        "target_p99_ms": 20,
    })


if __name__ == "__main__":
    main()
