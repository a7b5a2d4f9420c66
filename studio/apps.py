from django.apps import AppConfig
from django.core import checks


class StudioConfig(AppConfig):
    name = "studio"
    verbose_name = "ProRL Studio"

    def ready(self) -> None:
        checks.register(vendored_assets, checks.Tags.staticfiles)


def vendored_assets(app_configs=None, **kwargs) -> list[checks.CheckMessage]:
    """Pages without plotly draw no chart: say so before the server starts, with the command that fixes it."""
    from studio import vendor

    return [
        checks.Error(
            f"{vendor.VENDOR_DIR / asset.name} is missing or not {asset.package}@{asset.version}",
            hint="run `make setup` (or `python -m studio.vendor`) to fetch it from the npm registry",
            id="studio.E001",
        )
        for asset in vendor.missing()
    ]
