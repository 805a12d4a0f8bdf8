from django.db import migrations


def create_schedule(apps, schema_editor):
    Schedule = apps.get_model("django_q", "Schedule")
    Schedule.objects.update_or_create(
        name="crystallise.recover_jobs",
        defaults={"func": "crystallise.tasks.recover_jobs", "schedule_type": "I", "minutes": 1, "repeats": -1},
    )


def drop_schedule(apps, schema_editor):
    apps.get_model("django_q", "Schedule").objects.filter(name="crystallise.recover_jobs").delete()


class Migration(migrations.Migration):
    dependencies = [("crystallise", "0002_jobsecret"), ("django_q", "0018_task_success_index")]
    operations = [migrations.RunPython(create_schedule, drop_schedule)]
