from __future__ import annotations

from django.conf import settings
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiExample, OpenApiParameter, extend_schema
from rest_framework import status
from rest_framework.parsers import MultiPartParser
from rest_framework.response import Response
from rest_framework.views import APIView

from crystallise.api import (
    delete_job_response,
    get_owned_job,
    jobs_response,
    paginated_schema,
    results_response,
)
from crystallise.auth import request_openai_key
from crystallise.errors import ValidationError
from crystallise.formats import parse_upload
from crystallise.jobs.lifecycle import cancel as job_cancel
from crystallise.jobs.models import ACTIVE_STATUSES, JobStatus
from crystallise.openapi import error_responses
from crystallise.parsers import LimitedJSONParser
from indexer import exports
from indexer.models import IndexJob, IndexResult
from indexer.precheck import Status
from indexer.serializers import (
    MAX_JOB_RECORDS,
    IndexJobCreateSerializer,
    IndexJobSerializer,
    IndexResultSerializer,
    IndexRunInSerializer,
    IndexRunOutSerializer,
)
from indexer.services import index_run, job_create, job_delete

ERRORS = error_responses(400, 401, 404, 405, 413, 429, 502)
KEY_HEADER = OpenApiParameter("X-OpenAI-API-Key", str, OpenApiParameter.HEADER,
                              description="Per-request OpenAI key (optional).")


def get_job(request, job_id) -> IndexJob:
    return get_owned_job(request, IndexJob, job_id, label="index job")


class IndexRun(APIView):
    @extend_schema(operation_id="indexer_run", request=IndexRunInSerializer, parameters=[KEY_HEADER],
                   responses={200: IndexRunOutSerializer, **ERRORS})
    def post(self, request):
        serializer = IndexRunInSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        body = index_run(
            caller=request.user, model=data["model"], records=data["records"], fields=data["fields"],
            max_estimated_cost_usd=data.get("max_estimated_cost_usd"), request_openai_key=request_openai_key(request),
        )
        return Response(IndexRunOutSerializer(body).data)


class JobListCreate(APIView):
    parser_classes = [LimitedJSONParser, MultiPartParser]

    @extend_schema(
        operation_id="indexer_jobs_list",
        parameters=[OpenApiParameter("status", str, enum=[s.value for s in JobStatus]),
                    OpenApiParameter("cursor", str), OpenApiParameter("page_size", int)],
        responses={200: paginated_schema("PaginatedIndexJobList", IndexJobSerializer), **ERRORS},
    )
    def get(self, request):
        jobs = IndexJob.objects.owned_by(request.user.fingerprint)
        return jobs_response(request, self, jobs=jobs, serializer_class=IndexJobSerializer)

    @extend_schema(
        operation_id="indexer_jobs_create",
        request={"application/json": IndexJobCreateSerializer, "multipart/form-data": IndexJobCreateSerializer},
        parameters=[KEY_HEADER],
        responses={202: IndexJobSerializer, **ERRORS},
        examples=[OpenApiExample(
            "One record", request_only=True, media_type="application/json",
            value={"model": "gpt-5-nano", "fields": ["population", "study_design"],
                   "records": [{"id": "pmid:1", "title": "Triptans for migraine",
                                "abstract": "In this randomized controlled trial 240 adults with episodic migraine "
                                            "received a triptan or placebo; pain freedom at two hours was higher."}]},
        )],
    )
    def post(self, request):
        serializer = IndexJobCreateSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        upload = data.get("records_file")
        if upload is not None:
            papers = parse_upload(upload, max_records=MAX_JOB_RECORDS, max_bytes=settings.CRYSTALLISE_MAX_UPLOAD_BYTES,
                                  field="records_file")
            records = [{"id": p["id"], "title": p.get("title") or "", "abstract": p.get("abstract")} for p in papers]
        else:
            records = data["records"]
        job = job_create(
            caller=request.user, model=data["model"], records=records, fields=data["fields"],
            max_estimated_cost_usd=data.get("max_estimated_cost_usd"), request_openai_key=request_openai_key(request),
            mode=data["mode"], fallback=data["fallback"], service_tier=data["service_tier"],
        )
        body = IndexJobSerializer(job, context={"request": request}).data
        headers = {"Location": body["results_url"].rsplit("/results", 1)[0], "Retry-After": "2"}
        return Response(body, status=status.HTTP_202_ACCEPTED, headers=headers)


class JobDetail(APIView):
    @extend_schema(operation_id="indexer_jobs_retrieve", responses={200: IndexJobSerializer, **ERRORS})
    def get(self, request, job_id):
        job = get_job(request, job_id)
        headers = {"Retry-After": "2"} if job.status in ACTIVE_STATUSES else {}
        return Response(IndexJobSerializer(job, context={"request": request}).data, headers=headers)

    @extend_schema(operation_id="indexer_jobs_destroy", responses={200: IndexJobSerializer, 204: None, **ERRORS})
    def delete(self, request, job_id):
        return delete_job_response(request, get_job(request, job_id), serializer_class=IndexJobSerializer,
                                   cancel=job_cancel, delete=job_delete)


class JobResults(APIView):
    @extend_schema(
        operation_id="indexer_jobs_results",
        parameters=[OpenApiParameter("format", str, enum=["json", "csv", "jsonl"]),
                    OpenApiParameter("indexing_status", str, enum=list(Status.ALL)),
                    OpenApiParameter("cursor", str), OpenApiParameter("page_size", int)],
        responses={200: paginated_schema("PaginatedIndexResultList", IndexResultSerializer), (200, "text/csv"): OpenApiTypes.STR, **ERRORS},
    )
    def get(self, request, job_id):
        job = get_job(request, job_id)
        rows = IndexResult.objects.filter(job=job).listing()
        if wanted := request.query_params.get("indexing_status"):
            if wanted not in Status.ALL:
                raise ValidationError(f"Unknown indexing_status {wanted!r}.",
                                      errors={"indexing_status": [f"One of {', '.join(Status.ALL)}."]})
            rows = rows.filter(indexing_status=wanted)
        return results_response(request, self, job=job, rows=rows, exports=exports,
                                serializer_class=IndexResultSerializer, filename=f"index-{job.pk}")
