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
from crystallise.jobs import lifecycle
from crystallise.jobs.models import ACTIVE_STATUSES, JobStatus
from crystallise.openapi import error_responses
from crystallise.parsers import LimitedJSONParser
from screening import exports, reviews
from screening.models import ScreeningJob, ScreeningResult
from screening.serializers import (
    MAX_PAPERS,
    ScreeningJobCreateSerializer,
    ScreeningJobSerializer,
    ScreeningResultSerializer,
)
from screening.services import job_create, job_delete

ERRORS = error_responses(400, 401, 404, 405, 409, 413)


def get_job(request, job_id) -> ScreeningJob:
    return get_owned_job(request, ScreeningJob, job_id, label="screening job")


class JobListCreate(APIView):
    parser_classes = [LimitedJSONParser, MultiPartParser]

    @extend_schema(
        operation_id="screening_jobs_list",
        parameters=[
            OpenApiParameter("project_id", str),
            OpenApiParameter("status", str, enum=[s.value for s in JobStatus]),
            OpenApiParameter("cursor", str),
            OpenApiParameter("page_size", int),
        ],
        responses={200: paginated_schema("PaginatedScreeningJobList", ScreeningJobSerializer), **ERRORS},
    )
    def get(self, request):
        jobs = ScreeningJob.objects.owned_by(request.user.fingerprint).defer("cluster_assignments")
        if project := request.query_params.get("project_id"):
            jobs = jobs.filter(project_id=project)
        return jobs_response(request, self, jobs=jobs, serializer_class=ScreeningJobSerializer)

    @extend_schema(
        operation_id="screening_jobs_create",
        request={"application/json": ScreeningJobCreateSerializer, "multipart/form-data": ScreeningJobCreateSerializer},
        parameters=[
            OpenApiParameter("X-OpenAI-API-Key", str, OpenApiParameter.HEADER, description="Per-request OpenAI key (optional)."),
            OpenApiParameter("Idempotency-Key", str, OpenApiParameter.HEADER, description="Retry-safe submission key (optional)."),
        ],
        responses={202: ScreeningJobSerializer, 200: ScreeningJobSerializer, **ERRORS},
        examples=[OpenApiExample(
            "Two papers", request_only=True, media_type="application/json",
            value={"project_id": "migraine-review", "model": "gpt-5-nano",
                   "criteria": {"research_question": "Do triptans help adults with migraine?",
                                "inclusion": ["randomized controlled trial", "adults with migraine"],
                                "exclusion": ["children"]},
                   "papers": [{"id": "pmid:1", "title": "Triptans for migraine: a randomized trial",
                               "abstract": "Adults with migraine were randomized to triptans or placebo."},
                              {"id": "pmid:2", "title": "Migraine in children", "abstract": "A cohort of children."}],
                   "threshold": 1.0},
        )],
    )
    def post(self, request):
        serializer = ScreeningJobCreateSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        payload = dict(serializer.validated_data)
        upload = payload.pop("papers_file", None)
        if upload is not None:
            papers = parse_upload(upload, max_records=MAX_PAPERS, max_bytes=settings.CRYSTALLISE_MAX_UPLOAD_BYTES,
                                  field="papers_file")
        else:
            papers = payload.pop("papers")
        payload.pop("papers", None)
        idempotency_key = (request.headers.get("Idempotency-Key") or "").strip()[:200] or None
        job, created = job_create(
            caller=request.user,
            papers=papers,
            request_openai_key=request_openai_key(request),
            idempotency_key=idempotency_key,
            **payload,
        )
        body = ScreeningJobSerializer(job, context={"request": request}).data
        headers = {"Location": body["results_url"].rsplit("/results", 1)[0]}
        if job.is_active:
            headers["Retry-After"] = "2"
        return Response(body, status=status.HTTP_202_ACCEPTED if created else status.HTTP_200_OK, headers=headers)


class JobDetail(APIView):
    @extend_schema(operation_id="screening_jobs_retrieve", responses={200: ScreeningJobSerializer, **ERRORS})
    def get(self, request, job_id):
        job = get_job(request, job_id)
        body = ScreeningJobSerializer(job, context={"request": request, "inline_results": True}).data
        headers = {"Retry-After": "2"} if job.status in ACTIVE_STATUSES else {}
        return Response(body, headers=headers)

    @extend_schema(operation_id="screening_jobs_destroy", responses={200: ScreeningJobSerializer, 204: None, **ERRORS})
    def delete(self, request, job_id):
        return delete_job_response(request, get_job(request, job_id), serializer_class=ScreeningJobSerializer,
                                   cancel=lifecycle.cancel, delete=job_delete)


class JobResults(APIView):
    @extend_schema(
        operation_id="screening_jobs_results",
        parameters=[
            OpenApiParameter("format", str, enum=["json", "csv", "ris", "jsonl"]),
            OpenApiParameter("decision", str, enum=["include", "exclude", "error"]),
            OpenApiParameter("cluster", int),
            OpenApiParameter("needs_review", bool),
            OpenApiParameter("reviewed", bool, description="Has at least one human review."),
            OpenApiParameter("conflict", bool, description="Its reviewers disagree."),
            OpenApiParameter("final_decision", str, enum=["include", "exclude"],
                             description="The human decision if there is one, else the model's."),
            OpenApiParameter("cursor", str),
            OpenApiParameter("page_size", int),
        ],
        responses={200: paginated_schema("PaginatedScreeningResultList", ScreeningResultSerializer), (200, "text/csv"): OpenApiTypes.STR, **ERRORS},
    )
    def get(self, request, job_id):
        job = get_job(request, job_id)
        rows = ScreeningResult.objects.filter(job=job).listing()
        params = request.query_params
        if decision := params.get("decision"):
            if decision == "error":
                rows = rows.filter(decision__isnull=True)
            elif decision in ("include", "exclude"):
                rows = rows.filter(decision=decision)
            else:
                raise ValidationError("decision must be include, exclude or error.", errors={"decision": ["Invalid choice."]})
        if (cluster := params.get("cluster")) is not None:
            if not cluster.lstrip("-").isdigit():
                raise ValidationError("cluster must be an integer.", errors={"cluster": ["Must be an integer."]})
            rows = rows.filter(cluster=int(cluster))
        if (review := params.get("needs_review")) is not None:
            if review.lower() not in ("true", "false", "1", "0"):
                raise ValidationError("needs_review must be true or false.", errors={"needs_review": ["Must be a boolean."]})
            rows = rows.filter(needs_review=review.lower() in ("true", "1"))
        rows = reviews.filter_results(rows, params)
        return results_response(request, self, job=job, rows=rows, exports=exports,
                                serializer_class=ScreeningResultSerializer, filename=f"screening-{job.pk}")
