"""Malformed input gets a 400 that names the field, fast, never a 500; a long planned run costs no
more to view than a short one. Each case here was a 500 (or a slow answer) before issue 11."""

from __future__ import annotations

import json
import time

import pytest
import yaml
from access_testing import api_token, bearer, fast_passwords  # noqa: F401 (a fixture)
from django.urls import reverse
from studio_testing import form_data, tiny_config

from studio.models import Checkpoint, Run

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("fast_passwords")]

BOMB = "\n".join(
    ["- task: chain_sum", "  params:", '    a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    + [f"    {b}: &{b} [{', '.join([f'*{a}'] * 9)}]" for a, b in zip("abcdefgh", "bcdefghi")]
)
DEEP = "- " + "[" * 5000 + "]" * 5000


@pytest.fixture
def as_alice(client, alice):
    client.force_login(alice)
    return client


def timed(call):
    started = time.perf_counter()
    response = call()
    return response, time.perf_counter() - started


# --- the run form, the preview and the YAML import ------------------------------------------------


def test_steps_of_2_to_the_31_are_refused_fast_on_the_steps_field(as_alice):
    as_alice.post(reverse("run-new"), form_data(steps=0))  # warm: the first validation imports torch and reasoning-gym
    response, seconds = timed(lambda: as_alice.post(reverse("run-new"), form_data(steps=2**31)))
    assert response.status_code == 400 and seconds < 2.0
    assert "must be at most 1,000,000" in response.context["form"].errors["steps"][0]
    assert not Run.objects.exists()


def test_a_megabyte_model_path_is_refused_without_echoing_it(as_alice):
    response = as_alice.post(reverse("run-new"), form_data(model_path="a" * 1_000_000))
    assert response.status_code == 400
    assert response.context["form"].errors["model_path"] == ["is 1,000,000 characters long; at most 4,096"]
    assert not Run.objects.exists()


@pytest.mark.parametrize("text, words", [(DEEP, "nested deeper than 32 levels"), (BOMB, "more than 64 aliases")])
def test_a_hostile_data_mix_is_refused_fast_on_the_data_field(as_alice, text, words):
    response, seconds = timed(lambda: as_alice.post(reverse("run-new"), form_data(data=text)))
    assert response.status_code == 400 and seconds < 2.0
    assert words in response.context["form"].errors["data"][0]
    assert not Run.objects.exists()


@pytest.mark.parametrize(
    "text, words", [("data:\n" + DEEP, "nested deeper than 32 levels"), ("data:\n" + BOMB, "more than 64 aliases")]
)
def test_a_hostile_yaml_import_is_refused_fast(as_alice, text, words):
    response, seconds = timed(lambda: as_alice.post(reverse("run-import"), {"yaml_text": text}))
    assert response.status_code == 400 and seconds < 2.0
    assert words in response.content.decode()


def test_an_oversized_yaml_upload_is_refused_on_its_field(as_alice):
    from django.core.files.uploadedfile import SimpleUploadedFile

    upload = SimpleUploadedFile("big.yaml", b"#" * (4 * 131_072 + 1), content_type="application/yaml")
    response = as_alice.post(reverse("run-import"), {"yaml_file": upload})
    assert response.status_code == 400
    assert response.context["import_form"].errors["yaml_file"] == ["is 524,289 bytes; a config file is at most 524,288"]


def test_a_preview_with_errors_is_a_400_listing_them(as_alice):
    response = as_alice.post(reverse("run-preview"), form_data(steps="0", temperature="1e40"))
    assert response.status_code == 400
    assert response.json()["errors"] == [
        "steps: must be at least 1",
        "temperature: must be at most 10: above 10 sampling is close to uniform over the vocabulary",
    ]


def test_a_body_over_the_upload_limit_and_too_many_fields_are_refused(as_alice):
    big = as_alice.post(reverse("run-preview"), form_data(data="#" * (1024 * 1024 + 1)))
    many = as_alice.post(reverse("run-preview"), {**form_data(), **{f"x{i}": "1" for i in range(300)}})
    assert big.status_code == 400 and many.status_code == 400  # Django refuses both before the view
    assert "errors" not in big.content.decode() and "errors" not in many.content.decode()
    # A data mix of 120,000 characters (360 kB URL-encoded) still reaches the engine, which names it.
    fits = as_alice.post(reverse("run-preview"), form_data(data="#" * 120_000))
    assert fits.status_code == 400 and fits.json()["errors"][0].startswith("data: ")


# --- a run planned for 10^6 steps is as cheap to view as one of 1,000 -----------------------------


def test_the_metrics_and_preview_of_a_million_step_run_answer_fast_with_visible_windows_only(as_alice, alice, settings):
    settings.CHART_POINTS = 2000
    config = tiny_config(steps=10**6, on_steps=1, off_steps=1, reset_interval=1)
    run = Run.objects.create(owner=alice, name="long", config=config.to_dict(), total_steps=config.steps)
    response, seconds = timed(lambda: as_alice.get(reverse("run-metrics", args=[run.pk])))
    assert response.status_code == 200 and seconds < 1.0
    assert response.json()["windows"] == [[1, 999_999]]  # 500,000 one-step windows, one band at 2,000 points
    preview, seconds = timed(lambda: as_alice.post(reverse("run-preview"), form_data(config)))
    data = preview.json()
    assert seconds < 2.0 and data["steps"] == 10**6 and data["windows"] == [[1, 999_999]]
    assert len(data["resets"]) == 2000 and data["resets"][:2] == [500, 1000]
    wide = tiny_config(steps=10**6, on_steps=100, off_steps=900)
    data = as_alice.post(reverse("run-preview"), form_data(wide)).json()
    assert len(data["windows"]) == 1000 and data["windows"][1] == [1001, 1100]


def test_a_run_stored_before_the_bounds_still_shows(as_alice, alice):
    config = {**tiny_config().to_dict(), "temperature": 1e40}
    run = Run.objects.create(owner=alice, name="old", config=config, total_steps=12)
    for name in ("run-detail", "run-metrics", "run-config-yaml"):
        assert as_alice.get(reverse(name, args=[run.pk])).status_code == 200, name
    shown = yaml.safe_load(as_alice.get(reverse("run-config-yaml", args=[run.pk])).content)
    assert float(shown["temperature"]) == 1e40  # as stored (PostgreSQL gives it back as a whole number)


# --- query parameters of pages and JSON endpoints -------------------------------------------------


@pytest.mark.parametrize(
    "url, field",
    [
        ("/runs/new/?clone_of=%C2%B2", "clone_of"),
        ("/runs/new/?clone_of=abc", "clone_of"),
        ("/overlay/?run=%C2%B2", "run"),
        ("/overlay/?run=" + "9" * 30, "run"),
        ("/compare/?checkpoint=-1", "checkpoint"),
        ("/compare/?run=%00", "run"),
    ],
)
def test_a_page_with_a_malformed_id_answers_400_naming_it(as_alice, url, field):
    response = as_alice.get(url)
    assert response.status_code == 400
    assert response.content.decode().startswith(f"{field}: must be an id")


def test_the_overlay_data_answers_json_400(as_alice):
    response = as_alice.get("/overlay/data.json?run=1&run=x")
    assert response.status_code == 400 and response.json() == {
        "error": "run: must be an id (a whole number from 1)",
        "field": "run",
    }


def test_a_fork_with_a_malformed_checkpoint_answers_400(as_alice, alices_run):
    Checkpoint.objects.create(run=alices_run, step=4, path="/ckpt/step-4")
    response = as_alice.get(reverse("run-fork", args=[alices_run.pk]) + "?checkpoint=%C2%B2")
    assert response.status_code == 400 and response.content.decode().startswith("checkpoint: ")


def test_a_comparison_with_an_unreadable_k_is_refused_on_its_field(as_alice, alices_run):
    response = as_alice.post(
        reverse("compare-new"), {"base_models": [], "model_path": "tiny:a", "n": "4", "ks": "1, ²", "prompts": "8"}
    )
    assert response.status_code == 400
    assert "whole numbers" in response.context["form"].errors["ks"][0]


@pytest.mark.parametrize(
    "path, field",
    [
        ("/api/v1/runs/?status=run%00ning", "status"),
        ("/api/v1/runs/?status=bogus", "status"),
        ("/api/v1/runs/{run}/events/?kind=reset%00", "kind"),
        ("/api/v1/runs/{run}/events/?since=%C2%B2", "since"),
        ("/api/v1/runs/{run}/events/?after_id=" + "9" * 30, "after_id"),
        ("/api/v1/runs/{run}/metrics/?keys=a%00b", "keys"),
        ("/api/v1/runs/{run}/metrics/?limit=-5", "limit"),
        ("/api/v1/runs/{run}/metrics/?downsample=ten", "downsample"),
    ],
)
def test_an_api_query_parameter_that_is_malformed_is_a_400_naming_it(client, alice, alices_run, path, field):
    response = client.get(path.format(run=alices_run.pk), **bearer(api_token(alice)))
    assert response.status_code == 400
    assert response.json()["field"] == field and response.json()["error"].startswith(f"{field}: ")


def test_api_numbers_past_their_documented_maximum_are_moved_into_range(client, alice, alices_run):
    response = client.get(f"/api/v1/runs/{alices_run.pk}/metrics/?limit=99999999&since=5", **bearer(api_token(alice)))
    assert response.status_code == 200 and response.json()["since"] == 5


@pytest.mark.parametrize("body", ["[" * 100_000, "[" * 3000 + "]" * 3000, "[1, 2]", "{not json", b"\xff\xfe"])
def test_a_command_body_that_is_not_a_small_json_object_is_a_400(client, alice, alices_run, body):
    response = client.post(
        f"/api/v1/runs/{alices_run.pk}/commands/",
        data=body,
        content_type="application/json",
        **bearer(api_token(alice)),
    )
    assert response.status_code == 400 and response.json()["field"] == "body"


def test_a_100000_deep_body_to_the_run_api_is_a_400_and_creates_nothing(client, alice):
    for body in ("[" * 100_000, '{"name": "x", "config": ' + "[" * 3000 + "]" * 3000 + "}"):
        response = client.post("/api/v1/runs/", data=body, content_type="application/json", **bearer(api_token(alice)))
        assert response.status_code == 400
    body = {"name": "nul\x00name", "config": tiny_config().to_dict()}
    response = client.post(
        "/api/v1/runs/", data=json.dumps(body), content_type="application/json", **bearer(api_token(alice))
    )
    assert response.status_code == 400 and response.json()["errors"][0]["field"] == "name"
    assert not Run.objects.exists()


def test_a_token_name_with_a_nul_is_a_400(as_alice):
    response = as_alice.post(reverse("api-token-create"), {"name": "my\x00script"})
    assert response.status_code == 400 and response.content.decode().startswith("name: ")


def test_a_websocket_cursor_that_is_not_ascii_digits_starts_from_the_beginning():
    from studio.consumers import _after

    assert _after(b"after=%C2%B2") == 0 and _after(b"after=" + b"9" * 40) == 0 and _after(b"after=42") == 42
