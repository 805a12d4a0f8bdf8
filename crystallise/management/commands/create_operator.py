import secrets

from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.password_validation import validate_password
from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError

from crystallise.management import full_clean


class Command(BaseCommand):
    help = (
        "Create an operator (a staff superuser) for /admin/. The password is CRYSTALLISE_OPERATOR_PASSWORD "
        "when set, else a random one printed once. No prompts, so it works in containers and scripts."
    )

    def add_arguments(self, parser):
        parser.add_argument("username")
        parser.add_argument("--email", default="")
        parser.add_argument(
            "--reset-password", action="store_true",
            help="The user exists: give it a new password (and make it an active staff superuser again).",
        )

    def handle(self, username, email, reset_password, **options):
        users = get_user_model()
        user = users.objects.filter(username=username).first()
        if user is not None and not reset_password:
            raise CommandError(f"User {username!r} already exists. Use --reset-password to give it a new password.")
        if user is None and reset_password:
            raise CommandError(f"No user {username!r} to reset.")
        password = settings.CRYSTALLISE_OPERATOR_PASSWORD
        generated = not password
        if generated:
            password = secrets.token_urlsafe(18)
        if user is None:
            user = users(username=username, email=email)
            full_clean(user, what=f"operator {username!r}", exclude=["password"])
        try:
            validate_password(password, user)
        except ValidationError as exc:
            raise CommandError("CRYSTALLISE_OPERATOR_PASSWORD is too weak: " + " ".join(exc.messages)) from None
        user.is_staff = user.is_superuser = user.is_active = True
        user.set_password(password)
        user.save()
        verb = "Reset the password of" if reset_password else "Created"
        self.stderr.write(f"{verb} operator {username!r}; log in at /admin/.")
        if generated:
            self.stderr.write("Password (shown only this once):")
            self.stdout.write(password)
        else:
            self.stderr.write("Password: the value of CRYSTALLISE_OPERATOR_PASSWORD.")
