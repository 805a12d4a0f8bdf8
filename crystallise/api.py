"""HTTP plumbing shared by every app: the error shape, parsers, pagination, health."""

from __future__ import annotations

import functools
import logging

from django.conf import settings
from django.core.exceptions import RequestDataTooBig, TooManyFieldsSent, TooManyFilesSent
from django.core.exceptions import ValidationError as DjangoValidationError
from django.db import DataError, InterfaceError, OperationalError, connection
from django.http import Http404, JsonResponse
from django.views.decorators.csrf import csrf_exempt
from rest_framework import exceptions as drf_exceptions
from rest_framework import status
from rest_framework.pagination import CursorPagination
from rest_framework.response import Response
from rest_framework.views import set_rollback

from crystallise.errors import Category, CrystalliseError, NotFoundError, ValidationError, error_body
from crystallise.prepared import PreparedQuery
from crystallise.serializers import invalid_input

logger = logging.getLogger(__name__)

_DRF_CATEGORY = {
    drf_exceptions.NotAuthenticated: Category.AUTH,
    drf_exceptions.AuthenticationFailed: Category.AUTH,
    drf_exceptions.PermissionDenied: Category.AUTH,
    drf_exceptions.NotFound: Category.NOT_FOUND,
    drf_exceptions.Throttled: Category.RATE_LIMIT,
}


# SQLSTATEs of a database that is up but could not finish: transaction rollback (deadlock, serialization),
# lock not available, query cancelled (statement timeout).
_BUSY_SQLSTATES = ("40", "55P03", "57014")


def exception_handler(exc, context):
    """Every error the API returns, in the contract's shape."""
    if isinstance(exc, CrystalliseError):
        set_rollback()
        return Response(exc.as_body(), status=exc.status_code)
    if isinstance(exc, Http404):
        exc = drf_exceptions.NotFound()
    if isinstance(exc, RequestDataTooBig):
        return Response(
            error_body(Category.VALIDATION, "The request body is larger than the service accepts."),
            status=status.HTTP_413_REQUEST_ENTITY_TOO_LARGE,
        )
    if isinstance(exc, (TooManyFieldsSent, TooManyFilesSent)):
        what = "form fields" if isinstance(exc, TooManyFieldsSent) else "files"
        limit = settings.DATA_UPLOAD_MAX_NUMBER_FIELDS if what == "form fields" else settings.DATA_UPLOAD_MAX_NUMBER_FILES
        return Response(
            error_body(Category.VALIDATION, f"The upload has too many {what}: at most {limit} are accepted."),
            status=status.HTTP_400_BAD_REQUEST,
        )
    if isinstance(exc, drf_exceptions.APIException):
        set_rollback()
        headers = {}
        if getattr(exc, "auth_header", None):
            headers["WWW-Authenticate"] = exc.auth_header
        if getattr(exc, "wait", None):
            headers["Retry-After"] = str(int(exc.wait))
        category = next(
            (cat for cls, cat in _DRF_CATEGORY.items() if isinstance(exc, cls)), Category.VALIDATION
        )
        if isinstance(exc, drf_exceptions.ValidationError):
            invalid = invalid_input(exc.detail)
            return Response(error_body(category, invalid.detail, invalid.errors), status=exc.status_code, headers=headers)
        if isinstance(exc, drf_exceptions.NotAuthenticated):
            detail = "Missing X-API-Key header. Every /v1/ endpoint requires a service API key."
        else:
            detail = str(exc.detail) if not isinstance(exc.detail, (list, dict)) else str(exc.detail)
        if exc.status_code >= 500:
            category = Category.INTERNAL
        return Response(error_body(category, detail), status=exc.status_code, headers=headers)
    if isinstance(exc, (OperationalError, InterfaceError)):
        view = context.get("view").__class__.__name__
        state = getattr(exc.__cause__, "sqlstate", None) or ""
        if state.startswith(_BUSY_SQLSTATES):
            # Reachable but could not finish (deadlock, serialization failure, lock or statement timeout):
            # retryable too, and worth a traceback (a query that needs fixing shows up here).
            logger.warning("Database busy in %s (SQLSTATE %s)", view, state, exc_info=exc)
            detail = "The database could not complete the request in time (busy). Retry in a few seconds."
        else:
            # Unreachable (restart, failover, full disk): the next request reconnects (CONN_HEALTH_CHECKS).
            # One line, no traceback.
            logger.warning("Database unavailable in %s: %s", view, exc)
            detail = "The database is temporarily unavailable. Retry in a few seconds."
        return Response(error_body(Category.INTERNAL, detail), status=status.HTTP_503_SERVICE_UNAVAILABLE,
                        headers={"Retry-After": "5"})
    logger.exception("Unhandled error in %s", context.get("view").__class__.__name__)
    set_rollback()
    return Response(
        error_body(Category.INTERNAL, "Internal server error. The failure has been logged."),
        status=status.HTTP_500_INTERNAL_SERVER_ERROR,
    )


