from django.core.management.base import BaseCommand, CommandError

from crystallise.models import ApiKey


class Command(BaseCommand):
    help = "Revoke a service API key; it stops working at once (no restart)."

    def add_arguments(self, parser):
        parser.add_argument("name")

    def handle(self, name, **options):
        key = ApiKey.objects.filter(name=name).first()
        if key is None:
            raise CommandError(f"No API key named {name!r}.")
        key.revoke()
        self.stdout.write(f"Revoked API key {key.name!r} ({key.prefix}…).")
