from django.urls import path

from criteria import views

urlpatterns = [
    path("consolidate", views.Consolidate.as_view(), name="criteria-consolidate"),
]
