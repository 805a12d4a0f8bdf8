"""Validation samples: reproducible uniform draws, review progress, and certification against known bounds."""

from __future__ import annotations

import math

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from rest_framework.test import APIClient
from scipy.stats import beta

from crystallise.auth import fingerprint
from screening.models import Paper, ScreeningJob, ScreeningResult, ValidationSample, ValidationSampleItem
from tests.trust_support import URL, post_reviews, review, screened

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def _mock_backend(settings):
    settings.CRYSTALLISE_LLM_BACKEND = "mock"


def bulk_job(*, excluded: int, included: int, status="completed", excluded_score=0.0) -> ScreeningJob:
    """A finished job of the test client's key written straight to the database (thousands of papers, no LLM)."""
    job = ScreeningJob.objects.create(
        model="gpt-5-nano", llm_backend="mock", openai_key_source="none", owner=fingerprint("test-service-key"),
        criteria={"inclusion": ["randomized trial"], "exclusion": []}, threshold=1.0, status=status,
        total=excluded + included, screened=excluded + included, included=included, excluded=excluded)
    n = excluded + included
    papers = Paper.objects.bulk_create([Paper(job=job, position=i, paper_id=f"x{i}") for i in range(n)],
                                       batch_size=2000)
    ScreeningResult.objects.bulk_create([
        ScreeningResult(job=job, paper=p, position=p.position, cluster=0,
                        decision="include" if p.position >= excluded else "exclude",
                        score=1.0 if p.position >= excluded else excluded_score) for p in papers], batch_size=2000)
    return job


def draw(api, job_id, **body):
    return api.post(f"{URL}/{job_id}/validation-samples", body, format="json")


def status(api, job_id, sample_id, **params):
    response = api.get(f"{URL}/{job_id}/validation-samples/{sample_id}", params)
    assert response.status_code == 200, response.json()
    return response.json()


def confirm_included(api, job):
    ids = [f"x{i}" for i in range(job.excluded, job.total)]
    for start in range(0, len(ids), 10_000):
        assert post_reviews(api, job.pk, [review(pid, "include") for pid in ids[start:start + 10_000]]).status_code == 200


def test_a_sample_is_drawn_stored_and_reproducible_from_its_seed(api):
    job = bulk_job(excluded=500, included=20)
    response = draw(api, job.pk, size=40, **{"from": "excluded"}, seed=7)
    assert response.status_code == 201, response.json()
    body = response.json()
    assert response["Location"].endswith(f"/validation-samples/{body['id']}")
    assert (body["size"], body["from"], body["seed"], body["population_size"], body["threshold"]) == (
        40, "excluded", 7, 500, 1.0)
    assert len(set(body["paper_ids"])) == 40
    assert all(int(pid[1:]) < 500 for pid in body["paper_ids"])  # only papers the model excluded
    assert ValidationSampleItem.objects.filter(sample_id=body["id"]).count() == 40
    assert draw(api, job.pk, size=40, seed=7).json()["paper_ids"] == body["paper_ids"]
    assert draw(api, job.pk, size=40, seed=8).json()["paper_ids"] != body["paper_ids"]
    unseeded = draw(api, job.pk, size=40, **{"from": "all"}).json()
    assert isinstance(unseeded["seed"], int) and unseeded["population_size"] == 520
    again = draw(api, job.pk, size=40, seed=unseeded["seed"], **{"from": "all"}).json()
    assert again["paper_ids"] == unseeded["paper_ids"]


def test_zero_found_in_300_of_10000_excluded_bounds_missed_includes_at_99_4(api):
    job = bulk_job(excluded=10_000, included=200)
    sample = draw(api, job.pk, size=300, seed=1).json()
    assert status(api, job.pk, sample["id"])["progress"] == {"reviewed": 0, "decided": 0, "conflicts": 0,
                                                             "remaining": 300}
    post_reviews(api, job.pk, [review(pid, "exclude") for pid in sample["paper_ids"]])
    half = status(api, job.pk, sample["id"])
    assert half["complete"] is True and half["figures"]["confirmed_includes"] == 0
    assert half["figures"]["recall_lower_bound"] == 0.0 and half["certified"] is False
    confirm_included(api, job)
    body = status(api, job.pk, sample["id"], target_recall="0.6", confidence="0.95")
    figures = body["figures"]
    assert figures["found_includes"] == 0 and figures["excluded"] == 10_000 and figures["sampled"] == 300
    assert figures["missed_includes_upper_bound"] == pytest.approx(99.36, abs=0.01)
    assert figures["recall_lower_bound"] == pytest.approx(200 / (200 + 10_000 * (1 - 0.05 ** (1 / 300))))
    assert figures["missed_includes_estimate"] == 0 and figures["recall_estimate"] == 1.0
    assert body["certified"] is True  # 0.668 ≥ 0.6
    assert status(api, job.pk, sample["id"])["certified"] is False  # but not the default 0.95


