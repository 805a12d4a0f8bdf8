"""Per-key monthly budgets (admin-set), enforced at submission."""

from __future__ import annotations

from decimal import Decimal

from django.db.models import Sum
from django.utils import timezone

from crystallise.auth import Caller
from crystallise.errors import BudgetError
from crystallise.models import ApiKey


def month_spend(api_key_id) -> Decimal:
    """Actual spend this calendar month (UTC) of every job submitted with the key."""
    from crystallise.jobs.models import BaseJob

    start = timezone.now().replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    total = Decimal("0")
    for model in BaseJob.__subclasses__():
        total += model.objects.filter(api_key_id=api_key_id, created_at__gte=start).aggregate(s=Sum("cost_usd"))["s"] or 0
    return total


def check_budget(*, caller: Caller | None, estimate: Decimal, cap, advice: str) -> None:
    """Preflight, before any LLM call: the request's `max_estimated_cost_usd`, then the key's monthly budget."""
    if cap is not None and estimate > Decimal(str(cap)):
        raise BudgetError(
            f"The estimated cost ${estimate:.6f} exceeds max_estimated_cost_usd=${Decimal(str(cap)):f}. {advice}",
            extra={"estimated_cost_usd": float(estimate)},
        )
    if caller is not None:
        check_key_budget(caller=caller, estimate=estimate)


def check_key_budget(*, caller: Caller, estimate: Decimal) -> None:
    if caller.api_key_id is None:
        return
    budget = ApiKey.objects.filter(pk=caller.api_key_id).values_list("monthly_budget_usd", flat=True).first()
    if budget is None:
        return
    left = Decimal(budget) - month_spend(caller.api_key_id)
    if estimate > left:
        raise BudgetError(
            f"The estimated cost ${estimate:.6f} exceeds what is left of this API key's monthly budget "
            f"(${max(left, Decimal(0)):.6f} of ${budget}).",
            extra={"estimated_cost_usd": float(estimate)},
        )
