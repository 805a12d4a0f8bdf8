"""The shared rate limiter (leases in the database) and adaptive concurrency against the fake provider."""

from __future__ import annotations

import random
import time
from datetime import timedelta

import pytest
from django.utils import timezone

from crystallise.keyvault import key_fingerprint
from crystallise.ratelimit import lease
from crystallise.ratelimit.lease import fair_shares, release, renew
from crystallise.ratelimit.models import RateLimitKey, RateLimitLease
from screening.models import ScreeningJob, ScreeningResult
from tests.conftest import SERVER_OPENAI_KEY
from tests.factories import paper

KEY = key_fingerprint("sk-limiter-test")
URL = "/v1/screening/jobs"
CRITERIA = {"inclusion": ["randomized trial", "migraine treatment"], "exclusion": ["children"]}


def live_shares() -> dict[str, float]:
    return dict(RateLimitLease.objects.filter(fingerprint=KEY, expires_at__gt=timezone.now())
                .values_list("holder", "share"))


def test_fair_shares_split_equally_and_give_what_one_does_not_use_to_the_others():
    assert fair_shares({"a": None}) == {"a": 1.0}
    assert fair_shares({h: None for h in "abcd"}) == dict.fromkeys("abcd", 0.25)
    shares = fair_shares({"a": 0.1, "b": None, "c": None})
    assert shares["a"] == pytest.approx(0.1) and shares["b"] == shares["c"] == pytest.approx(0.45)
    assert fair_shares({"a": 0.9, "b": 0.9}) == {"a": 0.5, "b": 0.5}
    # Capacity nobody showed a use for is not left idle: a holder alone always has all of it.
    assert fair_shares({"a": 0.3}) == {"a": 1.0}
    assert fair_shares({"a": 0.1, "b": 0.2}) == pytest.approx({"a": 0.45, "b": 0.55})


@pytest.mark.django_db
def test_a_newcomer_takes_what_is_free_at_once_and_its_fair_share_once_the_others_renewed():
    assert renew(KEY, "a", demand=None).share == 1.0  # alone: all of it
    assert renew(KEY, "b", demand=None).share == 0.0  # a still holds everything
    assert renew(KEY, "a", demand=None).share == 0.5  # a shrinks to its fair share...
    assert renew(KEY, "b", demand=None).share == 0.5  # ...and b grows into it
    assert sum(live_shares().values()) == pytest.approx(1.0)
    release(KEY, "a")
    assert renew(KEY, "b", demand=None).share == 1.0  # a's share is back at once


@pytest.mark.django_db
def test_shares_held_never_add_up_to_more_than_the_limit_and_settle_at_fair_shares():
    rng = random.Random(7)
    holders = [f"h{i}" for i in range(5)]
    for _ in range(300):
        holder = rng.choice(holders)
        if rng.random() < 0.1:
            release(KEY, holder)
        else:
            renew(KEY, holder, demand=rng.choice([None, None, 0.05, 0.3]))
        assert sum(live_shares().values()) <= 1.0 + 1e-9
    for _ in range(3):  # a few rounds of renewals with full demand: equal shares
        for holder in holders:
            renew(KEY, holder, demand=None)
    assert live_shares() == pytest.approx(dict.fromkeys(holders, 0.2))


@pytest.mark.django_db
def test_the_share_of_a_holder_that_stopped_renewing_returns_when_its_lease_expires():
    RateLimitLease.objects.create(fingerprint=KEY, holder="dead", share=1.0,
                                  expires_at=timezone.now() + timedelta(seconds=0.6))
    assert renew(KEY, "alive", demand=None).share == 0.0
    time.sleep(0.7)
    grant = renew(KEY, "alive", demand=None)
    assert grant.share == 1.0 and grant.holders == 1
    assert not RateLimitLease.objects.filter(holder="dead").exists()  # the expired row is cleared too


@pytest.mark.django_db
def test_limits_one_job_learned_are_handed_to_the_next_and_keyed_by_fingerprint():
    renew(KEY, "a", demand=None, limit_requests=6000, limit_tokens=2_000_000)
    grant = renew(KEY, "b", demand=None)
    assert (grant.limit_requests, grant.limit_tokens) == (6000, 2_000_000)
    assert list(RateLimitKey.objects.values_list("fingerprint", flat=True)) == [KEY]
    assert "sk-limiter-test" not in str(list(RateLimitLease.objects.values()))


