from django.urls import path

from indexer import views

urlpatterns = [
    path("run", views.IndexRun.as_view(), name="indexer-run"),
    path("jobs", views.JobListCreate.as_view(), name="indexer-jobs"),
    path("jobs/<uuid:job_id>", views.JobDetail.as_view(), name="indexer-job"),
    path("jobs/<uuid:job_id>/results", views.JobResults.as_view(), name="indexer-job-results"),
]
