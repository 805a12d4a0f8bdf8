"""Evaluation against human decisions: the statistics against known values and independent computations."""

from __future__ import annotations

import math

import numpy as np
import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from scipy.stats import beta
from sklearn.metrics import confusion_matrix, precision_score, recall_score

from screening.evaluation import stats
from screening.models import ScreeningResult
from tests.factories import cohen_papers
from tests.trust_support import URL, post_reviews, review, screened

TRIPTAN_CRITERIA = {"research_question": "Are triptans effective for acute migraine?",
                    "inclusion": ["triptan treatment of migraine", "randomized controlled trial"],
                    "exclusion": ["animal experiments in rats"]}


def cp_two_sided(k, n, confidence):
    """Clopper–Pearson from the beta distribution, written out (independent of scipy's binomtest)."""
    alpha = 1 - confidence
    return (beta.ppf(alpha / 2, k, n - k + 1) if k else 0.0, beta.ppf(1 - alpha / 2, k + 1, n - k) if k < n else 1.0)


# --- the statistics ------------------------------------------------------------------------

def test_zero_of_300_bounds_ten_thousand_excluded_at_about_99_missed():
    missed, recall = stats.elusion_recall_bound(confirmed=200, excluded=10_000, found=0, sampled=300, confidence=0.95)
    assert missed == pytest.approx(99.36, abs=0.01)
    assert missed == pytest.approx(10_000 * (1 - 0.05 ** (1 / 300)), rel=1e-9)  # x = 0: 1 - alpha^(1/n)
    assert recall == pytest.approx(200 / (200 + 99.3608), rel=1e-5)


@pytest.mark.parametrize("k, n, confidence", [(0, 10, 0.95), (3, 300, 0.95), (17, 20, 0.9), (50, 50, 0.99), (1, 1, 0.5)])
def test_bounds_are_clopper_pearson(k, n, confidence):
    assert stats.upper_bound(k, n, confidence) == pytest.approx(
        beta.ppf(confidence, k + 1, n - k) if k < n else 1.0, abs=1e-9)
    assert stats.lower_bound(k, n, confidence) == pytest.approx(
        beta.ppf(1 - confidence, k, n - k + 1) if k else 0.0, abs=1e-9)
    figure = stats.proportion(k, n, confidence)
    assert (figure["lower"], figure["upper"]) == pytest.approx(cp_two_sided(k, n, confidence), abs=1e-9)
    assert figure["estimate"] == k / n and (figure["successes"], figure["trials"]) == (k, n)


def test_no_trials_has_no_proportion():
    assert stats.proportion(0, 0, 0.95) is None
    assert stats.upper_bound(0, 0, 0.95) == 1.0 and stats.lower_bound(0, 0, 0.95) == 0.0


@pytest.mark.parametrize("excluded, confirmed, target, confidence", [
    (10_000, 200, 0.95, 0.95), (1_000, 2_000, 0.95, 0.95), (50_000, 900, 0.9, 0.99), (300, 10, 0.8, 0.95)])
def test_planned_sample_size_is_the_closed_form_for_zero_found(excluded, confirmed, target, confidence):
    # Certified when excluded × (1 − (1 − c)^(1/n)) ≤ confirmed (1 − t) / t.
    allowed_rate = confirmed * (1 - target) / target / excluded
    expected = math.ceil(math.log(1 - confidence) / math.log(1 - allowed_rate))
    size = stats.elusion_sample_size(excluded=excluded, confirmed=confirmed, target_recall=target,
                                     confidence=confidence)
    assert abs(size - expected) <= 1  # the closed form's ceiling vs floating point at the boundary
    _, at_size = stats.elusion_recall_bound(confirmed=confirmed, excluded=excluded, found=0, sampled=size,
                                            confidence=confidence)
    _, below = stats.elusion_recall_bound(confirmed=confirmed, excluded=excluded, found=0, sampled=size - 1,
                                          confidence=confidence)
    assert at_size >= target > below


def test_planning_edge_cases():
    assert stats.elusion_sample_size(excluded=0, confirmed=5, target_recall=0.95, confidence=0.95) == 0
    assert stats.elusion_sample_size(excluded=100, confirmed=0, target_recall=0.95, confidence=0.95) is None
    assert stats.positives_needed(target_recall=0.95, confidence=0.95) == math.ceil(math.log(0.05) / math.log(0.95))


