"""Hand-picked bad input.

Each case must answer a clear 4xx in the contract's error shape and store
nothing half-way (job, paper, record and secret counts unchanged).
"""

from __future__ import annotations

import json

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from crystallise.jobs.models import JobSecret
from indexer.models import IndexJob, Record
from screening.models import Paper, ScreeningJob
from tests.factories import CRITERIA, papers

pytestmark = pytest.mark.django_db

URL = "/v1/screening/jobs"
PNG = b"\x89PNG\r\n\x1a\n" + b"\x00\x00\x00\rIHDR" + bytes(range(256)) * 4
RIS_OK = "TY  - JOUR\nID  - r1\nTI  - A randomized trial\nAB  - Adults with migraine.\nER  - \n"


def counts() -> tuple[int, ...]:
    return (ScreeningJob.objects.count(), Paper.objects.count(), IndexJob.objects.count(),
            Record.objects.count(), JobSecret.objects.count())


def assert_rejected(response, status: int | tuple[int, ...] = 400, category: str = "validation") -> dict:
    statuses = status if isinstance(status, tuple) else (status,)
    assert response.status_code in statuses, (response.status_code, response.content[:500])
    assert response["Content-Type"].startswith("application/json")
    body = response.json()
    assert body["error_category"] == category, body
    assert isinstance(body["detail"], str) and body["detail"]
    assert set(body) <= {"error_category", "detail", "errors", "estimated_cost_usd", "active_job_id", "job_id"}
    if "errors" in body:
        assert all(isinstance(v, list) and v for v in body["errors"].values())
    return body


@pytest.fixture
def unchanged():
    before = counts()
    yield
    assert counts() == before, "a rejected request stored something"


def job(**changes) -> dict:
    return {"criteria": CRITERIA, "papers": papers(2), **changes}


@pytest.mark.parametrize("path", ["/v1/screening/jobs", "/v1/criteria/consolidate", "/v1/indexer/run", "/v1/indexer/jobs"])
@pytest.mark.parametrize("raw", [b"{", b'{"criteria": ', b"\xff\xfe{}", b'{"papers": [1,]}', b"[1, 2", b"NaN"])
def test_malformed_json_is_a_validation_error(api, unchanged, path, raw):
    assert_rejected(api.generic("POST", path, raw, content_type="application/json"))


@pytest.mark.parametrize("path", ["/v1/screening/jobs", "/v1/criteria/consolidate", "/v1/indexer/run", "/v1/indexer/jobs"])
@pytest.mark.parametrize("content_type", ["text/plain", "application/xml", "application/x-www-form-urlencoded; charset=bogus"])
def test_wrong_content_type_is_rejected(api, unchanged, path, content_type):
    body = json.dumps(job()).encode()
    response = api.generic("POST", path, body, content_type=content_type)
    assert_rejected(response, (400, 415))


@pytest.mark.parametrize("path", ["/v1/screening/jobs", "/v1/criteria/consolidate", "/v1/indexer/run", "/v1/indexer/jobs"])
def test_json_body_over_the_limit_is_413_without_reading_it(api, unchanged, path):
    # The declared length decides before anything is read: no 64 MiB buffer needed.
    body = json.dumps(job()).encode()
    response = api.generic("POST", path, body, content_type="application/json",
                           CONTENT_LENGTH=str(64 * 1024 * 1024 + 1))
    assert_rejected(response, 413)


def test_json_body_over_a_lowered_limit_is_413(api, unchanged, settings):
    settings.CRYSTALLISE_MAX_JSON_BYTES = 1024
    response = api.post(URL, job(papers=papers(50)), format="json")
    assert_rejected(response, 413)


