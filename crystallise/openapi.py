"""Pieces of the OpenAPI documentation that every app's views share."""

from __future__ import annotations

from drf_spectacular.utils import inline_serializer
from rest_framework import serializers

# The contract's error shape (crystallise.errors.error_body), one component for every endpoint.
ERROR = inline_serializer(
    "Error",
    {
        "error_category": serializers.CharField(),
        "detail": serializers.CharField(),
        "errors": serializers.DictField(required=False),
    },
)


def error_responses(*codes: int) -> dict[int, object]:
    """`extend_schema(responses=...)` entries documenting the error shape for these status codes."""
    return dict.fromkeys(codes, ERROR)
