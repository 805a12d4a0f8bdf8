"""Request checks that come before any view."""

from __future__ import annotations

from django.http import JsonResponse

from crystallise.errors import Category, error_body


def reject_nul_in_query(get_response):
    """Middleware: a NUL in a query parameter or the path of /v1/ is a 400 (PostgreSQL cannot compare text
    holding one; a paper id taken from the path is compared)."""

    def middleware(request):
        if request.path.startswith("/v1/") and "\x00" in request.path:
            return JsonResponse(error_body(Category.VALIDATION, "The URL path cannot contain NUL characters."),
                                status=400)
        query = request.META.get("QUERY_STRING", "")
        if request.path.startswith("/v1/") and ("%00" in query or "\x00" in query):
            if any("\x00" in key or "\x00" in value for key, values in request.GET.lists() for value in values):
                return JsonResponse(error_body(Category.VALIDATION, "Query parameters cannot contain NUL characters."),
                                    status=400)
        return get_response(request)

    return middleware
