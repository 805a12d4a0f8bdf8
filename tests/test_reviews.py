"""Human reviews: recorded all or nothing, append-only, summed up per result, filtered and exported."""

from __future__ import annotations

import csv
import io
import json
import threading

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from screening.models import HumanReview, ReviewState, ScreeningResult, ValidationSampleItem
from tests.trust_support import URL, post_reviews, review, screened

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def _mock_backend(settings):
    settings.CRYSTALLISE_LLM_BACKEND = "mock"


@pytest.fixture
def job(api, run_queue):
    return screened(api, run_queue)


def results(api, job_id, **params) -> dict:
    response = api.get(f"{URL}/{job_id}/results", params)
    assert response.status_code == 200, response.json()
    return {r["paper_id"]: r for r in response.json()["results"]}


def test_reviews_are_recorded_and_shown_on_results(api, job):
    model = {r["paper_id"]: r["decision"] for r in job["results"]}
    assert model == {"p1": "include", "p2": "exclude", "p3": "exclude", "p4": "exclude", "10.1000/x.5": "include"}
    response = post_reviews(api, job["id"], [review("p1", "exclude", note="Not a trial"), review("p2", "exclude")])
    assert response.status_code == 200, response.json()
    assert response.json() == {"recorded": 2, "unchanged": 0}
    rows = results(api, job["id"])
    assert {k: (v["human_decision"], v["conflict"], v["final_decision"]) for k, v in rows.items()} == {
        "p1": ("exclude", False, "exclude"), "p2": ("exclude", False, "exclude"), "p3": (None, False, "exclude"),
        "p4": (None, False, "exclude"), "10.1000/x.5": (None, False, "include")}
    inline = {r["paper_id"]: r["final_decision"] for r in api.get(f"{URL}/{job['id']}").json()["results"]}
    assert inline["p1"] == "exclude" and inline["10.1000/x.5"] == "include"


def test_same_review_again_is_unchanged_and_not_stored_twice(api, job):
    post_reviews(api, job["id"], [review("p1", "include", note="RCT")])
    again = post_reviews(api, job["id"], [review("p1", "include", note="RCT"), review("p2", "exclude")])
    assert again.json() == {"recorded": 1, "unchanged": 1}
    assert HumanReview.objects.filter(job_id=job["id"]).count() == 2


def test_reviewers_who_disagree_make_a_conflict_and_the_model_decides_meanwhile(api, job):
    post_reviews(api, job["id"], [review("p3", "include", "alice"), review("p3", "exclude", "bob")])
    row = results(api, job["id"])["p3"]
    assert (row["human_decision"], row["conflict"], row["final_decision"]) == (None, True, "exclude")
    post_reviews(api, job["id"], [review("p3", "include", "bob")])  # bob changes his mind: the latest counts
    row = results(api, job["id"])["p3"]
    assert (row["human_decision"], row["conflict"], row["final_decision"]) == ("include", False, "include")


def test_history_lists_every_review_with_from_to_and_the_key(api, job):
    post_reviews(api, job["id"], [review("10.1000/x.5", "include", "alice")])
    post_reviews(api, job["id"], [review("10.1000/x.5", "exclude", "alice", note="Animal study")])
    response = api.get(f"{URL}/{job['id']}/results/10.1000/x.5/reviews")
    assert response.status_code == 200, response.json()
    body = response.json()
    assert body["human_decision"] == "exclude" and body["model_decision"] == "include"
    assert body["final_decision"] == "exclude" and body["conflict"] is False
    assert body["reviewers"] == {"alice": {"decision": "exclude", "note": "Animal study"}}
    history = [(h["reviewer"], h["previous_decision"], h["decision"], h["note"]) for h in body["results"]]
    assert history == [("alice", None, "include", ""), ("alice", "include", "exclude", "Animal study")]
    assert all(h["api_key"] and h["created_at"] for h in body["results"]) and body["next"] is None


def test_history_of_a_paper_without_reviews_is_empty_and_an_unknown_paper_is_404(api, job):
    body = api.get(f"{URL}/{job['id']}/results/p4/reviews").json()
    assert body["results"] == [] and body["human_decision"] is None and body["final_decision"] == "exclude"
    missing = api.get(f"{URL}/{job['id']}/results/nope/reviews")
    assert missing.status_code == 404 and missing.json()["error_category"] == "not_found"