class Cursor(CursorPagination):
    """Cursor pages; a cursor or page size that cannot be used is a 400, never a silent default."""

    page_size = 50
    page_size_query_param = "page_size"
    max_page_size = 1000
    ordering = "-created_at"

    def get_page_size(self, request):
        raw = request.query_params.get(self.page_size_query_param)
        if raw is None:
            return self.page_size
        try:
            size = int(raw)
        except ValueError:
            size = 0
        if not 1 <= size <= self.max_page_size:
            raise ValidationError(f"page_size must be a whole number from 1 to {self.max_page_size}, not {raw!r}.",
                                  errors={"page_size": [f"From 1 to {self.max_page_size}."]})
        return size

    def decode_cursor(self, request):
        try:
            return super().decode_cursor(request)
        except drf_exceptions.NotFound:
            raise _bad_cursor() from None

    def paginate_queryset(self, queryset, request, view=None):
        # A cursor that decodes but holds a position that is not one (crafted or corrupted)
        # fails when the page is read: it is the same bad cursor, not a server error.
        try:
            return super().paginate_queryset(queryset, request, view)
        except (ValueError, TypeError, DjangoValidationError, DataError):
            raise _bad_cursor() from None


def _bad_cursor() -> ValidationError:
    return ValidationError("Invalid cursor: pass the `next` or `previous` link of a page as given.",
                           errors={"cursor": ["Invalid cursor."]})


@functools.cache
def _owned_job_query(model) -> PreparedQuery:
    # Columns a poll never reads (a screening job's per-paper cluster
    # assignments: 600 KB at 100k papers) are not loaded.
    return PreparedQuery(
        lambda pk, owner: model.objects.defer(*model.POLL_DEFERRED).filter(pk=pk, owner=owner),
        pk=model._meta.pk, owner=model._meta.get_field("owner"),
    )


def get_owned_job(request, model, job_id, *, label: str):
    """A job of the caller's key (one prepared query); other keys' jobs do not exist for them."""
    job = _owned_job_query(model).first(pk=job_id, owner=request.user.fingerprint)
    if job is None:
        raise NotFoundError(f"No {label} {job_id}.")
    return job


def jobs_response(request, view, *, jobs, serializer_class):
    """A caller's jobs, newest first, cursor-paginated, optionally filtered by `?status=`."""
    from crystallise.jobs.models import JobStatus

    if wanted := request.query_params.get("status"):
        if wanted not in JobStatus.values:
            raise ValidationError(f"Unknown status {wanted!r}.", errors={"status": [f"One of {', '.join(JobStatus.values)}."]})
        jobs = jobs.filter(status=wanted)
    paginator = Cursor()
    page = paginator.paginate_queryset(jobs, request, view=view)
    data = serializer_class(page, many=True, context={"request": request}).data
    return Response({"results": data, "next": paginator.get_next_link(), "previous": paginator.get_previous_link()})


