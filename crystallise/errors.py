"""The service's error vocabulary.

Every error a client can see is one of these, carrying a contract category
(`error_category`) and an HTTP status. The DRF exception handler in
`crystallise.api` maps them (and DRF's own exceptions) to the contract's
error shape: ``{"error_category", "detail", "errors"?}``.
"""

from __future__ import annotations

from typing import Any


class Category:
    AUTH = "auth"
    VALIDATION = "validation"
    BUDGET = "budget"
    CONFLICT = "conflict"
    NOT_FOUND = "not_found"
    RATE_LIMIT = "rate_limit"
    UPSTREAM = "upstream"
    SERVER_RESTART = "server_restart"
    INTERNAL = "internal"

    ALL = (
        AUTH,
        VALIDATION,
        BUDGET,
        CONFLICT,
        NOT_FOUND,
        RATE_LIMIT,
        UPSTREAM,
        SERVER_RESTART,
        INTERNAL,
    )


def error_body(category: str, detail: str, errors: dict | None = None, **extra: Any) -> dict[str, Any]:
    """The contract's error shape: `errors` only when there are field errors."""
    body: dict[str, Any] = {"error_category": category, "detail": detail}
    if errors:
        body["errors"] = errors
    body.update(extra)
    return body


class CrystalliseError(Exception):
    """Base class: a category, an HTTP status and a human sentence."""

    category: str = Category.INTERNAL
    status_code: int = 500

    def __init__(
        self,
        detail: str,
        *,
        errors: dict[str, list[str]] | None = None,
        extra: dict[str, Any] | None = None,
        status_code: int | None = None,
    ) -> None:
        super().__init__(detail)
        self.detail = detail
        self.errors = errors
        self.extra = extra or {}
        if status_code is not None:
            self.status_code = status_code

    def as_body(self) -> dict[str, Any]:
        return error_body(self.category, self.detail, self.errors, **self.extra)


class AuthError(CrystalliseError):
    category = Category.AUTH
    status_code = 401


class ValidationError(CrystalliseError):
    category = Category.VALIDATION
    status_code = 400


class PayloadTooLarge(ValidationError):
    status_code = 413


class BudgetError(CrystalliseError):
    category = Category.BUDGET
    status_code = 400


class ConflictError(CrystalliseError):
    category = Category.CONFLICT
    status_code = 409


class NotFoundError(CrystalliseError):
    category = Category.NOT_FOUND
    status_code = 404


class LLMError(CrystalliseError):
    """A failed call to the LLM provider, after the SDK boundary.

    `permanent` errors (bad request, rejected key) are never retried;
    transient ones (rate limit, timeout, connection, 5xx, unparseable or
    schema-invalid output) are retried with backoff. `bad_output` marks a
    200 whose content did not fit the requested schema.
    """

    bad_output: bool = False

    def __init__(
        self,
        detail: str,
        *,
        category: str,
        permanent: bool,
        retry_after: float | None = None,
        status_code: int | None = None,
    ) -> None:
        super().__init__(detail)
        self.category = category
        self.permanent = permanent
        self.retry_after = retry_after
        self.status_code = status_code or {
            Category.AUTH: 400,
            Category.VALIDATION: 400,
            Category.RATE_LIMIT: 429,
        }.get(category, 502)