def test_fixed_sequence_stops_at_the_first_failure():
    recommended, tested = stats.fixed_sequence([(0.0, 0.99), (0.5, 0.96), (0.75, 0.90), (1.0, 0.97)], 0.95)
    assert recommended == 0.5
    assert [(t["threshold"], t["passed"]) for t in tested] == [(0.0, True), (0.5, True), (0.75, False)]
    assert stats.fixed_sequence([(0.0, None), (0.5, 0.99)], 0.95)[0] is None


# --- the endpoint on real labelled data -----------------------------------------------------

@pytest.fixture
def mock_backend(settings):
    settings.CRYSTALLISE_LLM_BACKEND = "mock"


@pytest.mark.django_db(transaction=True)
def test_evaluation_on_triptans_matches_an_independent_computation(api, run_queue, mock_backend):
    labelled = cohen_papers("Triptans")
    papers = [{k: v for k, v in p.items() if k != "label"} for p in labelled]
    job = screened(api, run_queue, papers=papers, criteria=TRIPTAN_CRITERIA, threshold=0.5)
    assert job["status"] == "completed"
    labels = {p["id"]: p["label"] for p in labelled}
    answer = post_reviews(api, job["id"], [review(pid, "include" if y else "exclude", "gold")
                                           for pid, y in labels.items()])
    assert answer.json() == {"recorded": len(labels), "unchanged": 0}
    body = api.get(f"{URL}/{job['id']}/evaluation", {"target_recall": "0.95", "confidence": "0.95"}).json()

    rows = list(ScreeningResult.objects.filter(job_id=job["id"]).order_by("position")
                .values_list("paper__paper_id", "score", "decision", "needs_review", "criteria"))
    y = np.array([labels[r[0]] for r in rows])
    predicted = np.array([r[2] == "include" for r in rows]).astype(int)
    scores = np.array([-1.0 if r[1] is None else r[1] for r in rows])
    tn, fp, fn, tp = confusion_matrix(y, predicted).ravel()
    assert body["evaluated"] == len(rows) == 671
    assert body["confusion_matrix"] == {"tp": tp, "fp": fp, "fn": fn, "tn": tn}
    assert body["recall"]["estimate"] == pytest.approx(recall_score(y, predicted))
    assert body["precision"]["estimate"] == pytest.approx(precision_score(y, predicted))
    assert body["specificity"]["estimate"] == pytest.approx(tn / (tn + fp))
    assert (body["recall"]["lower"], body["recall"]["upper"]) == pytest.approx(cp_two_sided(tp, tp + fn, 0.95))
    assert (body["specificity"]["lower"], body["specificity"]["upper"]) == pytest.approx(
        cp_two_sided(tn, tn + fp, 0.95))

    # The sweep, WSS@95 (Cohen 2006) and the recommended threshold, recomputed from the rows.
    sweep = {round(p["threshold"], 6): p for p in body["threshold_sweep"]}
    distinct = sorted(set(scores[scores >= 0]))
    assert sorted(sweep) == [round(t, 6) for t in distinct]
    best_wss, recommended, failed_at = None, None, None
    for t in distinct:
        included = scores >= t
        found, positives = (included & (y == 1)).sum(), (y == 1).sum()
        excluded_share = (~included).mean()
        point = sweep[round(t, 6)]
        assert point["recall"] == pytest.approx(found / positives)
        assert point["specificity"] == pytest.approx((~included & (y == 0)).sum() / (y == 0).sum())
        assert point["excluded_share"] == pytest.approx(excluded_share)
        if found / positives >= 0.95:
            best_wss = (t, excluded_share - 0.05)
        if failed_at is None:  # fixed sequence: most inclusive first, stop at the first failure
            bound = beta.ppf(0.05, found, positives - found + 1) if found else 0.0
            if bound >= 0.95:
                recommended = t
            else:
                failed_at = t
    assert body["wss_at_95"]["threshold"] == pytest.approx(best_wss[0])
    assert body["wss_at_95"]["value"] == pytest.approx(best_wss[1])
    tested = body["recommended_threshold"]["tested"]
    if failed_at is not None:
        assert tested[-1]["passed"] is False and tested[-1]["threshold"] == pytest.approx(failed_at)
    assert body["recommended_threshold"]["threshold"] == (None if recommended is None else pytest.approx(recommended))

    # needs_review: share flagged and the recall if a human checked every flagged paper.
    flagged = np.array([r[3] for r in rows])
    assert body["needs_review"]["share"] == pytest.approx(flagged.mean())
    caught = ((predicted == 1) | flagged) & (y == 1)
    assert body["needs_review"]["recall_if_checked"]["estimate"] == pytest.approx(caught.sum() / (y == 1).sum())

    # Per criterion: human includes the model excluded on which the criterion's verdict went against inclusion.
    expected = {}
    for (_, _, decision, _, criteria), label in zip(rows, y, strict=True):
        if label == 1 and decision == "exclude":
            for c in criteria:
                against = c["verdict"] != "met" if c["kind"] == "inclusion" else c["verdict"] == "met"
                expected[(c["kind"], c["index"])] = expected.get((c["kind"], c["index"]), 0) + int(against)
    assert {(c["kind"], c["index"]): c["knocked_out"] for c in body["criteria"]} == {
        key: expected.get(key, 0) for key in [("inclusion", 0), ("inclusion", 1), ("exclusion", 0)]}
    assert "not a random sample" in body["sample_note"] and body["job"]["human_decided"] == 671


