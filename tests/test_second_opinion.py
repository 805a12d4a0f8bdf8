"""Second opinion: a second model answers some papers and a rule makes the decision.

The fake provider answers per model from a known table (which papers each model includes), so every
rule's decisions, which papers reached the second model, and the usage split are known in advance.
"""

from __future__ import annotations

import re
from decimal import Decimal

import pytest

from crystallise.tokens import Usage, cost_usd
from screening.models import ScreeningJob
from screening.second_opinion import decide

URL = "/v1/screening/jobs"
CRITERIA = {"inclusion": ["randomized trial"], "exclusion": ["children"]}
PAPERS = [{"id": f"p{i}", "title": f"Paper p{i}", "abstract": f"Abstract of paper p{i}."} for i in range(10)]
FIRST, SECOND = "gpt-5-nano", "gpt-5-mini"
# Which papers each model includes (the rest it excludes); p7's second answer is flagged unsure.
INCLUDES = {FIRST: {"p0", "p1", "p2", "p3"}, SECOND: {"p2", "p3", "p4", "p5"}}
UNSURE = {FIRST: {"p1", "p6"}, SECOND: set()}


def answer_by_model(body: dict) -> dict:
    paper = re.search(r"Paper (p\d+)", body["messages"][-1]["content"]).group(1)
    model = body["model"]
    met = paper in INCLUDES[model]
    return {
        "verdicts": {"I1": {"verdict": "met" if met else "not_met", "reason": "table"},
                     "E1": {"verdict": "not_met", "reason": "table"}},
        "reasoning": f"{model} on {paper}",
        "confidence": 0.4 if paper in UNSURE[model] else 0.9,
    }


@pytest.fixture
def fake(fake_openai):
    fake_openai.config.responder = answer_by_model
    return fake_openai


def run(api, run_queue, **second):
    body = {"criteria": CRITERIA, "papers": PAPERS, "model": FIRST}
    if second:
        body["second_opinion"] = {"model": SECOND, **second}
    response = api.post(URL, body, format="json")
    assert response.status_code == 202, response.json()
    run_queue()
    job = api.get(f"{URL}/{response.json()['id']}").json()
    results = api.get(f"{URL}/{job['id']}/results?page_size=100").json()["results"]
    return job, {r["paper_id"]: r for r in results}


def asked_second(fake) -> set[str]:
    return {re.search(r"Paper (p\d+)", r["body"]["messages"][-1]["content"]).group(1)
            for r in fake.requests if r["body"]["model"] == SECOND}


def included(results: dict) -> set[str]:
    return {pid for pid, r in results.items() if r["decision"] == "include"}


@pytest.mark.django_db(transaction=True)
def test_any_include_on_excluded_papers_rescues_what_the_second_model_includes(api, fake, run_queue):
    job, results = run(api, run_queue, apply_to="excluded", rule="any_include")
    assert job["status"] == "completed"
    assert asked_second(fake) == {f"p{i}" for i in range(4, 10)}  # only the first model's exclusions
    assert included(results) == INCLUDES[FIRST] | INCLUDES[SECOND]
    assert job["progress"]["included"] == 6 and job["progress"]["excluded"] == 4
    rescued = results["p4"]
    assert [o["model"] for o in rescued["opinions"]] == [FIRST, SECOND]
    assert [o["decision"] for o in rescued["opinions"]] == ["exclude", "include"]
    assert rescued["needs_review"]  # the two models disagree
    assert results["p0"]["opinions"] is None  # never asked
    assert results["p8"]["opinions"][1]["decision"] == "exclude" and not results["p8"]["needs_review"]


@pytest.mark.django_db(transaction=True)
def test_both_include_on_all_papers_keeps_only_what_both_include(api, fake, run_queue):
    job, results = run(api, run_queue, apply_to="all", rule="both_include")
    assert asked_second(fake) == {p["id"] for p in PAPERS}
    assert included(results) == INCLUDES[FIRST] & INCLUDES[SECOND]
    assert results["p0"]["decision"] == "exclude" and results["p0"]["needs_review"]


@pytest.mark.django_db(transaction=True)
def test_needs_review_sends_only_flagged_papers(api, fake, run_queue):
    job, results = run(api, run_queue, apply_to="needs_review", rule="any_include")
    assert asked_second(fake) == UNSURE[FIRST]
    # p1: first includes (unsure), second excludes → any_include keeps it; p6: both exclude.
    assert included(results) == INCLUDES[FIRST]


@pytest.mark.django_db(transaction=True)
def test_usage_and_cost_are_split_by_model_at_each_models_price(api, fake, run_queue):
    job, _ = run(api, run_queue, apply_to="excluded", rule="any_include")
    per_model: dict[str, Usage] = {}
    split = job["usage_by_model"]
    assert set(split) == {FIRST, SECOND}
    for model in (FIRST, SECOND):
        entry = split[model]
        per_model[model] = Usage(entry["input_tokens"], entry["cached_input_tokens"], entry["output_tokens"],
                                 entry["reasoning_tokens"])
        assert entry["cost_usd"] == pytest.approx(float(cost_usd(model, per_model[model])), abs=1e-8)
    assert per_model[FIRST].input_tokens > 0 and per_model[SECOND].input_tokens > 0
    total = per_model[FIRST] + per_model[SECOND]
    assert job["usage"]["input_tokens"] == total.input_tokens
    assert job["usage"]["output_tokens"] == total.output_tokens
    assert job["cost_usd"] == pytest.approx(split[FIRST]["cost_usd"] + split[SECOND]["cost_usd"], abs=1e-7)