@pytest.mark.django_db
def test_a_renewal_writes_one_row():
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    renew(KEY, "a", demand=None, limit_requests=6000)
    renew(KEY, "b", demand=None)
    with CaptureQueriesContext(connection) as queries:
        renew(KEY, "a", demand=None, limit_requests=6000)
    writes = [q["sql"] for q in queries if q["sql"].split()[0].upper() in ("INSERT", "UPDATE", "DELETE")]
    assert len(writes) == 1 and "crystallise_ratelimitlease" in writes[0], writes


# --- jobs against the fake provider over HTTP --------------------------------------

def papers(n: int) -> list[dict]:
    return [paper(f"p{i}", f"Trial {i} of migraine treatment",
                  "A randomized trial of migraine treatment in adults. " * (1 + i % 5)) for i in range(n)]


def admitted_rate(fake, what: str = "requests") -> float:
    """Admitted requests (or tokens counted against TPM) per second over the span of their arrivals."""
    entries = [e for e in fake.requests if e["status"] == 200]
    span = entries[-1]["t"] - entries[0]["t"]
    amount = len(entries) if what == "requests" else fake.stats["rate_tokens"]
    return amount / span


def refused_at(fake) -> list[float]:
    return [e["t"] for e in fake.requests if e["status"] == 429]


def run_job(api, run_queue, n: int) -> dict:
    job_id = api.post(URL, {"criteria": CRITERIA, "papers": papers(n)}, format="json").json()["id"]
    run_queue()
    body = api.get(f"{URL}/{job_id}").json()
    assert body["status"] == "completed", body
    positions = ScreeningResult.objects.filter(job_id=job_id).values_list("position", flat=True)
    assert sorted(positions) == list(range(n))
    return body


@pytest.mark.django_db(transaction=True)
def test_a_job_keeps_in_flight_what_the_rate_limit_and_latency_call_for(api, fake_openai, run_queue, settings):
    settings.CRYSTALLISE_LLM_CONCURRENCY = 512
    fake_openai.config.update({"rpm": 3000, "latency": 0.4})  # 50/s: about 50 × 0.4 = 20 in flight
    run_job(api, run_queue, 250)
    stats = fake_openai.stats
    assert stats["status"].get("429", 0) <= 2
    assert stats["max_in_flight"] <= 64  # follows the limit, far under the ceiling of 512
    assert admitted_rate(fake_openai) >= 0.85 * 3000 / 60
    assert not RateLimitLease.objects.exists()  # the job gave its lease back
    assert RateLimitKey.objects.get(fingerprint=key_fingerprint(SERVER_OPENAI_KEY)).limit_requests == 3000


@pytest.mark.django_db(transaction=True)
def test_a_job_on_a_token_bound_account_stays_under_its_tokens_per_minute(api, fake_openai, run_queue, settings):
    settings.CRYSTALLISE_LLM_CONCURRENCY = 512
    # Each call counts its prompt (about 150-250 tokens here) plus its output budget (304):
    # the token limit allows about 25 calls/s, the request limit 100.
    fake_openai.config.update({"rpm": 6000, "tpm": 750_000, "latency": 0.3})
    run_job(api, run_queue, 250)
    stats, first = fake_openai.stats, fake_openai.requests[0]["t"]
    # Refused: only some of the first calls, sent before any answer told the limits.
    assert stats["status"].get("429", 0) <= 16 and all(t < first + 1.0 for t in refused_at(fake_openai))
    tokens_per_second = admitted_rate(fake_openai, "tokens")
    assert 0.8 * 750_000 / 60 <= tokens_per_second <= 1.05 * 750_000 / 60


@pytest.mark.django_db(transaction=True)
def test_a_job_whose_provider_advertises_no_limit_grows_to_its_ceiling(api, fake_openai, run_queue, settings):
    settings.CRYSTALLISE_LLM_CONCURRENCY = 100
    fake_openai.config.latency = 0.3
    run_job(api, run_queue, 400)
    assert 64 < fake_openai.stats["max_in_flight"] <= 100


