from django.urls import path

from screening import views

urlpatterns = [
    path("jobs", views.JobListCreate.as_view(), name="screening-jobs"),
    path("jobs/<uuid:job_id>", views.JobDetail.as_view(), name="screening-job"),
    path("jobs/<uuid:job_id>/results", views.JobResults.as_view(), name="screening-job-results"),
]
