from django.core.management.base import BaseCommand, CommandError

from crystallise.models import ApiKey


class Command(BaseCommand):
    help = "Create a service API key and print it once. Ends dev mode at once."

    def add_arguments(self, parser):
        parser.add_argument("name")
        parser.add_argument("--monthly-budget-usd", type=float, default=None)

    def handle(self, name, monthly_budget_usd, **options):
        if ApiKey.objects.filter(name=name).exists():
            raise CommandError(f"An API key named {name!r} already exists.")
        key, secret = ApiKey.objects.create_key(name=name, monthly_budget_usd=monthly_budget_usd)
        self.stderr.write(f"Created API key {key.name!r} ({key.prefix}…). It is shown only this once:")
        self.stdout.write(secret)