def test_csv_file_of_reviews_with_spelled_out_decisions(api, job):
    text = ('Paper ID,Decision,Reviewer,Note\np1,1,alice,\np2,no,alice,"two\nlines"\n'
            "p3,TRUE,bob,\n10.1000/x.5,exclude,bob,\n\n")
    upload = io.BytesIO(text.encode())
    upload.name = "reviews.csv"
    response = api.post(f"{URL}/{job['id']}/reviews", {"reviews_file": upload}, format="multipart")
    assert response.status_code == 200, response.json()
    assert response.json() == {"recorded": 4, "unchanged": 0}
    rows = results(api, job["id"])
    assert [rows[p]["human_decision"] for p in ("p1", "p2", "p3", "10.1000/x.5")] == [
        "include", "exclude", "include", "exclude"]
    assert HumanReview.objects.get(result__paper__paper_id="p2").note == "two\nlines"


@pytest.mark.parametrize("text, field", [
    ("paper_id,decision\np1,include\n", "reviews_file"),                 # no reviewer column
    ("paper_id,decision,reviewer\np1,maybe,alice\n", "reviews_file line 2.decision"),
    ("paper_id,decision,reviewer\np1,include,\n", "reviews_file line 2.reviewer"),
    ("paper_id,decision,reviewer\n", "reviews_file"),                     # no rows
])
def test_bad_review_files_are_refused_naming_the_problem(api, job, text, field):
    upload = io.BytesIO(text.encode())
    upload.name = "r.csv"
    response = api.post(f"{URL}/{job['id']}/reviews", {"reviews_file": upload}, format="multipart")
    assert response.status_code == 400
    assert response.json()["error_category"] == "validation" and field in response.json()["errors"]
    assert not HumanReview.objects.exists()


@pytest.mark.parametrize("item, field", [
    ({"paper_id": "p1", "decision": "maybe", "reviewer": "a"}, "reviews[1].decision"),
    ({"paper_id": "p1", "decision": "1", "reviewer": "a"}, "reviews[1].decision"),  # JSON says include/exclude
    ({"paper_id": "p1", "decision": "include", "reviewer": " "}, "reviews[1].reviewer"),
    ({"paper_id": "p1", "decision": "include", "reviewer": "r" * 101}, "reviews[1].reviewer"),
    ({"paper_id": "p1", "decision": "include", "reviewer": "a", "note": "n" * 2001}, "reviews[1].note"),
    ({"paper_id": "p1", "decision": "include", "reviewer": "a\x00"}, "reviews[1].reviewer"),
    ({"paper_id": "p1", "decision": "include", "reviewer": "a", "notes": "typo"}, "reviews[1].notes"),
    ({"decision": "include", "reviewer": "a"}, "reviews[1].paper_id"),
    ("p1", "reviews[1]"),
])
def test_invalid_reviews_are_refused_and_nothing_is_stored(api, job, item, field):
    response = post_reviews(api, job["id"], [review("p2", "exclude"), item])
    assert response.status_code == 400, response.json()
    body = response.json()
    assert body["error_category"] == "validation" and field in body["errors"], body
    assert not HumanReview.objects.exists() and not ReviewState.objects.exists()


def test_unknown_papers_are_named_and_nothing_is_stored(api, job):
    response = post_reviews(api, job["id"], [review("p1", "include"), review("ghost", "include"),
                                             review("ghost-2", "exclude")])
    assert response.status_code == 400
    body = response.json()
    assert "2 reviews name papers that are not in this job" in body["detail"] and "'ghost'" in body["detail"]
    assert body["errors"]["reviews"] == ["reviews[1]: 'ghost'", "reviews[2]: 'ghost-2'"]
    assert not HumanReview.objects.exists()


def test_papers_without_a_result_yet_are_refused(api, run_queue):
    pending = screened(api, run_queue, run=False)
    response = post_reviews(api, pending["id"], [review("p1", "include")])
    assert response.status_code == 400 and "no screening result yet" in response.json()["detail"]


def test_the_same_paper_and_reviewer_twice_in_one_call_is_refused(api, job):
    response = post_reviews(api, job["id"], [review("p1", "include"), review("p1", "exclude")])
    assert response.status_code == 400 and "reviews[1]" in response.json()["errors"]["reviews"][0]
    assert post_reviews(api, job["id"], [review("p1", "include"), review("p1", "exclude", "bob")]).status_code == 200