@pytest.mark.parametrize(("path", "field", "extra"), [
    (URL, "papers_file", {"criteria": json.dumps(CRITERIA)}),
    ("/v1/indexer/jobs", "records_file", {}),
])
def test_upload_over_the_limit_is_413(api, unchanged, settings, path, field, extra):
    settings.CRYSTALLISE_LLM_BACKEND = "mock"
    settings.CRYSTALLISE_MAX_UPLOAD_BYTES = 100
    upload = SimpleUploadedFile("papers.ris", RIS_OK.encode() * 5, content_type="application/x-research-info-systems")
    body = assert_rejected(api.post(path, {**extra, field: upload}, format="multipart"), 413)
    assert body["errors"] == {field: ["File too large."]}


@pytest.mark.parametrize("path", ["/v1/screening/jobs", "/v1/indexer/jobs"])
@pytest.mark.parametrize("what", ["fields", "files"])
def test_too_many_form_fields_or_files_is_a_validation_error(api, unchanged, settings, path, what):
    settings.CRYSTALLISE_LLM_BACKEND = "mock"
    if what == "fields":
        data = {f"f{i}": "x" for i in range(settings.DATA_UPLOAD_MAX_NUMBER_FIELDS + 1)}
    else:
        data = {f"f{i}": SimpleUploadedFile(f"{i}.ris", RIS_OK.encode()) for i in range(settings.DATA_UPLOAD_MAX_NUMBER_FILES + 1)}
    body = assert_rejected(api.post(path, data, format="multipart"))
    assert f"too many {'form fields' if what == 'fields' else 'files'}" in body["detail"]


def test_more_than_100000_papers_is_rejected(api, unchanged, settings):
    settings.CRYSTALLISE_LLM_BACKEND = "mock"
    many = [{"id": str(i)} for i in range(100_001)]
    body = assert_rejected(api.post(URL, {"criteria": CRITERIA, "papers": many}, format="json"))
    assert "100000" in json.dumps(body).replace(",", "") or "100,000" in json.dumps(body)


def test_more_than_100000_records_in_an_index_job_is_rejected(api, unchanged, settings):
    settings.CRYSTALLISE_LLM_BACKEND = "mock"
    many = [{"id": str(i)} for i in range(100_001)]
    assert_rejected(api.post("/v1/indexer/jobs", {"records": many}, format="json"))


def test_more_than_100_records_in_a_synchronous_run_is_rejected(api, unchanged, settings):
    settings.CRYSTALLISE_LLM_BACKEND = "mock"
    many = [{"id": str(i), "title": "t", "abstract": "a"} for i in range(101)]
    assert_rejected(api.post("/v1/indexer/run", {"records": many}, format="json"))


def test_duplicate_paper_ids_are_rejected(api, unchanged, settings):
    settings.CRYSTALLISE_LLM_BACKEND = "mock"
    dup = [{"id": "pmid:1", "title": "a"}, {"id": "pmid:2", "title": "b"}, {"id": "pmid:1", "title": "c"}]
    body = assert_rejected(api.post(URL, {"criteria": CRITERIA, "papers": dup}, format="json"))
    assert "pmid:1" in json.dumps(body)
    assert_rejected(api.post("/v1/indexer/jobs", {"records": dup}, format="json"))


UPLOADS = {
    "nul-ris": ("papers.ris", RIS_OK.replace("trial", "tr\x00ial").encode(), "application/x-research-info-systems"),
    "nul-csv": ("papers.csv", b"id,title,abstract\n1,A tr\x00ial,adults\n", "text/csv"),
    "latin1-ris": ("papers.ris", RIS_OK.replace("Adults", "Adultes \xe9t\xe9").encode("latin-1"),
                   "application/x-research-info-systems"),
    "bad-utf8-csv": ("papers.csv", b"id,title,abstract\n1,caf\xc3(,x\n", "text/csv"),
    "png-as-ris": ("papers.ris", PNG, "application/x-research-info-systems"),
    "png-as-csv": ("papers.csv", PNG, "text/csv"),
    "utf16-csv": ("papers.csv", "id,title\n1,a\n".encode("utf-16"), "text/csv"),
    "empty-ris": ("papers.ris", b"", "application/x-research-info-systems"),
    "html-as-txt": ("papers.txt", b"<html><body>Not a bibliography</body></html>", "text/plain"),
    "ris-without-records": ("papers.ris", b"Provider: nobody\n\n", "application/x-research-info-systems"),
    "dup-ids-csv": ("papers.csv", b"id,title\n1,a\n1,b\n", "text/csv"),
}