def test_an_elusion_sample_that_finds_includes_certifies_with_the_exact_bound(api):
    job = bulk_job(excluded=1_000, included=2_000)
    confirm_included(api, job)
    sample = draw(api, job.pk, size=300, seed=3).json()
    found = sample["paper_ids"][:2]
    post_reviews(api, job.pk, [review(pid, "include" if pid in found else "exclude") for pid in sample["paper_ids"]])
    body = status(api, job.pk, sample["id"], confidence="0.9")
    figures = body["figures"]
    upper = beta.ppf(0.9, 2 + 1, 300 - 2)
    assert figures["found_includes"] == 2
    assert figures["elusion_upper_bound"] == pytest.approx(upper)
    assert figures["missed_includes_upper_bound"] == pytest.approx(1_000 * upper)
    assert figures["missed_includes_estimate"] == pytest.approx(1_000 * 2 / 300)
    assert figures["recall_lower_bound"] == pytest.approx(2_000 / (2_000 + 1_000 * upper))
    assert body["certified"] is (figures["recall_lower_bound"] >= 0.95) is True


def test_a_sample_is_not_complete_while_a_paper_is_unreviewed_or_in_conflict(api):
    job = bulk_job(excluded=100, included=5)
    sample = draw(api, job.pk, size=10, seed=2).json()
    first, *rest = sample["paper_ids"]
    post_reviews(api, job.pk, [review(pid, "exclude") for pid in rest] + [
        review(first, "exclude"), review(first, "include", "bob")])
    body = status(api, job.pk, sample["id"])
    assert body["complete"] is False and body["figures"] is None and body["certified"] is None
    assert body["progress"] == {"reviewed": 10, "decided": 9, "conflicts": 1, "remaining": 1}
    assert body["pending_paper_ids"] == [first]


def test_a_sample_of_all_papers_measures_recall_with_its_interval(api, run_queue):
    job = screened(api, run_queue)  # p1 and 10.1000/x.5 included by the model
    sample = draw(api, job["id"], size=5, seed=0, **{"from": "all"}).json()
    human = {"p1": "include", "p2": "exclude", "p3": "include", "p4": "exclude", "10.1000/x.5": "include"}
    post_reviews(api, job["id"], [review(pid, human[pid]) for pid in sample["paper_ids"]])
    body = status(api, job["id"], sample["id"], target_recall="0.5")
    recall = body["figures"]["recall"]
    assert (body["figures"]["human_included"], body["figures"]["found_by_model"]) == (3, 2)
    assert recall["estimate"] == pytest.approx(2 / 3)
    assert (recall["lower"], recall["upper"]) == pytest.approx((beta.ppf(0.025, 2, 2), beta.ppf(0.975, 3, 1)))
    assert body["figures"]["recall_lower_bound"] == pytest.approx(beta.ppf(0.05, 2, 2))
    assert body["certified"] is False  # one-sided bound 0.135 < 0.5
    tested = body["recommended_threshold"]["tested"]
    assert tested and tested[0]["threshold"] == min(t["threshold"] for t in tested)


def test_a_sample_without_human_includes_cannot_certify_recall(api):
    job = bulk_job(excluded=50, included=0)
    sample = draw(api, job.pk, size=5, seed=0, **{"from": "all"}).json()
    post_reviews(api, job.pk, [review(pid, "exclude") for pid in sample["paper_ids"]])
    body = status(api, job.pk, sample["id"])
    assert body["figures"]["recall"] is None and body["certified"] is False