@pytest.mark.parametrize("body, field", [
    ({}, "reviews"), ({"reviews": []}, "reviews"), ({"reviews": {"p1": "include"}}, "reviews"),
    ({"reviews": [review("p1", "include")], "extra": 1}, "extra"),
])
def test_malformed_bodies_are_400(api, job, body, field):
    response = api.post(f"{URL}/{job['id']}/reviews", body, format="json")
    assert response.status_code == 400 and field in response.json()["errors"]


def test_more_than_ten_thousand_reviews_are_refused(api, job):
    response = post_reviews(api, job["id"], [review("p1", "include", f"r{i}") for i in range(10_001)])
    assert response.status_code == 400 and "At most 10000" in response.json()["detail"]


def test_reviews_and_a_file_together_are_refused(api, job):
    upload = io.BytesIO(b"paper_id,decision,reviewer\np1,1,a\n")
    upload.name = "r.csv"
    response = api.post(f"{URL}/{job['id']}/reviews",
                        {"reviews_file": upload, "reviews": json.dumps([review("p1", "include")])}, format="multipart")
    assert response.status_code == 400 and "not both" in response.json()["detail"]


def test_auth_missing_job_other_caller_and_wrong_method(api, anon, job):
    path = f"{URL}/{job['id']}/reviews"
    assert anon.post(path, {"reviews": [review("p1", "include")]}, format="json").status_code == 401
    from rest_framework.test import APIClient

    other = APIClient()
    other.credentials(HTTP_X_API_KEY="another-callers-key")
    for response in (other.post(path, {"reviews": [review("p1", "include")]}, format="json"),
                     other.get(f"{URL}/{job['id']}/results/p1/reviews"),
                     api.post(f"{URL}/00000000-0000-0000-0000-000000000000/reviews", {"reviews": []}, format="json")):
        assert response.status_code == 404 and response.json()["error_category"] == "not_found"
    wrong = api.get(path)
    assert wrong.status_code == 405 and wrong.json()["error_category"] == "validation"
    assert api.post(f"{URL}/{job['id']}/results/p1/reviews", {}, format="json").status_code == 405
    assert not HumanReview.objects.exists()


def test_results_filter_on_reviewed_conflict_and_final_decision(api, job):
    post_reviews(api, job["id"], [review("p1", "exclude"), review("p3", "include"), review("p3", "exclude", "bob"),
                                  review("p2", "include")])
    ids = lambda **params: sorted(results(api, job["id"], **params))  # noqa: E731
    assert ids(reviewed="true") == ["p1", "p2", "p3"]
    assert ids(reviewed="false") == ["10.1000/x.5", "p4"]
    assert ids(conflict="true") == ["p3"]
    assert ids(conflict="false") == ["10.1000/x.5", "p1", "p2", "p4"]
    assert ids(final_decision="include") == ["10.1000/x.5", "p2"]
    assert ids(final_decision="exclude") == ["p1", "p3", "p4"]
    assert ids(final_decision="exclude", reviewed="true", conflict="false") == ["p1"]
    for bad in ({"reviewed": "maybe"}, {"conflict": "2"}, {"final_decision": "error"}):
        response = api.get(f"{URL}/{job['id']}/results", bad)
        assert response.status_code == 400 and set(bad) <= set(response.json()["errors"])


def test_exports_carry_the_three_review_columns(api, job):
    post_reviews(api, job["id"], [review("p1", "exclude"), review("p3", "include"), review("p3", "exclude", "bob")])
    text = b"".join(api.get(f"{URL}/{job['id']}/results", {"format": "csv"}).streaming_content).decode()
    rows = {r["paper_id"]: r for r in csv.DictReader(io.StringIO(text))}
    assert (rows["p1"]["human_decision"], rows["p1"]["conflict"], rows["p1"]["final_decision"]) == (
        "exclude", "false", "exclude")
    assert (rows["p3"]["human_decision"], rows["p3"]["conflict"], rows["p3"]["final_decision"]) == ("", "true", "exclude")
    assert rows["10.1000/x.5"]["final_decision"] == "include"
    lines = b"".join(api.get(f"{URL}/{job['id']}/results", {"format": "jsonl"}).streaming_content).decode()
    first = json.loads(lines.splitlines()[0])
    assert (first["human_decision"], first["conflict"], first["final_decision"]) == ("exclude", False, "exclude")
    ris = b"".join(api.get(f"{URL}/{job['id']}/results", {"format": "ris"}).streaming_content).decode()
    records = ris.split("ER  -")
    assert "crystallise human decision: exclude" in records[0] and "crystallise final decision: exclude" in records[0]
    assert "crystallise: reviewers disagree" in records[2]


