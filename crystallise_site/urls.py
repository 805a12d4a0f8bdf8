from django.contrib import admin
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from crystallise.api import healthz

urlpatterns = [
    path("healthz", healthz, name="healthz"),
    path("v1/schema/", SpectacularAPIView.as_view(), name="schema"),
    path("v1/docs/", SpectacularSwaggerView.as_view(url_name="schema"), name="swagger-ui"),
    path("v1/screening/", include("screening.urls")),
    path("v1/criteria/", include("criteria.urls")),
    path("v1/indexer/", include("indexer.urls")),
    path("admin/", admin.site.urls),
]

handler404 = "crystallise.api.not_found"
handler500 = "crystallise.api.server_error"
handler400 = "crystallise.api.bad_request"