@pytest.mark.django_db(transaction=True)
def test_evaluation_without_reviews_is_empty_not_an_error(api, run_queue, mock_backend):
    job = screened(api, run_queue)
    body = api.get(f"{URL}/{job['id']}/evaluation").json()
    assert body["evaluated"] == 0 and body["recall"] is None and body["wss_at_95"] is None
    assert body["recommended_threshold"]["threshold"] is None and body["target_recall"] == 0.95
    assert body["job"]["screened"] == 5 and body["job"]["reviewed"] == 0


@pytest.mark.django_db(transaction=True)
def test_evaluation_of_a_chosen_subset_says_it_describes_that_set_only(api, run_queue, mock_backend):
    job = screened(api, run_queue)
    post_reviews(api, job["id"], [review("p1", "include"), review("p2", "exclude"), review("p3", "include")])
    body = api.get(f"{URL}/{job['id']}/evaluation").json()
    assert body["evaluated"] == 3 and body["confusion_matrix"] == {"tp": 1, "fp": 0, "fn": 1, "tn": 1}
    assert "describe the 3 papers with a human decision" in body["sample_note"]
    knocked = {(c["kind"], c["index"]): c["knocked_out"] for c in body["criteria"]}
    assert knocked[("exclusion", 0)] == 1  # p3: "pediatric children" met


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("params, field", [
    ({"target_recall": "1"}, "target_recall"), ({"target_recall": "0"}, "target_recall"),
    ({"target_recall": "high"}, "target_recall"), ({"confidence": "0.4"}, "confidence"),
    ({"confidence": "nan"}, "confidence"), ({"confidence": "1.0"}, "confidence"),
])
def test_invalid_parameters_are_400(api, run_queue, mock_backend, params, field):
    job = screened(api, run_queue, run=False)
    response = api.get(f"{URL}/{job['id']}/evaluation", params)
    assert response.status_code == 400 and field in response.json()["errors"]


@pytest.mark.django_db(transaction=True)
def test_evaluation_auth_missing_other_caller_and_wrong_method(api, anon, run_queue, mock_backend):
    from rest_framework.test import APIClient

    job = screened(api, run_queue, run=False)
    path = f"{URL}/{job['id']}/evaluation"
    assert anon.get(path).status_code == 401
    other = APIClient()
    other.credentials(HTTP_X_API_KEY="someone-else")
    assert other.get(path).status_code == 404
    assert api.get(f"{URL}/00000000-0000-0000-0000-000000000000/evaluation").status_code == 404
    response = api.post(path, {}, format="json")
    assert response.status_code == 405 and response.json()["error_category"] == "validation"


@pytest.mark.django_db(transaction=True)
def test_evaluation_reads_the_same_number_of_rows_whatever_the_job_size(api, run_queue, mock_backend):
    from tests.factories import paper

    def queries(n):
        job = screened(api, run_queue, papers=[paper(f"e{i}", f"Migraine treatment trial {i}") for i in range(n)])
        post_reviews(api, job["id"], [review(f"e{i}", "include" if i % 3 else "exclude") for i in range(n)])
        with CaptureQueriesContext(connection) as ctx:
            assert api.get(f"{URL}/{job['id']}/evaluation").status_code == 200
        return len(ctx)

    assert queries(4) == queries(120)
