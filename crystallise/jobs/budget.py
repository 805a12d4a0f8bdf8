"""Per-key monthly budgets (admin-set), enforced at submission."""

from __future__ import annotations

from decimal import Decimal

from crystallise.auth import Caller
from crystallise.errors import BudgetError
from crystallise.models import ApiKey


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
    # The same month's spend the admin shows (ApiKey.with_spend): one rule, one query.
    row = (ApiKey.objects.filter(pk=caller.api_key_id, monthly_budget_usd__isnull=False).with_spend()
           .values_list("monthly_budget_usd", "month_spend_usd").first())
    if row is None:
        return
    budget, spent = row
    left = Decimal(budget) - spent
    if estimate > left:
        raise BudgetError(
            f"The estimated cost ${estimate:.6f} exceeds what is left of this API key's monthly budget "
            f"(${max(left, Decimal(0)):.6f} of ${budget}).",
            extra={"estimated_cost_usd": float(estimate)},
        )
