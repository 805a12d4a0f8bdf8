from decimal import Decimal, InvalidOperation

from django.core.management.base import BaseCommand, CommandError

from crystallise.management import full_clean
from crystallise.models import ApiKey


class Command(BaseCommand):
    help = "Create a service API key and print it once. Ends dev mode at once."

    def add_arguments(self, parser):
        parser.add_argument("name")
        parser.add_argument("--monthly-budget-usd", default=None,
                            help="Spend cap per calendar month (UTC), in dollars with up to 2 decimals.")

    def handle(self, name, monthly_budget_usd, **options):
        name = name.strip()
        budget = None
        if monthly_budget_usd is not None:
            try:
                budget = Decimal(monthly_budget_usd.strip())
            except InvalidOperation:
                raise CommandError(f"--monthly-budget-usd must be an amount in dollars, not {monthly_budget_usd!r}.") from None
        if ApiKey.objects.filter(name=name).exists():
            raise CommandError(f"An API key named {name!r} already exists.")
        full_clean(ApiKey(name=name, monthly_budget_usd=budget), what=f"API key {name!r}", exclude=["prefix", "key_hash"])
        key, secret = ApiKey.objects.create_key(name=name, monthly_budget_usd=budget)
        self.stderr.write(f"Created API key {key.name!r} ({key.prefix}…). It is shown only this once:")
        self.stdout.write(secret)
