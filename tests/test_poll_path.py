"""The poll path (GET /v1/…/jobs/{id}): prepared queries and copy-free serializers.

They exist to make a poll cheap; these tests pin that they answer exactly what
the ORM and DRF would, and that a poll stays at a fixed, small number of queries.
"""

from __future__ import annotations

import uuid

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from rest_framework import serializers
from rest_framework.test import APIRequestFactory

from crystallise.auth import KEY_OR_ANY_ACTIVE
from crystallise.models import ApiKey, hash_secret
from crystallise.prepared import PreparedQuery
from indexer.models import IndexJob
from indexer.serializers import IndexJobSerializer
from screening.models import ScreeningJob
from screening.serializers import ScreeningJobSerializer
from tests.factories import ApiKeyFactory, paper

pytestmark = pytest.mark.django_db(transaction=True)

CRITERIA = {"inclusion": ["randomized trial", "migraine treatment"], "exclusion": ["pediatric children"]}
PAPERS = [
    paper("p1", "Sumatriptan for migraine treatment", "A randomized trial of migraine treatment in adults."),
    paper("p2", "Hip fracture surgery outcomes", "A cohort of elderly patients after hip surgery."),
    paper("p3", "Migraine in children", "A randomized trial of migraine treatment in pediatric children."),
]


def drf_generic(serializer_class, instance, context):
    """What DRF's own Serializer.to_representation (per-instance field copies) produces."""
    return serializers.Serializer.to_representation(serializer_class(instance, context=context), instance)


def test_prepared_query_matches_the_orm_row_for_row():
    keys = [ApiKeyFactory(is_active=active) for active in (True, False, True)]
    for key in keys:
        expected = ApiKey.objects.key_or_any_active(key.key_hash).first()
        got = KEY_OR_ANY_ACTIVE.first(digest=key.key_hash)
        assert got.pk == expected.pk == key.pk
        assert got.match == 1  # the annotation is set as the ORM sets it
        assert [getattr(got, f.attname) for f in ApiKey._meta.concrete_fields] == \
            [getattr(expected, f.attname) for f in ApiKey._meta.concrete_fields]
    # No exact match: the first active key, as the ORM orders it.
    assert KEY_OR_ANY_ACTIVE.first(digest=hash_secret("nobody")).pk == \
        ApiKey.objects.key_or_any_active(hash_secret("nobody")).first().pk
    ApiKey.objects.update(is_active=False)
    assert KEY_OR_ANY_ACTIVE.first(digest=hash_secret("nobody")) is None


def test_prepared_query_sends_the_orms_sql_and_binds_uuids_like_it():
    job = ScreeningJob.objects.create(criteria=CRITERIA, model="gpt-5-nano", llm_backend="mock", owner="o1",
                                      cluster_assignments=[1, 2, 3])
    query = PreparedQuery(lambda pk, owner: ScreeningJob.objects.defer("cluster_assignments").filter(pk=pk, owner=owner),
                          pk=ScreeningJob._meta.pk, owner=ScreeningJob._meta.get_field("owner"))
    with CaptureQueriesContext(connection) as prepared:
        found = query.first(pk=job.pk, owner="o1")
        assert query.first(pk=str(job.pk), owner="o1").pk == job.pk  # a str id is prepared as the ORM would
        assert query.first(pk=job.pk, owner="someone else") is None
        assert query.first(pk=uuid.uuid4(), owner="o1") is None
    with CaptureQueriesContext(connection) as orm:
        expected = ScreeningJob.objects.defer("cluster_assignments").filter(pk=job.pk, owner="o1")[:1].get()
    assert prepared.captured_queries[0]["sql"] == orm.captured_queries[0]["sql"]
    assert len(prepared.captured_queries) == 4
    assert found.criteria == expected.criteria == CRITERIA  # JSON converted like the ORM does
    assert found.get_deferred_fields() == {"cluster_assignments"}
    assert found.cluster_assignments == [1, 2, 3]  # still loadable on access


def test_prepared_query_refuses_a_parameter_the_query_does_not_use():
    query = PreparedQuery(lambda owner: ScreeningJob.objects.all(), owner=ScreeningJob._meta.get_field("owner"))
    with pytest.raises(ValueError, match="not used"):
        query.first(owner="x")


