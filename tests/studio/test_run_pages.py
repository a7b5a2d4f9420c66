"""Run pages and endpoints: Alice sees her runs, Bob sees none of them, Sam (staff) sees all."""

import pytest
import yaml
from django.urls import reverse
from studio_testing import form_data, tiny_config

from prorl_engine.config import RunConfig
from studio.models import Command, Event, MetricPoint, Run, RunStatus

pytestmark = pytest.mark.django_db

RUN_URLS = ["run-detail", "run-metrics", "run-config-yaml", "run-clone"]


@pytest.mark.parametrize("name", RUN_URLS)
def test_bob_cannot_see_alices_run(client, bob, alices_run, name):
    client.force_login(bob)
    assert client.get(reverse(name, args=[alices_run.pk])).status_code == 404


@pytest.mark.parametrize("name", RUN_URLS)
def test_sam_as_staff_sees_alices_run(client, sam, alices_run, name):
    client.force_login(sam)
    assert client.get(reverse(name, args=[alices_run.pk])).status_code == 200


@pytest.mark.parametrize("name", RUN_URLS)
def test_it_sends_anonymous_visitors_to_the_login_page(client, alices_run, name):
    response = client.get(reverse(name, args=[alices_run.pk]))
    assert response.status_code == 302 and response.url.startswith(reverse("login"))


def test_the_run_page_has_a_chart_per_curve_and_serves_plotly_locally(client, alice, alices_run):
    client.force_login(alice)
    page = client.get(reverse("run-detail", args=[alices_run.pk])).content.decode()
    for metric in [
        "reward/mean",
        "reward/verifier_mean",
        "length/mean",
        "kl/ref",
        "policy/entropy",
        "policy/clip_frac_low,policy/clip_frac_high",
        "sampling/filtered_frac",
        "throughput/tokens_per_s",
    ]:
        assert f'data-metric="{metric}"' in page
    assert 'data-metric-pattern="^eval/all/pass@[0-9]+$" data-range="0,1"' in page
    assert "/static/studio/plotly-basic.min.js" in page and "cdn" not in page.lower()


def test_metrics_json_downsamples_long_runs_and_lists_resets_and_windows(client, alice, alices_run, settings):
    settings.CHART_POINTS = 100
    MetricPoint.objects.bulk_create(
        MetricPoint(run=alices_run, step=step, values={"reward/mean": step / 1000, "kl/ref": 0.01})
        for step in range(1, 1001)
    )
    Event.objects.create(run=alices_run, step=5, kind="reset", time=0, data={"reason": "interval", "requested_by": ""})
    client.force_login(alice)
    data = client.get(reverse("run-metrics", args=[alices_run.pk])).json()
    assert len(data["series"]["reward/mean"]["steps"]) <= 102
    assert data["series"]["reward/mean"]["steps"][-1] == 1000
    assert [r["data"]["reason"] for r in data["resets"]] == ["interval"]
    assert data["windows"][0] == [1, 3]  # the tiny preset: 3 steps on, 3 off


def test_the_config_exports_as_yaml_that_the_engine_reads_back(client, alice, alices_run):
    client.force_login(alice)
    text = client.get(reverse("run-config-yaml", args=[alices_run.pk])).content.decode()
    assert RunConfig.from_yaml(text, check_paths=False).to_dict() == alices_run.config


def test_an_imported_yaml_fills_the_form(client, alice):
    client.force_login(alice)
    text = tiny_config(steps=77, eps_high=0.31).to_yaml()
    page = client.post(reverse("run-import"), {"yaml_text": text}).content.decode()
    assert 'name="steps" value="77"' in page and 'name="eps_high" value="0.31"' in page


def test_an_invalid_yaml_import_shows_the_engines_message(client, alice):
    client.force_login(alice)
    text = yaml.safe_dump({**tiny_config().to_dict(), "samples_per_prompt": 1})
    response = client.post(reverse("run-import"), {"yaml_text": text})
    assert response.status_code == 400
    assert "samples_per_prompt: must be at least 2" in response.content.decode()


def test_clone_prefills_the_form_with_the_runs_config(client, alice, alices_run):
    client.force_login(alice)
    page = client.get(reverse("run-clone", args=[alices_run.pk])).content.decode()
    assert f"?clone_of={alices_run.pk}" in page and "alice&#x27;s tiny run (copy)" in page


def test_alice_launches_a_run_from_the_form(client, alice, queued):
    client.force_login(alice)
    with_commit = client.post(reverse("run-new"), form_data(name="from the form"))
    run = Run.objects.get(name="from the form")
    assert with_commit.url == run.get_absolute_url()
    assert run.status == RunStatus.QUEUED and run.owner == alice and run.total_steps == tiny_config().steps


def test_the_preview_lists_penalty_windows_and_planned_resets(client, alice):
    client.force_login(alice)
    data = client.post(reverse("run-preview"), form_data(steps="20", reset_interval="5")).json()
    assert data == {"steps": 20, "windows": [[1, 3], [7, 9], [13, 15], [19, 20]], "resets": [5, 10, 15, 20]}


def test_the_preview_reports_errors_instead_of_a_chart(client, alice):
    client.force_login(alice)
    data = client.post(reverse("run-preview"), form_data(steps="0")).json()
    assert data == {"errors": ["steps: must be at least 1"]}


def test_stopping_a_queued_run_stops_it_at_once(client, alice, alices_run):
    client.force_login(alice)
    client.post(reverse("run-stop", args=[alices_run.pk]))
    alices_run.refresh_from_db()
    assert alices_run.status == RunStatus.STOPPED


def test_stopping_a_running_run_sends_a_command_to_its_worker(client, alice, alices_run):
    Run.objects.filter(pk=alices_run.pk).update(status=RunStatus.RUNNING)
    client.force_login(alice)
    client.post(reverse("run-stop", args=[alices_run.pk]))
    client.post(reverse("run-reset-reference", args=[alices_run.pk]))
    assert [c.kind for c in Command.objects.filter(run=alices_run)] == ["stop", "reset_reference"]


def test_bob_cannot_stop_alices_run(client, bob, alices_run):
    client.force_login(bob)
    assert client.post(reverse("run-stop", args=[alices_run.pk])).status_code == 404
    assert client.get(reverse("run-stop", args=[alices_run.pk])).status_code == 405


def test_the_run_list_shows_only_alices_runs_to_alice_and_sorts(client, alice, bob, alices_run):
    config = tiny_config()
    Run.objects.create(owner=bob, name="bob's run", config=config.to_dict(), total_steps=config.steps)
    Run.objects.create(
        owner=alice,
        name="alice's better run",
        config=config.to_dict(),
        total_steps=config.steps,
        last_step=6,
        latest_reward=0.9,
    )
    client.force_login(alice)
    page = client.get(reverse("run-list") + "?sort=-reward").content.decode()
    assert "bob&#x27;s run" not in page
    assert page.index("alice&#x27;s better run") < page.index("alice&#x27;s tiny run")
    page = client.get(reverse("run-list") + "?sort=name").content.decode()
    assert page.index("alice&#x27;s better run") < page.index("alice&#x27;s tiny run")
    assert client.get(reverse("run-list") + "?sort=drop table").status_code == 200


def test_a_failed_run_shows_its_error_on_its_page(client, alice, alices_run):
    Run.objects.filter(pk=alices_run.pk).update(status=RunStatus.FAILED, error="ValueError: the data ran dry")
    client.force_login(alice)
    page = client.get(reverse("run-detail", args=[alices_run.pk])).content.decode()
    assert "ValueError: the data ran dry" in page and "status-failed" in page