@pytest.mark.parametrize("case", sorted(UPLOADS))
def test_bad_uploads_are_rejected(api, unchanged, settings, case):
    settings.CRYSTALLISE_LLM_BACKEND = "mock"
    name, data, content_type = UPLOADS[case]
    upload = SimpleUploadedFile(name, data, content_type=content_type)
    body = assert_rejected(api.post(URL, {"criteria": json.dumps(CRITERIA), "papers_file": upload}, format="multipart"))
    assert "papers_file" in body.get("errors", {}) or "papers_file" in body["detail"]
    upload = SimpleUploadedFile(name, data, content_type=content_type)
    assert_rejected(api.post("/v1/indexer/jobs", {"records_file": upload}, format="multipart"))


@pytest.mark.parametrize("threshold", [-1, 2, "NaN", "nan", "Infinity", "-Infinity", "abc", "", None, [], {}, True])
def test_absurd_thresholds_are_rejected(api, unchanged, settings, threshold):
    settings.CRYSTALLISE_LLM_BACKEND = "mock"
    body = assert_rejected(api.post(URL, job(threshold=threshold), format="json"))
    assert "threshold" in body["errors"]


@pytest.mark.parametrize("raw", [b"NaN", b"Infinity", b"-Infinity", b"1e999"])
def test_non_finite_threshold_literals_are_rejected(api, unchanged, settings, raw):
    settings.CRYSTALLISE_LLM_BACKEND = "mock"
    text = json.dumps(job(threshold=0.5)).replace("0.5", raw.decode())
    assert_rejected(api.generic("POST", URL, text.encode(), content_type="application/json"))


@pytest.mark.parametrize("value", ["NaN", "nan", "Infinity", "-1", "2", "abc"])
def test_absurd_min_confidence_is_rejected(api, unchanged, settings, value):
    settings.CRYSTALLISE_LLM_BACKEND = "mock"
    body = {"criteria": [{"text": "adults", "kind": "inclusion"}], "min_confidence": value}
    assert_rejected(api.post("/v1/criteria/consolidate", body, format="json"))


@pytest.mark.parametrize("budget", [-1, "-0.01", "NaN", "Infinity", "abc", "1e999"])
@pytest.mark.parametrize("path", ["/v1/screening/jobs", "/v1/criteria/consolidate", "/v1/indexer/run", "/v1/indexer/jobs"])
def test_negative_or_absurd_budgets_are_rejected(api, unchanged, settings, path, budget):
    settings.CRYSTALLISE_LLM_BACKEND = "mock"
    bodies = {
        "/v1/screening/jobs": job(),
        "/v1/criteria/consolidate": {"criteria": [{"text": "adults", "kind": "inclusion"}]},
        "/v1/indexer/run": {"records": [{"id": "1", "title": "t", "abstract": "a"}]},
        "/v1/indexer/jobs": {"records": [{"id": "1", "title": "t", "abstract": "a"}]},
    }
    body = assert_rejected(api.post(path, {**bodies[path], "max_estimated_cost_usd": budget}, format="json"))
    assert "max_estimated_cost_usd" in body["errors"]


UNKNOWN = {
    "/v1/screening/jobs": [job(colour="blue"), job(criteria={**CRITERIA, "colour": "blue"}),
                           job(clusters={"by": "topic", "colour": "blue"})],
    "/v1/criteria/consolidate": [{"criteria": [{"text": "adults", "kind": "inclusion"}], "colour": "blue"},
                                 {"criteria": [{"text": "adults", "kind": "inclusion", "colour": "blue"}]}],
    "/v1/indexer/run": [{"records": [{"id": "1", "title": "t", "abstract": "a"}], "colour": "blue"}],
    "/v1/indexer/jobs": [{"records": [{"id": "1", "title": "t", "abstract": "a"}], "colour": "blue"}],
}