def test_job_serializers_format_exactly_like_drf(api, run_queue, settings):
    settings.CRYSTALLISE_LLM_BACKEND = "mock"
    request = APIRequestFactory().get("/")
    done = api.post("/v1/screening/jobs", {"criteria": CRITERIA, "papers": PAPERS, "clusters": {"by": "study_design"},
                                           "callback_url": None}, format="json").json()
    run_queue()
    pending = api.post("/v1/screening/jobs", {"criteria": CRITERIA, "papers": PAPERS, "project_id": "p",
                                              "max_estimated_cost_usd": 5}, format="json").json()
    failed = ScreeningJob.objects.get(pk=pending["id"])
    failed.status, failed.error_category, failed.error_message = "failed", "auth", "bad key"
    failed.save()
    for job_id in (done["id"], pending["id"]):
        job = ScreeningJob.objects.get(pk=job_id)
        for inline in (True, False):
            context = {"request": request, "inline_results": inline}
            assert ScreeningJobSerializer(job, context=context).data == drf_generic(ScreeningJobSerializer, job, context)
    completed = ScreeningJob.objects.get(pk=done["id"])
    body = ScreeningJobSerializer(completed, context={"request": request, "inline_results": True}).data
    assert body["status"] == "completed" and len(body["results"]) == 3 and body["clusters"]

    api.post("/v1/indexer/jobs", {"records": [{"id": "r1", "title": "t", "abstract": "a " * 40}]}, format="json")
    run_queue()
    for job in IndexJob.objects.all():
        assert IndexJobSerializer(job, context={"request": request}).data == \
            drf_generic(IndexJobSerializer, job, {"request": request})


@pytest.mark.parametrize("key_kind", ["env", "admin", "dev"])
def test_a_poll_is_a_fixed_small_number_of_queries(api, settings, key_kind):
    settings.CRYSTALLISE_LLM_BACKEND = "mock"
    if key_kind == "env":
        settings.CRYSTALLISE_API_KEYS = ["test-service-key"]
    elif key_kind == "admin":
        _, secret = ApiKey.objects.create_key(name="poller")
        api.credentials(HTTP_X_API_KEY=secret)
    job_id = api.post("/v1/screening/jobs", {"criteria": CRITERIA, "papers": PAPERS}, format="json").json()["id"]
    api.get(f"/v1/screening/jobs/{job_id}")
    with CaptureQueriesContext(connection) as queries:
        response = api.get(f"/v1/screening/jobs/{job_id}")
    assert response.status_code == 200 and response.json()["id"] == job_id
    sql = [q["sql"] for q in queries.captured_queries]
    # env key: the job (+ its inline results); admin key: + key lookup and its usage counter; dev: + key lookup.
    reads = [s for s in sql if s.lstrip().upper().startswith("SELECT")]
    assert len(reads) == {"env": 2, "admin": 3, "dev": 3}[key_kind], sql
    job_reads = [s for s in reads if "screening_screeningjob" in s and "screening_screeningresult" not in s]
    assert len(job_reads) == 1 and "cluster_assignments" not in job_reads[0]


def _reads(api, path, params=None) -> list[str]:
    with CaptureQueriesContext(connection) as queries:
        response = api.get(path, params or {})
    assert response.status_code == 200, response.content[:300]
    return [q["sql"] for q in queries.captured_queries if q["sql"].lstrip().upper().startswith("SELECT")]


def test_lists_and_result_pages_cost_the_same_queries_for_1_or_30_rows_and_skip_abstracts(api, settings, run_queue):
    """No N+1 on any list endpoint; result rows (and inline results) never read the papers' abstracts."""
    settings.CRYSTALLISE_LLM_BACKEND = "mock"
    first = api.post("/v1/screening/jobs", {"criteria": CRITERIA, "papers": PAPERS[:1]}, format="json").json()["id"]
    indexed = api.post("/v1/indexer/jobs", {"records": [{"id": "r0", "title": "T", "abstract": "short"}]},
                       format="json").json()["id"]
    run_queue()
    paths = ["/v1/screening/jobs", "/v1/indexer/jobs", f"/v1/screening/jobs/{first}/results",
             f"/v1/indexer/jobs/{indexed}/results", f"/v1/screening/jobs/{first}"]
    few = {path: len(_reads(api, path)) for path in paths}
    for _ in range(29):
        api.post("/v1/screening/jobs", {"criteria": CRITERIA, "papers": PAPERS[:1]}, format="json")
    many_papers = [paper(f"m{i}", f"Trial {i}", "A randomized trial of migraine treatment. " * 40) for i in range(30)]
    big = api.post("/v1/screening/jobs", {"criteria": CRITERIA, "papers": many_papers}, format="json").json()["id"]
    records = [{"id": f"r{i}", "title": "T", "abstract": "word " * 30} for i in range(30)]
    indexed_big = api.post("/v1/indexer/jobs", {"records": records}, format="json").json()["id"]
    run_queue()
    bigger = {"/v1/screening/jobs": "/v1/screening/jobs", "/v1/indexer/jobs": "/v1/indexer/jobs",
              f"/v1/screening/jobs/{first}/results": f"/v1/screening/jobs/{big}/results",
              f"/v1/indexer/jobs/{indexed}/results": f"/v1/indexer/jobs/{indexed_big}/results",
              f"/v1/screening/jobs/{first}": f"/v1/screening/jobs/{big}"}
    for small, large in bigger.items():
        reads = _reads(api, large, {"page_size": 100} if "jobs/" not in large or "results" in large else None)
        assert len(reads) == few[small], (large, reads)
        result_reads = [s for s in reads if "result" in s]
        assert all('"abstract"' not in s for s in result_reads), (large, result_reads)
