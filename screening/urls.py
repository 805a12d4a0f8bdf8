from django.urls import path

from screening import trust_views, views

urlpatterns = [
    path("jobs", views.JobListCreate.as_view(), name="screening-jobs"),
    path("jobs/<uuid:job_id>", views.JobDetail.as_view(), name="screening-job"),
    path("jobs/<uuid:job_id>/results", views.JobResults.as_view(), name="screening-job-results"),
    # Human reviews, evaluation, validation samples and the report (screening.trust_views).
    path("jobs/<uuid:job_id>/reviews", trust_views.JobReviews.as_view(), name="screening-job-reviews"),
    # Paper ids may contain "/" (DOIs): `path` matches them, "/reviews" ends the route.
    path("jobs/<uuid:job_id>/results/<path:paper_id>/reviews", trust_views.PaperReviews.as_view(),
         name="screening-paper-reviews"),
    path("jobs/<uuid:job_id>/evaluation", trust_views.JobEvaluation.as_view(), name="screening-job-evaluation"),
    path("jobs/<uuid:job_id>/validation-samples", trust_views.ValidationSamples.as_view(),
         name="screening-validation-samples"),
    path("jobs/<uuid:job_id>/validation-samples/plan", trust_views.ValidationPlan.as_view(),
         name="screening-validation-plan"),
    path("jobs/<uuid:job_id>/validation-samples/<uuid:sample_id>", trust_views.ValidationSampleDetail.as_view(),
         name="screening-validation-sample"),
    path("jobs/<uuid:job_id>/report", trust_views.JobReport.as_view(), name="screening-job-report"),
]