@pytest.mark.parametrize(("path", "index"), [(p, i) for p, bodies in UNKNOWN.items() for i in range(len(bodies))])
def test_unknown_fields_are_rejected(api, unchanged, settings, path, index):
    settings.CRYSTALLISE_LLM_BACKEND = "mock"
    body = assert_rejected(api.post(path, UNKNOWN[path][index], format="json"))
    assert any("colour" in name for name in body["errors"]), body


@pytest.mark.parametrize("value", [None, "", 5, "x" * 300, ["a"], {"a": 1}])
def test_bad_project_ids_are_rejected_or_ignored_cleanly(api, settings, value):
    settings.CRYSTALLISE_LLM_BACKEND = "mock"
    response = api.post(URL, job(project_id=value), format="json")
    assert response.status_code in (202, 400), response.content
    if response.status_code == 400:
        assert_rejected(response)


@pytest.mark.parametrize("bad", [
    [{"title": "no id"}], [{"id": ""}], [{"id": None}], [{"id": ["x"]}], ["not an object"], [None],
    [{"id": "1", "year": "abc"}], [{"id": "1", "keywords": {"a": 1}}], [{"id": "1", "title": {"t": 1}}],
    [{"id": "1", "abstract": "x" * 20_001}], [{"id": "x" * 600}], {"id": "1"}, "[]", [],
    [{"id": "1\x00"}], [{"id": "1", "title": "a\x00b"}], [{"id": "1", "abstract": "a\x00"}],
    [{"id": "1", "keywords": ["k\x00"]}],
])
def test_bad_papers_are_rejected(api, unchanged, settings, bad):
    settings.CRYSTALLISE_LLM_BACKEND = "mock"
    assert_rejected(api.post(URL, {"criteria": CRITERIA, "papers": bad}, format="json"))


@pytest.mark.parametrize(("path", "body"), [
    (URL, job(project_id="p\x00")),
    (URL, job(criteria={"inclusion": ["adults\x00"]})),
    ("/v1/indexer/jobs", {"records": [{"id": "1\x00", "title": "t", "abstract": "a"}]}),
    ("/v1/criteria/consolidate", {"criteria": [{"text": "adults\x00", "kind": "inclusion"}]}),
])
def test_nul_characters_in_json_text_are_rejected(api, unchanged, settings, path, body):
    # PostgreSQL cannot store NUL in text or jsonb: without the check this was a 500 there.
    settings.CRYSTALLISE_LLM_BACKEND = "mock"
    assert_rejected(api.post(path, body, format="json"))


@pytest.mark.django_db(transaction=True)
def test_nul_in_indexer_text_is_cleaned_not_a_server_error(api, settings):
    # The indexer takes binary debris by design (a non-`ok` status); NUL must never reach the INSERT.
    settings.CRYSTALLISE_LLM_BACKEND = "mock"
    records = [{"id": "1", "title": "t\x00", "abstract": "\x00\x01 debris"}]
    assert api.post("/v1/indexer/jobs", {"records": records}, format="json").status_code == 202
    response = api.post("/v1/indexer/run", {"records": records}, format="json")
    assert response.status_code == 200 and response.json()["records"][0]["indexing_status"] != "ok"


def test_bad_input_with_a_per_request_key_stores_no_secret(api, unchanged, settings):
    settings.CRYSTALLISE_LLM_BACKEND = "openai"
    response = api.post(URL, job(threshold=7), format="json", HTTP_X_OPENAI_API_KEY="sk-bad-input-000000")
    assert_rejected(response)
    assert "sk-bad-input" not in response.content.decode()


@pytest.mark.parametrize("method", ["post", "put", "patch", "delete"])
@pytest.mark.parametrize("path", ["/v1/nope", "/v1/screening/jobs/not-a-uuid", "/v1/indexer/jobs/null,null", "/elsewhere"])
def test_unknown_routes_are_404_in_the_error_shape_for_every_method(api, method, path):
    # Was a CSRF 403 HTML page for anything but GET (found by the schemathesis run).
    assert_rejected(getattr(api, method)(path, {}, format="json"), 404, "not_found")


