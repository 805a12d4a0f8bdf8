"""Root fixtures: an API client, the OpenAI-compatible fake, the queue runner, and real worker processes."""

from __future__ import annotations

import importlib

import pytest
from rest_framework.test import APIClient

from tests.fake_openai import FakeConfig, FakeOpenAI
from tests.workers import Cluster, kill, process_env, start_worker

SERVER_OPENAI_KEY = "sk-server-test-key-0000"


@pytest.fixture(scope="session")
def _fake_server():
    with FakeOpenAI() as fake:
        yield fake


@pytest.fixture
def fake_openai(_fake_server, settings):
    """The fake OpenAI server over real HTTP, reset, and configured as the service's endpoint and key."""
    _fake_server.config = FakeConfig()
    _fake_server.reset()
    settings.CRYSTALLISE_LLM_BACKEND = "openai"
    settings.CRYSTALLISE_OPENAI_BASE_URL = _fake_server.base_url
    settings.CRYSTALLISE_OPENAI_API_KEY = SERVER_OPENAI_KEY
    yield _fake_server
    _fake_server.config = FakeConfig()


@pytest.fixture
def api():
    """A client with a service key (dev mode accepts any non-empty key)."""
    client = APIClient()
    client.credentials(HTTP_X_API_KEY="test-service-key")
    return client


@pytest.fixture
def anon():
    return APIClient()


def run_queued_tasks() -> int:
    """Run what the web process enqueued, the way a django-q2 worker would. Returns the task count."""
    from django_q.brokers import get_broker
    from django_q.signing import SignedPackage

    broker = get_broker()
    ran = 0
    while True:
        batch = broker.dequeue()
        if not batch:
            return ran
        for ack_id, pack in batch:
            task = SignedPackage.loads(pack)
            module, func = task["func"].rsplit(".", 1)
            getattr(importlib.import_module(module), func)(*task["args"], **task["kwargs"])
            broker.acknowledge(ack_id)
            ran += 1


@pytest.fixture
def run_queue():
    return run_queued_tasks


@pytest.fixture
def job_worker(fake_openai):
    """start(job_id, concurrency=4, nice=0, stale_seconds=60): a real worker process running that screening job
    on the test database against the fake provider (tests/workers.py); killed at teardown if still running."""
    started = []

    def start(job_id, **options):
        process = start_worker(job_id, fake_openai, **options)
        started.append(process)
        return process

    yield start
    for process in started:
        kill(process)


@pytest.fixture
def qcluster():
    """start(database=None, fake=None, **env): a real `manage.py qcluster` (tests.workers.Cluster) on the test
    database, or the one `database` (a DATABASE_URL) names; stopped at teardown."""
    clusters = []

    def start(*, database: str | None = None, fake=None, **env):
        cluster = Cluster(process_env(database=database, fake=fake, **env))
        clusters.append(cluster)
        return cluster

    yield start
    for cluster in clusters:
        cluster.stop()


@pytest.fixture
def staff(db):
    """A client logged in to the admin as a superuser."""
    from django.contrib.auth import get_user_model
    from django.test import Client

    user = get_user_model().objects.create_superuser("operator", "op@example.org", "pw-operator-123")
    client = Client()
    client.force_login(user)
    return client


def _cohen_collection(name: str) -> list[dict]:
    from tests.factories import cohen_papers

    return [{k: v for k, v in p.items() if k != "label"} for p in cohen_papers(name)]


@pytest.fixture(scope="module")
def adhd() -> list[dict]:
    """The Cohen 2006 ADHD collection as papers, without reviewers' labels (skipped where the data is absent)."""
    return _cohen_collection("ADHD")


@pytest.fixture(scope="module")
def triptans() -> list[dict]:
    """The Cohen 2006 Triptans collection as papers, without reviewers' labels (skipped where the data is absent)."""
    return _cohen_collection("Triptans")
