"""Endpoints for trusting a screening job: human reviews, evaluation, validation samples, the report.

Formulas and the reasoning behind each figure: docs/evaluation.md.
"""

from __future__ import annotations

import math

from django.conf import settings
from django.http import HttpResponse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import status
from rest_framework.parsers import MultiPartParser
from rest_framework.response import Response
from rest_framework.views import APIView

from crystallise.api import Cursor, paginated_schema
from crystallise.errors import NotFoundError, ValidationError
from crystallise.openapi import error_responses
from crystallise.parsers import LimitedJSONParser
from screening import reviews
from screening.evaluation import certification, metrics, report
from screening.models import Paper, ValidationSample
from screening.trust_serializers import (
    HumanReviewSerializer,
    ReviewsCreateSerializer,
    ReviewsRecordedSerializer,
    ValidationSampleCreateSerializer,
    ValidationSampleDrawnSerializer,
    ValidationSampleSerializer,
)
from screening.views import get_job

ERRORS = error_responses(400, 401, 404, 405, 413)
TRUST_PARAMETERS = [
    OpenApiParameter("target_recall", float, description="Recall to certify, above 0 and below 1 (default 0.95)."),
    OpenApiParameter("confidence", float, description="Confidence of the bounds, 0.5 to below 1 (default 0.95)."),
]
FIGURES = {200: OpenApiTypes.OBJECT, **ERRORS}


def _unit(params, name: str, *, default: float, lowest: float, closed: bool) -> float:
    raw = params.get(name)
    if raw is None:
        return default
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    inside = (value >= lowest if closed else value > lowest) and value < 1
    if not inside:
        bound = f"from {lowest:g}" if closed else f"above {lowest:g}"
        raise ValidationError(f"{name} must be a number {bound} and below 1, not {raw!r}.",
                              errors={name: [f"A number {bound} and below 1."]})
    return value


def trust_params(request) -> dict:
    params = request.query_params
    return {"target_recall": _unit(params, "target_recall", default=0.95, lowest=0.0, closed=False),
            "confidence": _unit(params, "confidence", default=0.95, lowest=0.5, closed=True)}


class HistoryCursor(Cursor):
    ordering = "id"


class SampleCursor(Cursor):
    ordering = "-created_at"


class JobReviews(APIView):
    parser_classes = [LimitedJSONParser, MultiPartParser]

    @extend_schema(
        operation_id="screening_jobs_reviews_create",
        request={"application/json": ReviewsCreateSerializer, "multipart/form-data": ReviewsCreateSerializer},
        responses={200: ReviewsRecordedSerializer, **ERRORS},
    )
    def post(self, request, job_id):
        job = get_job(request, job_id)
        serializer = ReviewsCreateSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        upload = serializer.validated_data.get("reviews_file")
        if upload is not None:
            items = reviews.parse_review_file(upload, max_bytes=settings.CRYSTALLISE_MAX_UPLOAD_BYTES)
        else:
            items = serializer.validated_data["reviews"]
        recorded, unchanged = reviews.reviews_record(job=job, caller=request.user, reviews=items)
        return Response({"recorded": recorded, "unchanged": unchanged})


class PaperReviews(APIView):
    @extend_schema(
        operation_id="screening_jobs_results_reviews",
        parameters=[OpenApiParameter("cursor", str), OpenApiParameter("page_size", int)],
        responses={200: paginated_schema("PaginatedHumanReviewList", HumanReviewSerializer), **ERRORS},
    )
    def get(self, request, job_id, paper_id):
        job = get_job(request, job_id)
        result, rows = reviews.history(job, paper_id)
        if result is None and not Paper.objects.filter(job=job, paper_id=paper_id).exists():
            raise NotFoundError(f"No paper {paper_id!r} in screening job {job.pk}.")
        paginator = HistoryCursor()
        page = paginator.paginate_queryset(rows, request, view=self)
        state = getattr(result, "review", None) if result is not None else None
        summary = reviews.review_summary(result) if result is not None else {
            "human_decision": None, "conflict": False, "final_decision": None}
        return Response({
            "paper_id": paper_id,
            "model_decision": result.decision if result is not None else None,
            **summary,
            "reviewers": state.reviewers if state is not None else {},
            "results": HumanReviewSerializer(page, many=True).data,
            "next": paginator.get_next_link(), "previous": paginator.get_previous_link(),
        })