@pytest.mark.parametrize(("path", "body", "key"), [
    (URL, job(papers=[{"id": "1", "title": "Sumatriptan", "abstarct": "A randomized trial."}]), "papers"),
    (URL, job(papers=[{"id": "1", "title": "T", "authors": ["Doe J"]}]), "papers"),
    ("/v1/indexer/jobs", {"records": [{"id": "1", "title": "T", "abstract": "a", "journal": "J"}]}, "records"),
    ("/v1/indexer/run", {"records": [{"id": "1", "titel": "T", "abstract": "a"}]}, "records"),
])
def test_an_unknown_field_in_a_paper_is_rejected_not_dropped(api, unchanged, settings, path, body, key):
    """A misspelt key would otherwise silently lose the abstract (screened as empty, excluded)."""
    settings.CRYSTALLISE_LLM_BACKEND = "mock"
    response = assert_rejected(api.post(path, body, format="json"))
    assert list(response["errors"]) == [f"{key}[0]"] and "unknown field" in response["errors"][f"{key}[0]"][0]
    assert ("a record has" if key == "records" else "a paper has") in response["detail"]


@pytest.mark.parametrize("path", ["/v1/screening/jobs", "/v1/indexer/jobs", "/v1/indexer/run", "/v1/criteria/consolidate"])
@pytest.mark.parametrize("raw", [
    b'{"papers": [{"id": "\\ud800", "title": "t"}], "records": [{"id": "1", "title": "\\udc00"}]}',
    b'{"criteria": {"inclusion": ["adults \\ud83d"]}}',
])
def test_unpaired_surrogates_are_a_validation_error(api, unchanged, settings, path, raw):
    settings.CRYSTALLISE_LLM_BACKEND = "mock"
    body = assert_rejected(api.generic("POST", path, raw, content_type="application/json"))
    assert "surrogate" in body["detail"]


def test_a_valid_surrogate_pair_is_text(api, settings):
    settings.CRYSTALLISE_LLM_BACKEND = "mock"
    raw = json.dumps(job(papers=[{"id": "1", "title": "Migraine \U0001F600", "abstract": "x"}])).encode()
    assert b"\\ud83d\\ude00" in raw  # json.dumps escapes it as a pair
    response = api.generic("POST", URL, raw, content_type="application/json")
    assert response.status_code == 202, response.content


@pytest.mark.parametrize("path", ["/v1/screening/jobs", "/v1/criteria/consolidate"])
def test_deeply_nested_json_is_a_validation_error(api, unchanged, path):
    depth = 100_000
    assert_rejected(api.generic("POST", path, b"[" * depth + b"]" * depth, content_type="application/json"))


def test_list_items_in_errors_are_indexed_and_blank_criteria_dropped(api, settings):
    settings.CRYSTALLISE_LLM_BACKEND = "mock"
    body = assert_rejected(api.post(URL, job(criteria={"inclusion": ["adults", "x" * 1001]}), format="json"))
    assert list(body["errors"]) == ["criteria.inclusion[1]"]
    response = api.post(URL, job(criteria={"inclusion": ["adults", "   "], "exclusion": [""]}), format="json")
    assert response.status_code == 202
    assert response.json()["criteria"] == {"research_question": "", "inclusion": ["adults"], "exclusion": []}


def test_a_nul_in_a_query_parameter_is_a_validation_error(api):
    assert_rejected(api.get(URL, {"project_id": "a\x00b"}))
    assert_rejected(api.get("/v1/indexer/jobs", {"status": "a\x00b"}))


@pytest.mark.parametrize("params", [{"cursor": "garbage"}, {"cursor": "cD1hYmM="}, {"cursor": "cD0lMDA="}, {"page_size": "abc"}, {"page_size": "0"},
                                    {"page_size": "-1"}, {"page_size": "5000"}])
