"""Run the web server and a django-q2 worker together; Ctrl-C stops both."""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, default=8000)
    args = parser.parse_args()
    python = sys.executable
    url = f"http://127.0.0.1:{args.port}"
    procs = [
        subprocess.Popen([python, "manage.py", "runserver", "--noreload", f"127.0.0.1:{args.port}"], cwd=ROOT),
        subprocess.Popen([python, "manage.py", "qcluster"], cwd=ROOT),
    ]
    print(
        f"""
Crystallise is starting: web + worker.
  API        {url}/v1/   (Swagger UI: {url}/v1/docs/, schema: {url}/v1/schema/)
  Health     {url}/healthz
  Admin      {url}/admin/   (first login: .venv/bin/python manage.py create_operator admin — prints a password once)

Try it (dev mode accepts any X-API-Key until you create a key):
  curl -s {url}/v1/screening/jobs                       # 401: no key
  curl -s -H 'X-API-Key: demo' {url}/v1/screening/jobs  # 200
  curl -s -H 'X-API-Key: demo' -H 'Content-Type: application/json' -X POST {url}/v1/screening/jobs \\
    -d '{{"criteria": {{"inclusion": ["randomized trial of migraine treatment"], "exclusion": []}}, "papers": [{{"id": "p1", "title": "Sumatriptan for acute migraine", "abstract": "A randomized placebo-controlled trial of sumatriptan in migraine."}}]}}'

Press Ctrl-C to stop both processes.
""",
        flush=True,
    )
    stopping = False

    def stop(*_):
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    code = 0
    try:
        while not stopping:
            for proc in procs:
                if proc.poll() is not None:
                    print(f"{proc.args[2]} exited with {proc.returncode}; stopping.", flush=True)
                    code = proc.returncode or 1
                    stopping = True
            time.sleep(0.3)
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        deadline = time.time() + 10
        for proc in procs:
            try:
                proc.wait(timeout=max(0.1, deadline - time.time()))
            except subprocess.TimeoutExpired:
                proc.kill()
    return code


if __name__ == "__main__":
    os.chdir(ROOT)
    sys.exit(main())
