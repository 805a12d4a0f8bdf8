"""Shared harness for the benchmarks: a fake provider in its own process, a
fresh database, deterministic realistic papers, and result files.

Every benchmark is self-contained and prints a table; figures are written to
bench/results/<name>.json. PostgreSQL is used when BENCH_DATABASE_URL or
DATABASE_URL points at a server (a fresh database is created next to it),
else a temporary SQLite file.
"""

from __future__ import annotations

import csv
import json
import os
import random
import re
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# Smoke runs (CI) write elsewhere so they never overwrite measured figures.
RESULTS = Path(os.environ.get("BENCH_RESULTS") or ROOT / "bench" / "results")
sys.path.insert(0, str(ROOT))

CRITERIA = {
    "research_question": "Do triptans or ADHD medications improve outcomes in randomized trials of adults?",
    "inclusion": ["randomized controlled trial", "adults with migraine or ADHD"],
    "exclusion": ["animal study", "case report"],
}


@contextmanager
def fake_provider(nice: int = 19, **flags):
    """Start tests.fake_openai in its own process; yields its base URL.

    The fake stands in for a provider on other machines: at the lowest CPU
    priority (nice 19) it takes only CPU the service leaves idle, instead of
    competing with it on the two cores it would never share in production.
    """
    args = (["nice", "-n", str(nice)] if nice else []) + [sys.executable, "-m", "tests.fake_openai", "--port", "0"]
    for name, value in flags.items():
        if value is not None:
            args += [f"--{name.replace('_', '-')}", str(value)]
    proc = subprocess.Popen(args, cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        if not line.startswith("READY"):
            raise RuntimeError(f"fake provider did not start: {line!r}")
        yield line.split()[1]
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def fake_stats(base_url: str) -> dict:
    import urllib.request

    with urllib.request.urlopen(base_url.rsplit("/v1", 1)[0] + "/_fake/stats") as response:
        return json.load(response)


def fake_arrivals(base_url: str) -> list[dict]:
    """Every request the fake kept (--log-size), oldest first: arrival time t, status, the body's prompt_cache_key."""
    import urllib.request

    url = base_url.rsplit("/v1", 1)[0] + "/_fake/requests?last=10000000&brief=1"
    with urllib.request.urlopen(url) as response:
        return json.load(response)


def limiter_writes() -> int:
    """Rows the shared rate limiter has inserted, updated or deleted in this database (PostgreSQL's own
    statistics; 0 on SQLite, which keeps none)."""
    from django.db import connection

    if connection.vendor != "postgresql":
        return 0
    time.sleep(1.5)  # backends report their counters to the statistics at most once a second
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_stat_clear_snapshot()")
        cursor.execute("SELECT coalesce(sum(n_tup_ins + n_tup_upd + n_tup_del), 0) FROM pg_stat_user_tables "
                       "WHERE relname IN ('crystallise_ratelimitlease', 'crystallise_ratelimitkey')")
        return int(cursor.fetchone()[0])


def fresh_database_url(name: str) -> str:
    """A new empty database for this run."""
    server = os.environ.get("BENCH_DATABASE_URL") or os.environ.get("DATABASE_URL")
    if server and server.startswith("postgres"):
        base, _, _ = server.rpartition("/")
        db = f"crystallise_bench_{name}"
        # The CHECKPOINT flushes what dropping and creating wrote now, not during the measurement.
        for sql in (f"DROP DATABASE IF EXISTS {db}", f"CREATE DATABASE {db}", "CHECKPOINT"):
            subprocess.run(["psql", f"{base}/postgres", "-qc", sql], check=True, capture_output=True)
        return f"{base}/{db}"
    return f"sqlite:///{tempfile.mkdtemp()}/bench.sqlite3"


def setup_django(database_url: str, **env) -> None:
    """Configure and migrate Django in this process through os.environ (so child processes inherit it),
    with production settings: DEBUG off."""
    os.environ.update(
        DATABASE_URL=database_url, DJANGO_SETTINGS_MODULE="crystallise_site.settings.base", DJANGO_DEBUG="false",
        DJANGO_SECRET_KEY="bench-" + "x" * 50,
        DJANGO_ALLOWED_HOSTS="testserver,localhost,127.0.0.1", CRYSTALLISE_LOG_LEVEL="WARNING",
        **{k: str(v) for k, v in env.items()},
    )
    import django
    from django.core.management import call_command

    django.setup()
    call_command("migrate", verbosity=0)


def setup_service(name: str, base_url: str, **env) -> None:
    """Django on a fresh database for benchmark `name`, calling the fake provider at `base_url`."""
    setup_django(fresh_database_url(name), CRYSTALLISE_OPENAI_BASE_URL=base_url, CRYSTALLISE_OPENAI_API_KEY="sk-bench", **env)


def run_job(client, papers_list: list[dict]) -> tuple[dict, float]:
    """Submit a screening job and run it to the end in this process: (final job body, wall seconds)."""
    from screening.services import job_run

    job_id = submit_job(client, papers_list)
    started = time.perf_counter()
    job_run(job_id=job_id)
    wall = time.perf_counter() - started
    return client.get(f"/v1/screening/jobs/{job_id}").json(), wall


def _pool() -> tuple[list[str], list[str]]:
    data = ROOT.parent / "shared" / "data" / "cohen_2006"
    titles, sentences = [], []
    for name in ("Triptans.csv", "ADHD.csv"):
        path = data / name
        if not path.exists():
            continue
        with path.open(newline="", encoding="utf-8") as fh:
            for row in csv.DictReader(fh):
                titles.append(row["title"])
                sentences += [s.strip() for s in re.split(r"(?<=[.;])\s+", row["abstract"]) if len(s.split()) > 4]
    if not sentences:  # without the shared data: a plain vocabulary, still deterministic
        words = "patients trial randomized placebo migraine dose efficacy outcome adults children cohort".split()
        rng = random.Random(0)
        sentences = [" ".join(rng.choice(words) for _ in range(18)) + "." for _ in range(500)]
        titles = [" ".join(rng.choice(words) for _ in range(9)) for _ in range(200)]
    return titles, sentences


def papers(n: int, seed: int = 1) -> list[dict]:
    """n realistic papers (~250 tokens each) from real sentences, deterministic, unique ids."""
    titles, sentences = _pool()
    rng = random.Random(seed)
    out = []
    for i in range(n):
        abstract, words = [], 0
        while words < 190:  # ≈ 250 o200k tokens of biomedical English
            sentence = rng.choice(sentences)
            abstract.append(sentence)
            words += len(sentence.split())
        out.append({"id": f"bench:{seed}:{i}", "title": rng.choice(titles), "abstract": " ".join(abstract),
                    "keywords": []})
    return out


def cpu_reference_ms() -> float:
    """This machine's speed right now: best of 5 runs of a fixed pure-Python loop (ms).

    CPU figures (ms per paper, ms per poll) scale with it; recorded with every
    result so runs on different or busier machines can be compared.
    """
    import timeit

    return round(1000 * min(timeit.repeat("sum(i * i for i in range(100_000))", number=1, repeat=5)), 2)


def write_results(name: str, figures: dict) -> None:
    figures = {**figures, "cpu_reference_ms": cpu_reference_ms()}
    width = max(len(k) for k in figures)
    print(f"\n{name}")
    for key, value in figures.items():
        print(f"  {key:<{width}}  {value}")
    RESULTS.mkdir(parents=True, exist_ok=True)
    figures = {"benchmark": name, "recorded_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), **figures}
    (RESULTS / f"{name}.json").write_text(json.dumps(figures, indent=2, default=str) + "\n")


def submit_job(client, papers_list, **extra) -> str:
    response = client.post("/v1/screening/jobs", {"criteria": CRITERIA, "papers": papers_list, **extra}, format="json")
    if response.status_code != 202:
        raise RuntimeError(response.content[:500])
    return response.json()["id"]


def api_client():
    from rest_framework.test import APIClient

    client = APIClient()
    client.credentials(HTTP_X_API_KEY="bench")
    return client