def test_bad_pagination_is_a_validation_error_not_a_missing_job(api, settings, params):
    settings.CRYSTALLISE_LLM_BACKEND = "mock"
    job_id = api.post(URL, job(), format="json").json()["id"]
    for path in (URL, f"{URL}/{job_id}/results", "/v1/indexer/jobs"):
        body = assert_rejected(api.get(path, params))
        assert list(body["errors"]) == list(params)
    assert api.get(URL, {"page_size": "1000"}).status_code == 200
    # "p=2026" is a position a results page can hold (an empty page), but not a job list's timestamp.
    assert api.get(f"{URL}/{job_id}/results", {"cursor": "cD0yMDI2"}).json()["results"] == []
    assert list(assert_rejected(api.get(URL, {"cursor": "cD0yMDI2"}))["errors"]) == ["cursor"]


@pytest.mark.parametrize(("path", "multipart_ok"), [
    ("/v1/screening/jobs", True), ("/v1/indexer/jobs", True),
    ("/v1/criteria/consolidate", False), ("/v1/indexer/run", False),
])
def test_only_json_and_for_job_uploads_multipart_are_accepted(api, unchanged, path, multipart_ok):
    form = api.generic("POST", path, "criteria=x&papers=y", content_type="application/x-www-form-urlencoded")
    assert_rejected(form, 415)
    if not multipart_ok:
        assert_rejected(api.post(path, {"criteria": json.dumps(CRITERIA)}, format="multipart"), 415)


@pytest.mark.parametrize(("clusters", "ok"), [
    ({"by": "study_design", "include": ["randomised"]}, False),
    ({"by": "study_design", "include": ["RCT", "cohort"]}, True),
    ({"by": "none", "include": ["rct"]}, False),
    ({"by": "topic", "include": ["anything, goes"]}, True),
])
def test_fixed_cluster_labels_are_checked(api, settings, clusters, ok):
    settings.CRYSTALLISE_LLM_BACKEND = "mock"
    response = api.post(URL, job(clusters=clusters), format="json")
    if ok:
        assert response.status_code == 202, response.json()
    else:
        body = assert_rejected(response)
        assert list(body["errors"]) == ["clusters.include"] and "rct" in body["detail"] + str(body["errors"])


@pytest.mark.parametrize(("path", "inline", "upload"), [
    ("/v1/screening/jobs", "papers", "papers_file"), ("/v1/indexer/jobs", "records", "records_file")])
def test_inline_data_and_a_file_together_say_so(api, unchanged, settings, path, inline, upload):
    settings.CRYSTALLISE_LLM_BACKEND = "mock"
    data = {"criteria": json.dumps(CRITERIA)} if inline == "papers" else {}
    data.update({inline: "[]", upload: SimpleUploadedFile("p.ris", RIS_OK.encode())})
    body = assert_rejected(api.post(path, data, format="multipart"))
    assert body["errors"] == {inline: [f"Send {inline} or {upload}, not both."]}


def test_a_nul_in_a_paper_id_in_the_path_is_a_validation_error(api, settings):
    settings.CRYSTALLISE_LLM_BACKEND = "mock"
    job_id = api.post(URL, job(), format="json").json()["id"]
    assert_rejected(api.get(f"{URL}/{job_id}/results/a%00b/reviews"))


@pytest.mark.parametrize("decision", [["include"], {"include": True}, 1.5, None])
def test_a_review_decision_that_is_not_text_is_a_validation_error(api, settings, run_queue, decision):
    settings.CRYSTALLISE_LLM_BACKEND = "mock"
    job_id = api.post(URL, job(), format="json").json()["id"]
    run_queue()
    paper_id = job()["papers"][0]["id"]
    body = assert_rejected(api.post(f"{URL}/{job_id}/reviews",
                                    {"reviews": [{"paper_id": paper_id, "decision": decision, "reviewer": "a"}]},
                                    format="json"))
    assert "reviews[0].decision" in body["errors"]
