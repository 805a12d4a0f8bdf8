from django.apps import AppConfig
from django.contrib.admin import apps as admin_apps


class CrystalliseConfig(AppConfig):
    name = "crystallise"
    verbose_name = "Crystallise"

    def ready(self) -> None:
        from crystallise import checks  # noqa: F401  (registers system checks)


class CrystalliseAdminConfig(admin_apps.AdminConfig):
    """Django's admin with the operators' site (cost page, index link) as `admin.site`."""

    default = False  # not the config of the `crystallise` app itself
    default_site = "crystallise.admin_site.CrystalliseAdminSite"