@pytest.mark.django_db(transaction=True)
def test_the_estimate_includes_the_second_models_worst_case(api, fake):
    from screening.services import estimate_job_cost

    body = {"criteria": CRITERIA, "papers": PAPERS, "model": FIRST,
            "second_opinion": {"model": SECOND, "apply_to": "excluded"}}
    job = api.post(URL, body, format="json").json()
    expected = sum(estimate_job_cost(model=m, criteria=CRITERIA, papers=PAPERS) for m in (FIRST, SECOND))
    assert Decimal(str(job["estimated_cost_usd"])) == pytest.approx(expected)
    stored = ScreeningJob.objects.get(pk=job["id"])
    assert stored.second_opinion == {"model": SECOND, "apply_to": "excluded", "rule": "any_include"}


@pytest.mark.django_db
@pytest.mark.parametrize("second, field", [
    ({"model": "no-such-model"}, "second_opinion.model"),
    ({"model": SECOND, "apply_to": "excluded", "rule": "both_include"}, "second_opinion.rule"),
    ({"model": SECOND, "apply_to": "everything"}, "second_opinion.apply_to"),
    ({"model": SECOND, "extra": 1}, "second_opinion.extra"),
])
def test_a_bad_second_opinion_is_refused_before_anything_is_stored(api, second, field):
    response = api.post(URL, {"criteria": CRITERIA, "papers": PAPERS, "second_opinion": second}, format="json")
    assert response.status_code == 400
    body = response.json()
    assert body["error_category"] == "validation" and field in body["errors"], body
    assert not ScreeningJob.objects.exists()


def test_the_rules_table():
    assert decide("exclude", "include", "any_include") == "include"
    assert decide("include", "exclude", "any_include") == "include"
    assert decide("exclude", "exclude", "any_include") == "exclude"
    assert decide("include", "exclude", "both_include") == "exclude"
    assert decide("include", "include", "both_include") == "include"
    assert decide("exclude", None, "any_include") == "exclude"  # no second answer: the first stands


# --- policy replay ------------------------------------------------------------------
HUMAN_INCLUDES = {"p2", "p3", "p4", "p6"}


def exact_interval(x: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Clopper–Pearson from the beta quantiles (independent of the service's binomtest)."""
    from scipy.stats import beta

    alpha = 1 - confidence
    low = 0.0 if x == 0 else beta.ppf(alpha / 2, x, n - x + 1)
    high = 1.0 if x == n else beta.ppf(1 - alpha / 2, x + 1, n - x)
    return low, high


@pytest.mark.django_db(transaction=True)
def test_the_evaluation_replays_each_policy_on_the_reviewed_papers(api, fake, run_queue):
    job, _ = run(api, run_queue, apply_to="excluded", rule="any_include")
    calls = fake.count
    reviews = [{"paper_id": p["id"], "decision": "include" if p["id"] in HUMAN_INCLUDES else "exclude",
                "reviewer": "ana"} for p in PAPERS]
    assert api.post(f"{URL}/{job['id']}/reviews", {"reviews": reviews}, format="json").status_code == 200
    evaluation = api.get(f"{URL}/{job['id']}/evaluation").json()
    assert fake.count == calls  # a replay makes no call
    policies = {row["policy"]: row for row in evaluation["policies"]}
    # Known answers: first includes p0-p3; second (asked p4-p9) includes p4, p5; humans include p2, p3, p4, p6.
    expected = {
        "first_model": ({"tp": 2, "fp": 2, "fn": 2, "tn": 4}, 10),
        "second_model": ({"tp": 1, "fp": 1, "fn": 1, "tn": 3}, 6),
        "any_include": ({"tp": 3, "fp": 3, "fn": 1, "tn": 3}, 10),
        "both_include": ({"tp": 2, "fp": 2, "fn": 2, "tn": 4}, 10),
    }
    for name, (matrix, n) in expected.items():
        row = policies[name]
        assert row["confusion_matrix"] == matrix and row["evaluated"] == n, name
        tp, fn = matrix["tp"], matrix["fn"]
        low, high = exact_interval(tp, tp + fn)
        assert row["recall"]["estimate"] == pytest.approx(tp / (tp + fn))
        assert (row["recall"]["lower"], row["recall"]["upper"]) == (pytest.approx(low), pytest.approx(high))
        assert row["specificity"]["estimate"] == pytest.approx(matrix["tn"] / (matrix["tn"] + matrix["fp"]))
        assert row["left_for_humans_share"] == pytest.approx((matrix["tp"] + matrix["fp"]) / n)
    split = job["usage_by_model"]
    first_per_1000 = split[FIRST]["cost_usd"] / 10 * 1000
    second_per_1000 = split[SECOND]["cost_usd"] / 6 * 1000
    assert policies["first_model"]["cost_per_1000_usd"] == pytest.approx(first_per_1000, rel=1e-4)
    assert policies["second_model"]["cost_per_1000_usd"] == pytest.approx(second_per_1000, rel=1e-4)
    assert policies["any_include"]["cost_per_1000_usd"] == pytest.approx(first_per_1000 + second_per_1000 * 0.6,
                                                                         rel=1e-4)


@pytest.mark.django_db(transaction=True)
def test_without_a_second_opinion_only_the_first_models_policies_are_replayed(api, fake, run_queue):
    job, _ = run(api, run_queue)
    reviews = [{"paper_id": p["id"], "decision": "include" if p["id"] in HUMAN_INCLUDES else "exclude",
                "reviewer": "ana"} for p in PAPERS]
    api.post(f"{URL}/{job['id']}/reviews", {"reviews": reviews}, format="json")
    names = [row["policy"] for row in api.get(f"{URL}/{job['id']}/evaluation").json()["policies"]]
    assert names[0] == "first_model" and "any_include" not in names and "second_model" not in names
