"""Helpers for the human review, evaluation and validation tests: screened jobs on the mock backend."""

from __future__ import annotations

from tests.factories import paper
from tests.screening_support import CRITERIA, URL
from tests.screening_support import PAPERS as SCREENING_PAPERS

PAPERS = [
    *SCREENING_PAPERS,
    paper("10.1000/x.5", "Rizatriptan randomized trial", "Randomized trial of rizatriptan migraine treatment."),
]


def screened(api, run_queue, *, papers=PAPERS, criteria=CRITERIA, threshold=1.0, run=True) -> dict:
    """A screening job (completed unless run=False) as the API shows it."""
    response = api.post(URL, {"criteria": criteria, "papers": papers, "threshold": threshold}, format="json")
    assert response.status_code == 202, response.json()
    job_id = response.json()["id"]
    if run:
        run_queue()
    return api.get(f"{URL}/{job_id}").json()


def post_reviews(api, job_id, reviews):
    return api.post(f"{URL}/{job_id}/reviews", {"reviews": reviews}, format="json")


def review(paper_id, decision, reviewer="alice", note=None):
    item = {"paper_id": paper_id, "decision": decision, "reviewer": reviewer}
    if note is not None:
        item["note"] = note
    return item