@pytest.mark.django_db(transaction=True)
def test_a_job_alone_on_its_key_gets_the_whole_limit_even_if_a_dead_worker_held_some(api, fake_openai, run_queue,
                                                                                       settings):
    settings.CRYSTALLISE_LLM_CONCURRENCY = 512
    fingerprint = key_fingerprint(SERVER_OPENAI_KEY)
    RateLimitKey.objects.create(fingerprint=fingerprint, limit_requests=3000)
    RateLimitLease.objects.create(fingerprint=fingerprint, holder="killed-worker", share=0.75,
                                  expires_at=timezone.now() + timedelta(seconds=lease.LEASE_SECONDS))
    fake_openai.config.update({"rpm": 3000, "latency": 0.2})
    run_job(api, run_queue, 400)
    assert fake_openai.stats["status"].get("429", 0) <= 2
    admitted = [e["t"] for e in fake_openai.requests if e["status"] == 200]
    first = admitted[0]

    def rate(start: float, end: float) -> float:
        return sum(first + start <= t < first + end for t in admitted) / (end - start)

    # A quarter of the limit while the dead lease lasted, all of it once it had expired.
    assert rate(0.5, lease.LEASE_SECONDS - 1.0) <= 0.3 * 50
    assert rate(lease.LEASE_SECONDS + 1.0, lease.LEASE_SECONDS + 4.0) >= 0.85 * 50
    assert ScreeningJob.objects.get().errored == 0


def test_the_fake_provider_enforces_and_advertises_tokens_per_minute_like_an_account(fake_openai):
    import openai

    # One second's worth may arrive at once (burst_seconds): 10 requests, 1,000 tokens.
    fake_openai.config.update({"rpm": 600, "tpm": 60_000})
    client = openai.OpenAI(api_key="sk-test", base_url=fake_openai.base_url, max_retries=0)
    messages = [{"role": "user", "content": "Is this a randomized trial?"}]
    first = client.chat.completions.with_raw_response.create(model="gpt-5-nano", messages=messages,
                                                             max_completion_tokens=400)
    charged = fake_openai.stats["rate_tokens"]
    assert charged == fake_openai.stats["prompt_tokens"] + 400  # prompt + output budget, counted on arrival
    headers = first.headers
    assert headers["x-ratelimit-limit-tokens"] == "60000" and headers["x-ratelimit-limit-requests"] == "600"
    assert int(headers["x-ratelimit-remaining-tokens"]) == 1000 - charged
    assert headers["x-ratelimit-remaining-requests"] == "9"
    assert headers["x-ratelimit-reset-tokens"].endswith("ms") or headers["x-ratelimit-reset-tokens"].endswith("s")
    with pytest.raises(openai.RateLimitError) as refused:
        client.chat.completions.create(model="gpt-5-nano", messages=messages, max_completion_tokens=900)
    response = refused.value.response
    assert "tokens per min (TPM): Limit 60000" in refused.value.message
    assert float(response.headers["retry-after"]) > 0 and int(response.headers["retry-after-ms"]) > 0
    assert response.headers["x-ratelimit-limit-tokens"] == "60000"


@pytest.mark.django_db
def test_a_synchronous_index_run_starts_paced_on_a_key_whose_limits_jobs_learnt(api, fake_openai):
    # 600 RPM: the provider takes 10 calls at once, then 10 a second. 24 records in one request.
    fake_openai.config.update({"rpm": 600})
    records = [{"id": f"r{i}", "title": f"Trial {i} of migraine treatment",
                "abstract": "A randomized placebo-controlled trial of migraine treatment in adults, " * 4}
               for i in range(24)]

    def run() -> int:
        fake_openai.reset()
        response = api.post("/v1/indexer/run", {"records": records}, format="json")
        assert response.status_code == 200, response.json()
        assert {r["indexing_status"] for r in response.json()["records"]} == {"ok"}
        return fake_openai.stats["status"].get("429", 0)

    # Limits unknown: every call starts at once and the provider refuses what is over (retried).
    assert run() > 0
    # Once a job on the key learnt them (kept in the database), the calls start paced: none is refused.
    RateLimitKey.objects.update_or_create(fingerprint=key_fingerprint(SERVER_OPENAI_KEY),
                                          defaults={"limit_requests": 600, "limit_tokens": None})
    assert run() == 0