class JobEvaluation(APIView):
    @extend_schema(operation_id="screening_jobs_evaluation", parameters=TRUST_PARAMETERS, responses=FIGURES)
    def get(self, request, job_id):
        job = get_job(request, job_id)
        return Response(metrics.evaluate(job, **trust_params(request)))


class ValidationSamples(APIView):
    @extend_schema(
        operation_id="screening_jobs_validation_samples_list",
        parameters=[OpenApiParameter("cursor", str), OpenApiParameter("page_size", int)],
        responses={200: paginated_schema("PaginatedValidationSampleList", ValidationSampleSerializer), **ERRORS},
    )
    def get(self, request, job_id):
        job = get_job(request, job_id)
        paginator = SampleCursor()
        page = paginator.paginate_queryset(ValidationSample.objects.filter(job=job), request, view=self)
        return Response({"results": ValidationSampleSerializer(page, many=True).data,
                         "next": paginator.get_next_link(), "previous": paginator.get_previous_link()})

    @extend_schema(
        operation_id="screening_jobs_validation_samples_create",
        request=ValidationSampleCreateSerializer,
        responses={201: ValidationSampleDrawnSerializer, **error_responses(400, 401, 404, 405, 409)},
    )
    def post(self, request, job_id):
        job = get_job(request, job_id)
        serializer = ValidationSampleCreateSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        sample, paper_ids = certification.sample_draw(job=job, caller=request.user, size=data["size"],
                                                      which=data["from"], seed=data.get("seed"))
        sample.paper_ids = paper_ids
        body = ValidationSampleDrawnSerializer(sample).data
        location = request.build_absolute_uri(f"{request.path}/{sample.pk}")
        return Response(body, status=status.HTTP_201_CREATED, headers={"Location": location})


class ValidationSampleDetail(APIView):
    @extend_schema(operation_id="screening_jobs_validation_samples_retrieve", parameters=TRUST_PARAMETERS,
                   responses=FIGURES)
    def get(self, request, job_id, sample_id):
        job = get_job(request, job_id)
        sample = ValidationSample.objects.filter(job=job, pk=sample_id).first()
        if sample is None:
            raise NotFoundError(f"No validation sample {sample_id} in screening job {job.pk}.")
        sample.job = job
        return Response(certification.sample_status(sample, **trust_params(request)))


class ValidationPlan(APIView):
    @extend_schema(operation_id="screening_jobs_validation_plan", parameters=TRUST_PARAMETERS, responses=FIGURES)
    def get(self, request, job_id):
        job = get_job(request, job_id)
        return Response(certification.plan(job, **trust_params(request)))


class JobReport(APIView):
    @extend_schema(
        operation_id="screening_jobs_report",
        parameters=[*TRUST_PARAMETERS, OpenApiParameter("format", str, enum=["json", "md"])],
        responses={200: OpenApiTypes.OBJECT, (200, "text/markdown"): OpenApiTypes.STR, **ERRORS},
    )
    def get(self, request, job_id):
        job = get_job(request, job_id)
        fmt = request.query_params.get("format", "json")
        if fmt not in ("json", "md"):
            raise ValidationError("format must be json or md.", errors={"format": ["Invalid choice."]})
        body = report.build(job, **trust_params(request))
        if fmt == "md":
            response = HttpResponse(report.markdown(body), content_type="text/markdown; charset=utf-8")
            response["Content-Disposition"] = f'inline; filename="screening-{job.pk}-report.md"'
            return response
        return Response(body)
