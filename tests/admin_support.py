"""Admin page addresses, request data and helpers shared by the admin tests (the `staff` client is in conftest)."""

from __future__ import annotations

from tests.factories import paper

SCREENING = "/admin/screening/screeningjob/"
INDEXING = "/admin/indexer/indexjob/"
KEYS = "/admin/crystallise/apikey/"
COSTS = "/admin/costs/"
REQUEST_OPENAI_KEY = "sk-request-only-secret-4242424242"
CRITERIA = {"research_question": "Do triptans relieve migraine?",
            "inclusion": ["randomized trial", "migraine treatment"], "exclusion": ["pediatric children"]}
PAPERS = [
    paper("p1", "Sumatriptan for migraine treatment", "A randomized trial of migraine treatment in adults.",
          keywords=["migraine"], year=2004, doi="10.1/p1"),
    paper("p2", "Hip fracture surgery outcomes", "A cohort of elderly patients after hip surgery."),
]
RECORDS = [{"id": "r1", "title": "Sumatriptan trial", "abstract": " ".join(["Sumatriptan relieved migraine pain."] * 12)}]


def submit(api, **extra) -> str:
    response = api.post("/v1/screening/jobs", {"criteria": CRITERIA, "papers": PAPERS, "project_id": "proj-a"},
                        format="json", **extra)
    assert response.status_code == 202, response.json()
    return response.json()["id"]


def action(client, url, name, *ids):
    return client.post(url, {"action": name, "_selected_action": [str(i) for i in ids]}, follow=True)


def page_messages(response) -> list[str]:
    return [str(m) for m in response.context["messages"]]
