from django import forms
from django.contrib import admin

from studio.models import (
    ApiToken,
    Checkpoint,
    Command,
    Comparison,
    Event,
    Membership,
    RegisteredDataset,
    RegisteredModel,
    Run,
    Sample,
    ShareLink,
    Team,
)


@admin.register(Run)
class RunAdmin(admin.ModelAdmin):
    list_display = ("id", "name", "owner", "status", "last_step", "total_steps", "latest_reward", "created_at")
    list_filter = ("status",)
    search_fields = ("name", "owner__username")


@admin.register(Event)
class EventAdmin(admin.ModelAdmin):
    list_display = ("run", "step", "kind", "data")
    list_filter = ("kind",)


@admin.register(Checkpoint)
class CheckpointAdmin(admin.ModelAdmin):
    list_display = ("run", "step", "path", "created_at")


@admin.register(Sample)
class SampleAdmin(admin.ModelAdmin):
    list_display = ("run", "step", "task", "reward", "length")


@admin.register(Command)
class CommandAdmin(admin.ModelAdmin):
    list_display = ("run", "kind", "requested_by", "created_at", "delivered_at")


class MembershipInline(admin.TabularInline):
    model = Membership
    extra = 0


@admin.register(Team)
class TeamAdmin(admin.ModelAdmin):
    list_display = ("id", "name", "created_at")
    search_fields = ("name",)
    inlines = [MembershipInline]


@admin.register(ShareLink)
class ShareLinkAdmin(admin.ModelAdmin):
    """Only the hash of a link's token is stored: the admin can revoke links, never read them."""

    list_display = ("run", "label", "created_by", "created_at", "expires_at", "revoked_at")
    readonly_fields = ("token_hash",)


@admin.register(ApiToken)
class ApiTokenAdmin(admin.ModelAdmin):
    list_display = ("user", "name", "created_at", "last_used_at", "revoked_at")
    readonly_fields = ("token_hash",)


@admin.register(Comparison)
class ComparisonAdmin(admin.ModelAdmin):
    list_display = ("id", "owner", "status", "created_at", "finished_at")
    list_filter = ("status",)


class RegistryEntryAdminForm(forms.ModelForm):
    """The admin registers paths as staff do on the registry page: under PRORL_REGISTRY_ROOTS,
    stored absolute and normalised."""

    kind = "model"

    def clean_path(self) -> str:
        from studio.registry import registrable_path

        typed = self.cleaned_data["path"].strip()
        if self.instance.pk is not None and typed == self.instance.path:
            return typed  # unchanged (an upload's path lies outside the registry roots)
        path = registrable_path(self.current_user, self.kind, typed)
        if path is None:
            raise forms.ValidationError("no such path under the registry roots (PRORL_REGISTRY_ROOTS)")
        return path


class RegisteredModelAdminForm(RegistryEntryAdminForm):
    class Meta:
        model = RegisteredModel
        fields = "__all__"


class RegisteredDatasetAdminForm(RegistryEntryAdminForm):
    kind = "data"

    class Meta:
        model = RegisteredDataset
        fields = "__all__"


class RegistryEntryAdmin(admin.ModelAdmin):
    list_display = ("name", "owner", "team", "path", "created_at")
    search_fields = ("name", "path", "owner__username")

    def get_form(self, request, obj=None, change=False, **kwargs):
        form = super().get_form(request, obj, change, **kwargs)
        form.current_user = request.user
        return form


@admin.register(RegisteredModel)
class RegisteredModelAdmin(RegistryEntryAdmin):
    form = RegisteredModelAdminForm


@admin.register(RegisteredDataset)
class RegisteredDatasetAdmin(RegistryEntryAdmin):
    form = RegisteredDatasetAdminForm
    list_display = ("name", "domain", "owner", "team", "uploaded", "path", "created_at")
