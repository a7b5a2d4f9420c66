from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import path

from studio import views

urlpatterns = [
    path("", views.run_list, name="run-list"),
    path("runs/new/", views.run_new, name="run-new"),
    path("runs/import/", views.run_import, name="run-import"),
    path("runs/preview.json", views.run_preview, name="run-preview"),
    path("runs/<int:run_id>/", views.run_detail, name="run-detail"),
    path("runs/<int:run_id>/metrics.json", views.run_metrics, name="run-metrics"),
    path("runs/<int:run_id>/config.yaml", views.run_config_yaml, name="run-config-yaml"),
    path("runs/<int:run_id>/clone/", views.run_clone, name="run-clone"),
    path("runs/<int:run_id>/stop/", views.run_stop, name="run-stop"),
    path("runs/<int:run_id>/reset-reference/", views.run_reset_reference, name="run-reset-reference"),
    path("accounts/login/", auth_views.LoginView.as_view(), name="login"),
    path("accounts/logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("admin/", admin.site.urls),
]