def delete_job_response(request, job, *, serializer_class, cancel, delete):
    """DELETE of a job: an active job is cancelled (200 with the job), a finished one deleted (204).

    `cancel` and `delete` are the app's services. A job that finished while the cancel was on
    its way is deleted instead.
    """
    from crystallise.jobs.models import ACTIVE_STATUSES, JobStatus

    if job.status in ACTIVE_STATUSES:
        job = cancel(job=job)
        if job.status == JobStatus.CANCELLED:
            return Response(serializer_class(job, context={"request": request}).data)
    delete(job=job)
    return Response(status=status.HTTP_204_NO_CONTENT)


class PositionCursor(Cursor):
    """Results in input order."""

    ordering = "position"


def results_response(request, view, *, job, rows, exports, serializer_class, filename: str):
    """A job's results: a cursor page of JSON, or (`?format=`) a streamed export in input order.

    Active jobs answer with `Retry-After: 2`; `exports` is the app's module
    with `FORMATS` ({format: content type}) and `stream(job, rows, format)`.
    """
    from django.http import StreamingHttpResponse


    fmt = request.query_params.get("format", "json")
    headers = {"Retry-After": "2"} if job.is_active else {}
    if fmt in exports.FORMATS:
        content_type, stream = exports.stream(job, rows.order_by("position"), fmt)
        response = StreamingHttpResponse(stream, content_type=content_type, headers=headers)
        response["Content-Disposition"] = f'attachment; filename="{filename}.{fmt}"'
        return response
    if fmt != "json":
        choices = ", ".join(["json", *exports.FORMATS])
        raise ValidationError(f"format must be one of {choices}.", errors={"format": ["Invalid choice."]})
    paginator = PositionCursor()
    page = paginator.paginate_queryset(rows, request, view=view)
    data = serializer_class(page, many=True).data
    return Response({"results": data, "next": paginator.get_next_link(), "previous": paginator.get_previous_link()},
                    headers=headers)


# --- plain Django views (outside DRF) ---------------------------------------

def read_only(request) -> JsonResponse | None:
    """For a plain view that only reads: a 405 in the error shape for any method but GET and HEAD, else None."""
    if request.method in ("GET", "HEAD"):
        return None
    response = JsonResponse(error_body(Category.VALIDATION, f"Method {request.method} not allowed: use GET."),
                            status=405)
    response["Allow"] = "GET, HEAD"
    return response


@csrf_exempt  # another method is a 405 in the error shape, not a CSRF 403 page
def healthz(request):
    """Liveness and readiness: the database answers and a worker has checked in recently."""
    if (refused := read_only(request)) is not None:
        return refused
    from django_q.models import Schedule  # noqa: F401  (ensures the app is loaded)
    from django_q.status import Stat

    db_ok = True
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
    except Exception:  # noqa: BLE001 - any DB failure means "not ready"
        db_ok = False
    try:
        # Cluster stats expire unless the worker refreshes them: what is
        # listed checked in recently.
        workers = len(Stat.get_all())
    except Exception:  # noqa: BLE001
        workers = 0
    body = {
        "status": ("ok" if workers else "degraded") if db_ok else "unavailable",
        "database": "ok" if db_ok else "unavailable",
        "workers": workers,
        "llm_backend": settings.CRYSTALLISE_LLM_BACKEND,
    }
    return JsonResponse(body, status=200 if db_ok else 503)


@csrf_exempt  # any method: an unknown route is a 404, never a CSRF 403 page
def not_found(request, exception=None):
    return JsonResponse(
        error_body(Category.NOT_FOUND, f"No such endpoint: {request.path}"), status=404
    )


def server_error(request):
    return JsonResponse(
        error_body(Category.INTERNAL, "Internal server error. The failure has been logged."), status=500
    )


def bad_request(request, exception=None):
    return JsonResponse(error_body(Category.VALIDATION, "Bad request."), status=400)


def paginated_schema(name: str, item) -> object:
    """The documented shape of a cursor-paginated list: {"results": [...], "next", "previous"}."""
    from drf_spectacular.utils import inline_serializer
    from rest_framework import serializers

    return inline_serializer(
        name,
        {
            "results": item(many=True),
            "next": serializers.CharField(allow_null=True, help_text="URL of the next page, or null."),
            "previous": serializers.CharField(allow_null=True, help_text="URL of the previous page, or null."),
        },
    )
