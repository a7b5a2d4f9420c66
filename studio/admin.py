from django.contrib import admin

from studio.models import Checkpoint, Command, Event, Run, Sample


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
