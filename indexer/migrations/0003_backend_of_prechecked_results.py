"""Results stopped by the abstract pre-check were stored with an empty `llm_backend`: give them their job's."""

from django.db import migrations
from django.db.models import OuterRef, Subquery


def fill_backend(apps, schema_editor):
    IndexJob = apps.get_model("indexer", "IndexJob")
    IndexResult = apps.get_model("indexer", "IndexResult")
    job_backend = IndexJob.objects.filter(pk=OuterRef("job_id")).values("llm_backend")[:1]
    IndexResult.objects.filter(llm_backend="").update(llm_backend=Subquery(job_backend))


class Migration(migrations.Migration):
    dependencies = [("indexer", "0002_key_fingerprint_owner_projects")]

    operations = [migrations.RunPython(fill_backend, migrations.RunPython.noop)]