def test_elusion_thresholds_are_tested_from_the_most_inclusive_and_stop_at_the_first_failure(api):
    job = bulk_job(excluded=1_000, included=3_000, excluded_score=0.5)
    confirm_included(api, job)
    sample = draw(api, job.pk, size=400, seed=5).json()
    post_reviews(api, job.pk, [review(pid, "exclude") for pid in sample["paper_ids"]])
    body = status(api, job.pk, sample["id"])
    tested = body["recommended_threshold"]["tested"]
    assert [t["threshold"] for t in tested] == [0.5, 1.0]
    # At 0.5 nothing is excluded (bound 1); at 1.0: 3000 / (3000 + 1000 × CP_upper(0, 400)).
    assert tested[0]["recall_lower_bound"] == 1.0
    assert tested[1]["recall_lower_bound"] == pytest.approx(3_000 / (3_000 + 1_000 * beta.ppf(0.95, 1, 400)))
    assert body["recommended_threshold"]["threshold"] == 1.0 and body["certified"] is True


def test_plan_says_how_large_a_sample_certifies_the_target(api):
    job = bulk_job(excluded=10_000, included=400)
    body = api.get(f"{URL}/{job.pk}/validation-samples/plan", {"target_recall": "0.95"}).json()
    rate = 400 * 0.05 / 0.95 / 10_000
    expected = math.ceil(math.log(0.05) / math.log(1 - rate))
    assert abs(body["excluded_sample"]["size_if_all_included_confirmed"] - expected) <= 1
    assert body["excluded_sample"]["size_with_confirmed_so_far"] is None  # nothing confirmed yet
    assert body["all_sample"]["positives_needed"] == 59
    assert body["all_sample"]["prevalence_from"] == "model decisions"


@pytest.mark.parametrize("body, field", [
    ({"size": 0}, "size"), ({"size": 10_001}, "size"), ({"size": "many"}, "size"), ({}, "size"),
    ({"size": 5, "from": "included"}, "from"), ({"size": 5, "seed": -1}, "seed"), ({"size": 5, "seed": 2**63}, "seed"),
    ({"size": 5, "limit": 3}, "limit"), ({"size": 2_000}, "size"),
])
def test_invalid_draws_are_400_and_store_nothing(api, body, field):
    job = bulk_job(excluded=1_000, included=10)
    response = draw(api, job.pk, **body)
    assert response.status_code == 400, response.json()
    assert response.json()["error_category"] == "validation" and field in response.json()["errors"]
    assert not ValidationSample.objects.exists()


def test_an_unfinished_job_cannot_be_sampled(api):
    job = bulk_job(excluded=10, included=1, status="running")
    response = draw(api, job.pk, size=3)
    assert response.status_code == 409 and response.json()["error_category"] == "conflict"
    assert not ValidationSample.objects.exists()


def test_auth_missing_other_caller_and_wrong_method(api, anon):
    job = bulk_job(excluded=10, included=1)
    sample = draw(api, job.pk, size=3).json()
    base = f"{URL}/{job.pk}/validation-samples"
    assert anon.post(base, {"size": 3}, format="json").status_code == 401
    assert anon.get(f"{base}/{sample['id']}").status_code == 401
    other = APIClient()
    other.credentials(HTTP_X_API_KEY="another-key")
    for response in (other.post(base, {"size": 3}, format="json"), other.get(base), other.get(f"{base}/plan"),
                     other.get(f"{base}/{sample['id']}"),
                     api.get(f"{base}/00000000-0000-0000-0000-000000000000"),
                     api.get(f"{URL}/00000000-0000-0000-0000-000000000000/validation-samples")):
        assert response.status_code == 404 and response.json()["error_category"] == "not_found"
    for response in (api.delete(f"{base}/{sample['id']}"), api.put(base, {}, format="json"),
                     api.post(f"{base}/plan", {}, format="json")):
        assert response.status_code == 405 and response.json()["error_category"] == "validation"
    other_job = bulk_job(excluded=10, included=1)
    assert api.get(f"{URL}/{other_job.pk}/validation-samples/{sample['id']}").status_code == 404


def test_samples_are_listed_newest_first_with_constant_queries(api):
    job = bulk_job(excluded=200, included=5)

    def list_queries():
        with CaptureQueriesContext(connection) as ctx:
            body = api.get(f"{URL}/{job.pk}/validation-samples").json()
        return len(ctx), body

    first = draw(api, job.pk, size=5, seed=1).json()
    few, _ = list_queries()
    for seed in range(2, 8):
        draw(api, job.pk, size=5, seed=seed)
    many, body = list_queries()
    assert few == many and len(body["results"]) == 7 and body["results"][-1]["id"] == first["id"]
    assert set(body["results"][0]) == {"id", "from", "size", "seed", "population_size", "threshold", "created_at"}
