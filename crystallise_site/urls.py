from django.contrib import admin
from django.urls import include, path, re_path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from crystallise.api import healthz, not_found
from crystallise.metrics.exposition import metrics_view

urlpatterns = [
    path("healthz", healthz, name="healthz"),
    path("metrics", metrics_view, name="metrics"),
    path("v1/schema/", SpectacularAPIView.as_view(), name="schema"),
    path("v1/docs/", SpectacularSwaggerView.as_view(url_name="schema"), name="swagger-ui"),
    path("v1/screening/", include("screening.urls")),
    path("v1/criteria/", include("criteria.urls")),
    path("v1/indexer/", include("indexer.urls")),
    path("admin/", admin.site.urls),
    # Unknown routes outside the admin: the JSON error shape, DEBUG or not.
    re_path(r"^(?!admin/|static/).*$", not_found),
]

handler404 = "crystallise.api.not_found"
handler500 = "crystallise.api.server_error"
handler400 = "crystallise.api.bad_request"
