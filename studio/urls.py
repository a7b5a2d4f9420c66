from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import path, re_path

from studio import (
    api,
    boundary,
    compare,
    control,
    export,
    forks,
    overlay,
    registry,
    runs_table,
    sharing,
    teams,
    views,
    watchdogs,
    workers,
)

urlpatterns = [
    path("", runs_table.run_list, name="run-list"),  # the runs table (studio/runs_table.py)
    path("runs/new/", views.run_new, name="run-new"),
    path("runs/import/", views.run_import, name="run-import"),
    path("runs/preview.json", views.run_preview, name="run-preview"),
    path("runs/<int:run_id>/", views.run_detail, name="run-detail"),
    path("runs/<int:run_id>/metrics.json", views.run_metrics, name="run-metrics"),
    path("runs/<int:run_id>/config.yaml", views.run_config_yaml, name="run-config-yaml"),
    path("runs/<int:run_id>/clone/", views.run_clone, name="run-clone"),
    # every stored point of a run as a file (studio/export.py)
    path("runs/<int:run_id>/export/metrics.csv", export.run_metrics_csv, name="run-export-csv"),
    path("runs/<int:run_id>/export/metrics.json", export.run_metrics_json, name="run-export-json"),
    # live control (studio/control.py)
    path("runs/<int:run_id>/reset-reference/", control.run_reset_reference, name="run-reset-reference"),
    path("runs/<int:run_id>/pause/", control.run_pause, name="run-pause"),
    path("runs/<int:run_id>/resume/", control.run_resume, name="run-resume"),
    path("runs/<int:run_id>/stop/", control.run_stop, name="run-stop"),
    path("runs/<int:run_id>/save-checkpoint/", control.run_save_checkpoint, name="run-save-checkpoint"),
    path("runs/<int:run_id>/commands.json", control.run_commands, name="run-commands"),
    # tags and notes, the queue, watchdogs (studio/runs_table.py, studio/workers.py, studio/watchdogs.py)
    path("runs/<int:run_id>/annotate/", runs_table.run_annotate, name="run-annotate"),
    path("runs/<int:run_id>/queue.json", workers.run_queue, name="run-queue"),
    path("runs/<int:run_id>/cancel/", workers.run_cancel, name="run-cancel"),
    path("runs/<int:run_id>/watchdogs/", watchdogs.run_watchdogs, name="run-watchdogs"),
    path("workers/", workers.worker_list, name="worker-list"),
    # forks (studio/forks.py)
    path("runs/<int:run_id>/fork/", forks.run_fork, name="run-fork"),
    path("runs/<int:run_id>/parent-curves.json", forks.run_parent_curves, name="run-parent-curves"),
    # comparisons of checkpoints (studio/compare.py) and overlays of runs (studio/overlay.py)
    path("compare/", compare.compare_new, name="compare-new"),
    path("compare/<int:comparison_id>/", compare.compare_detail, name="compare-detail"),
    path("compare/<int:comparison_id>/data.json", compare.compare_data, name="compare-data"),
    path("compare/<int:comparison_id>/boundary/", boundary.compare_boundary, name="compare-boundary"),
    path("compare/<int:comparison_id>/boundary.json", boundary.compare_boundary_data, name="compare-boundary-data"),
    path("overlay/", overlay.overlay, name="overlay"),
    path("overlay/data.json", overlay.overlay_data, name="overlay-data"),
    # sharing and access: a run's team and share links, teams, API tokens, the JSON API
    path("runs/<int:run_id>/sharing/", sharing.run_sharing, name="run-sharing"),
    path("runs/<int:run_id>/team/", sharing.run_set_team, name="run-set-team"),
    path("runs/<int:run_id>/share-links/new/", sharing.share_link_create, name="share-link-create"),
    path("runs/<int:run_id>/share-links/<int:link_id>/revoke/", sharing.share_link_revoke, name="share-link-revoke"),
    path("s/<str:token>/", sharing.share_detail, name="share-detail"),
    path("s/<str:token>/metrics.json", sharing.share_metrics, name="share-metrics"),
    path("s/<str:token>/export/metrics.csv", export.share_metrics_csv, name="share-export-csv"),
    path("s/<str:token>/export/metrics.json", export.share_metrics_json, name="share-export-json"),
    # anything else under a share link is the plain 404 (a view's Http404, so never DEBUG's list of routes)
    re_path(r"^s/", sharing.share_not_found, name="share-not-found"),
    # the registry of models and data sets runs may use (studio/registry.py)
    path("registry/", registry.registry_list, name="registry-list"),
    path("registry/upload/", registry.registry_upload, name="registry-upload"),
    path("registry/register/", registry.registry_register, name="registry-register"),
    path("teams/", teams.team_list, name="team-list"),
    path("teams/new/", teams.team_create, name="team-create"),
    path("teams/<int:team_id>/", teams.team_detail, name="team-detail"),
    path("teams/<int:team_id>/members/", teams.team_member_add, name="team-member-add"),
    path("teams/<int:team_id>/members/<int:user_id>/role/", teams.team_member_role, name="team-member-role"),
    path("teams/<int:team_id>/members/<int:user_id>/remove/", teams.team_member_remove, name="team-member-remove"),
    path("account/api-tokens/", api.api_token_list, name="api-token-list"),
    path("account/api-tokens/new/", api.api_token_create, name="api-token-create"),
    path("account/api-tokens/<int:token_id>/revoke/", api.api_token_revoke, name="api-token-revoke"),
    path("api/v1/runs/", api.api_runs, name="api-runs"),
    path("api/v1/runs/<int:run_id>/", api.api_run, name="api-run"),
    path("api/v1/runs/<int:run_id>/metrics/", api.api_run_metrics, name="api-run-metrics"),
    path("api/v1/runs/<int:run_id>/events/", api.api_run_events, name="api-run-events"),
    path("api/v1/runs/<int:run_id>/commands/", api.api_run_commands, name="api-run-commands"),
    path("api/v1/runs/<int:run_id>/watchdogs/", api.api_run_watchdogs, name="api-run-watchdogs"),
    path("accounts/login/", auth_views.LoginView.as_view(), name="login"),
    path("accounts/logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("admin/", admin.site.urls),
]

# Missing and forbidden look the same, with DEBUG on or off (studio.middleware).
handler404 = "studio.middleware.page_not_found"
