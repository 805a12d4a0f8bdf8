"""Request data and helpers shared by the screening API tests (tests/trust_support.py builds on the same papers)."""

from __future__ import annotations

from tests.factories import paper

URL = "/v1/screening/jobs"
CRITERIA = {"research_question": "Do triptans relieve migraine?",
            "inclusion": ["randomized trial", "migraine treatment"], "exclusion": ["pediatric children"]}
PAPERS = [
    paper("p1", "Sumatriptan for migraine treatment", "A randomized trial of migraine treatment in adults."),
    paper("p2", "Hip fracture surgery outcomes", "A cohort of elderly patients after hip surgery."),
    paper("p3", "Migraine in children", "A randomized trial of migraine treatment in pediatric children."),
    paper("p4", "Migraine epidemiology", "Prevalence of migraine in a population survey."),
]


def submit(api, **body):
    payload = {"criteria": CRITERIA, "papers": PAPERS, **body}
    return api.post(URL, payload, format="json")


def finished(api, run_queue, job_id):
    run_queue()
    return api.get(f"{URL}/{job_id}").json()
