from django.contrib import admin, messages
from django.db.models import Count, OuterRef, Subquery, Sum
from django.db.models.functions import Coalesce
from django.template.response import TemplateResponse

from crystallise.models import ApiKey
from crystallise.ratelimit.models import RateLimitKey, RateLimitLease


def _usd(value) -> str:
    return "—" if value is None else f"${value:.4f}"


@admin.register(ApiKey)
class ApiKeyAdmin(admin.ModelAdmin):
    list_display = ("name", "prefix", "is_active", "created_at", "last_used_at", "request_count", "spend",
                    "month_spend", "monthly_budget_usd")
    list_filter = ("is_active",)
    search_fields = ("name", "prefix")
    # Active/revoked changes only through the actions (revoke() stamps revoked_at; reactivate() clears it).
    readonly_fields = ("is_active", "prefix", "created_at", "revoked_at", "last_used_at", "request_count", "spend",
                       "month_spend")
    fields = ("name", "monthly_budget_usd", "is_active", "prefix", "created_at", "revoked_at", "last_used_at",
              "request_count", "spend", "month_spend")
    actions = ("revoke_keys", "reactivate_keys")

    def get_queryset(self, request):
        return super().get_queryset(request).with_spend()

    @admin.display(description="Spend to date", ordering="spend_usd")
    def spend(self, key: ApiKey) -> str:
        return _usd(getattr(key, "spend_usd", None))

    @admin.display(description="Spend this month", ordering="month_spend_usd")
    def month_spend(self, key: ApiKey) -> str:
        value = _usd(getattr(key, "month_spend_usd", None))
        if key.monthly_budget_usd is not None and getattr(key, "month_spend_usd", None) is not None:
            return f"{value} of ${key.monthly_budget_usd}"
        return value

    def get_fields(self, request, obj=None):
        if obj is None:
            return ("name", "monthly_budget_usd")
        return self.fields

    def save_model(self, request, obj, form, change):
        if change:
            super().save_model(request, obj, form, change)
            return
        key, secret = ApiKey.objects.create_key(name=obj.name, monthly_budget_usd=obj.monthly_budget_usd)
        obj.pk = key.pk
        obj._state.adding = False
        # Kept on the request only: rendered once in the response, never stored.
        request._crystallise_secret = secret

    def response_add(self, request, obj, post_url_continue=None):
        secret = getattr(request, "_crystallise_secret", None)
        if secret is None:
            return super().response_add(request, obj, post_url_continue)
        context = {
            **self.admin_site.each_context(request),
            "title": "API key created",
            "key": ApiKey.objects.get(pk=obj.pk),
            "secret": secret,
            "opts": self.model._meta,
        }
        response = TemplateResponse(request, "admin/crystallise/apikey/created.html", context)
        response["Cache-Control"] = "no-store"
        return response

    @admin.action(description="Revoke selected keys (takes effect at once)")
    def revoke_keys(self, request, queryset):
        for key in queryset.filter(is_active=True):
            key.revoke()
        messages.success(request, "Revoked.")

    @admin.action(description="Reactivate selected keys")
    def reactivate_keys(self, request, queryset):
        for key in queryset.filter(is_active=False):
            key.reactivate()
        messages.success(request, "Reactivated.")


class _ReadOnly(admin.ModelAdmin):
    """Written by running jobs only: operators look, never edit."""

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False


@admin.register(RateLimitKey)
class RateLimitKeyAdmin(_ReadOnly):
    """Each provider key's limits as last advertised, and the jobs sharing it now (`crystallise.ratelimit`)."""

    list_display = ("key", "limit_requests", "limit_tokens", "updated_at", "holders", "share_held")
    ordering = ("-updated_at",)

    def get_queryset(self, request):
        live = RateLimitLease.objects.live().filter(fingerprint=OuterRef("fingerprint")).order_by().values("fingerprint")
        return super().get_queryset(request).annotate(
            live_holders=Coalesce(Subquery(live.annotate(n=Count("pk")).values("n")), 0),
            live_share=Subquery(live.annotate(total=Sum("share")).values("total")))

    @admin.display(description="Key (fingerprint)", ordering="fingerprint")
    def key(self, row: RateLimitKey) -> str:
        return row.fingerprint[:12]

    @admin.display(description="Jobs sharing it now", ordering="live_holders")
    def holders(self, row: RateLimitKey) -> int:
        return row.live_holders

    @admin.display(description="Share held")
    def share_held(self, row: RateLimitKey) -> str:
        return f"{row.live_share or 0:.0%}"


@admin.register(RateLimitLease)
class RateLimitLeaseAdmin(_ReadOnly):
    """One running job's share of a key's limit; it lapses LEASE_SECONDS after the job's last renewal."""

    list_display = ("key", "holder_id", "where", "share_pct", "demand", "expires_at", "is_live")
    list_filter = ("fingerprint",)
    ordering = ("fingerprint", "-share")

    @admin.display(description="Key (fingerprint)", ordering="fingerprint")
    def key(self, row: RateLimitLease) -> str:
        return row.fingerprint[:12]

    @admin.display(description="Holder")
    def holder_id(self, row: RateLimitLease) -> str:
        return row.holder[:8]

    @admin.display(description="Share", ordering="share")
    def share_pct(self, row: RateLimitLease) -> str:
        return f"{row.share:.0%}"

    def get_queryset(self, request):
        return super().get_queryset(request).with_live()

    @admin.display(description="Live", boolean=True, ordering="live")
    def is_live(self, row: RateLimitLease) -> bool:
        return row.live
