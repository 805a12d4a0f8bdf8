from django.apps import AppConfig


class CrystalliseConfig(AppConfig):
    name = "crystallise"
    verbose_name = "Crystallise"

    def ready(self) -> None:
        from crystallise import checks  # noqa: F401  (registers system checks)