def test_result_pages_with_reviews_take_the_same_queries_at_any_size(api, run_queue):
    from tests.factories import paper

    def page_queries(n):
        job = screened(api, run_queue, papers=[paper(f"q{i}", f"Migraine trial {i}") for i in range(n)])
        post_reviews(api, job["id"], [review(f"q{i}", "include", reviewer) for i in range(n) for reviewer in "ab"])
        with CaptureQueriesContext(connection) as ctx:
            assert len(api.get(f"{URL}/{job['id']}/results", {"page_size": 1000}).json()["results"]) == n
        return len(ctx)

    assert page_queries(3) == page_queries(40)


def test_deleting_a_reviewed_job_removes_its_reviews_and_samples(api, job):
    post_reviews(api, job["id"], [review("p1", "exclude"), review("p1", "include", "bob")])
    assert api.post(f"{URL}/{job['id']}/validation-samples", {"size": 2}, format="json").status_code == 201
    assert api.delete(f"{URL}/{job['id']}").status_code == 204
    assert not HumanReview.objects.exists() and not ReviewState.objects.exists()
    assert not ScreeningResult.objects.exists() and not ValidationSampleItem.objects.exists()


@pytest.mark.skipif(connection.vendor != "postgresql", reason="concurrent writers need PostgreSQL")
def test_concurrent_calls_on_the_same_papers_lose_no_decision(job):
    from rest_framework.test import APIClient

    barrier = threading.Barrier(4)
    codes = []

    def post(reviewer, decision):
        client = APIClient()
        client.credentials(HTTP_X_API_KEY="test-service-key")
        barrier.wait()
        codes.append(post_reviews(client, job["id"], [review(p, decision, reviewer) for p in ("p1", "p2", "p3")])
                     .status_code)
        connection.close()

    threads = [threading.Thread(target=post, args=args)
               for args in (("alice", "include"), ("bob", "include"), ("carol", "exclude"), ("dan", "include"))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert codes == [200] * 4
    for state in ReviewState.objects.filter(job_id=job["id"]):
        assert set(state.reviewers) == {"alice", "bob", "carol", "dan"} and state.conflict is True
    assert HumanReview.objects.filter(job_id=job["id"]).count() == 12


def test_a_job_deleted_while_its_reviews_are_recorded_is_404_and_nothing_is_stored(api, job, monkeypatch):
    """DELETE wins the race between the review call's checks and its writes: 404 in the error shape, not 500."""
    from screening import reviews as reviews_module
    from screening.models import ScreeningJob
    from screening.services import job_delete

    checked = reviews_module._resolve

    def resolve_then_lose_the_job(job_row, items):
        resolved = checked(job_row, items)
        job_delete(job=ScreeningJob.objects.get(pk=job_row.pk))  # another client's DELETE lands here
        return resolved

    monkeypatch.setattr(reviews_module, "_resolve", resolve_then_lose_the_job)
    paper_id = next(iter(results(api, job["id"])))
    response = post_reviews(api, job["id"], [review(paper_id, "include")])
    assert response.status_code == 404, response.json()
    assert response.json()["error_category"] == "not_found"
    assert not HumanReview.objects.exists() and not ReviewState.objects.exists()


@pytest.mark.skipif(connection.vendor != "postgresql", reason="concurrent writers need PostgreSQL")
def test_a_delete_during_a_review_call_waits_for_it_and_removes_its_reviews(api, job, monkeypatch):
    """DELETE arriving while reviews are being written: no 500 on either side; the job goes with its reviews."""
    import time

    from rest_framework.test import APIClient

    from screening import reviews as reviews_module

    writing = threading.Event()
    original = reviews_module._save_states

    def slow_save(states, now):
        writing.set()
        time.sleep(0.5)  # the review call's transaction stays open while DELETE arrives
        return original(states, now)

    monkeypatch.setattr(reviews_module, "_save_states", slow_save)
    codes = {}

    def post() -> None:
        client = APIClient()
        client.credentials(HTTP_X_API_KEY="test-service-key")
        codes["review"] = post_reviews(client, job["id"], [review("p1", "include")]).status_code
        connection.close()

    thread = threading.Thread(target=post)
    thread.start()
    assert writing.wait(10)
    codes["delete"] = api.delete(f"{URL}/{job['id']}").status_code
    thread.join(10)
    assert codes == {"review": 200, "delete": 204}
    assert not HumanReview.objects.filter(job_id=job["id"]).exists()
    assert not ReviewState.objects.filter(job_id=job["id"]).exists()
