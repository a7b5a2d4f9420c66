"""A run's config as a viewer sees it: Alice's run trains from her registered model on her uploaded
data set and on a server file; Bob, a viewer in her team, and whoever holds a share link read the
model and data sets by their registry names and the file as "…/<name>" on the run page, in its
config.yaml, over the API, in the clone form, in the overlay's config diff and in the comparison
form; Alice and her editors see every path as stored."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from access_testing import api_token, bearer, fast_passwords, share, team_of  # noqa: F401 (a fixture)
from django.urls import reverse
from studio_testing import tiny_config

from studio.models import RegisteredDataset, RegisteredModel, Run, TeamRole
from studio.payloads import shown_config, viewer_model_path, viewer_path

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("fast_passwords")]
SERVER_FILE = "/srv/prorl/data/secret.jsonl"
GYM_SOURCE = {"task": "chain_sum", "source": "reasoning_gym", "weight": 1.0, "size": 50, "eval_size": 4}


def file_source(task: str, path: str) -> dict:
    return {"task": task, "source": "file", "path": path, "domain": "math", "eval_size": 1}


@pytest.fixture
def paths(settings, tmp_path) -> dict[str, str]:
    """Where Alice's model, her upload and the studio's runs lie on the server."""
    settings.RUNS_DIR = tmp_path / "runs"
    return {
        "model": str(tmp_path / "models" / "qwen-1.5b"),
        "upload": str(tmp_path / "uploads" / "1" / "f00d" / "sums.jsonl"),
    }


@pytest.fixture
def private_run(paths, alice, bob) -> Run:
    """Alice's run on her registered model and upload and a server file, in her team where Bob views."""
    RegisteredModel.objects.create(name="qwen", owner=alice, path=paths["model"])
    RegisteredDataset.objects.create(name="sums", owner=alice, path=paths["upload"], domain="math", uploaded=True)
    config = tiny_config(
        model_path=paths["model"],
        data=[file_source("sums", paths["upload"]), file_source("secret", SERVER_FILE), GYM_SOURCE],
    )
    return Run.objects.create(
        owner=alice,
        team=team_of(alice, (bob, TeamRole.VIEWER)),
        name="private",
        config=config.to_dict(),
        total_steps=config.steps,
    )


def as_a_viewer_sees(run: Run) -> dict:
    """The run's config with its three paths written by hand the way a viewer reads them."""
    data = run.config["data"]
    return {
        **run.config,
        "model_path": "qwen (registered model)",
        "data": [{**data[0], "path": "sums (registered data set)"}, {**data[1], "path": "…/secret.jsonl"}, data[2]],
    }


def leaks(text: str, paths: dict[str, str]) -> list[str]:
    """The server paths `text` shows (the test's folder holds the model, the upload and the runs)."""
    tmp = str(Path(paths["model"]).parents[1])
    return [secret for secret in (tmp, "/srv/prorl") if secret in text]


def test_a_path_reads_as_a_name_relative_to_the_run_or_its_last_component(tmp_path):
    run_dir = tmp_path / "runs" / "17"
    names = {tmp_path / "models" / "qwen": "qwen (registered model)"}
    base = tmp_path / "project"
    assert viewer_path(str(tmp_path / "models" / "qwen"), run_dir, base, names) == "qwen (registered model)"
    assert viewer_path(str(tmp_path / "models" / "qwen/"), run_dir, base, names) == "qwen (registered model)"
    assert viewer_path(f"{run_dir}/checkpoints/step-000003", run_dir, base, names) == "checkpoints/step-000003"
    assert (
        viewer_path(f"{tmp_path}/runs/18/checkpoints/step-000002", run_dir, base, names)
        == "runs/18/checkpoints/step-000002"
    )
    assert viewer_path(f"{run_dir}/../18/x", run_dir, base, names) == "runs/18/x"
    assert viewer_path("/srv/prorl/data/secret.jsonl", run_dir, base, names) == "…/secret.jsonl"
    assert viewer_path("prorl_engine/configs/demo-base", run_dir, base, names) == "…/demo-base"  # read from base
    assert viewer_path(str(tmp_path / "runs"), run_dir, base, names) == "…/runs"
    assert viewer_path("", run_dir, base, names) == ""
    assert viewer_model_path("tiny:var/models/tiny-qwen2", run_dir, base, names) == "tiny:var/models/tiny-qwen2"
    assert viewer_model_path("tiny:/srv/models/x", run_dir, base, names) == "tiny:…/x"
    assert viewer_model_path("base:../../etc/evil", run_dir, base, names) == "base:…/evil"
    assert viewer_model_path(str(tmp_path / "models" / "qwen"), run_dir, base, names) == "qwen (registered model)"


def test_bob_as_a_viewer_reads_names_on_every_page_and_over_the_api(client, bob, private_run, paths):
    expected = as_a_viewer_sees(private_run)
    client.force_login(bob)
    page = client.get(reverse("run-detail", args=[private_run.pk])).content.decode()
    download = client.get(reverse("run-config-yaml", args=[private_run.pk])).content.decode()
    api = client.get(reverse("api-run", args=[private_run.pk]), **bearer(api_token(bob))).json()
    listed = client.get(reverse("api-runs"), **bearer(api_token(bob))).json()
    clone = client.get(reverse("run-clone", args=[private_run.pk]))
    for text in (page, download, json.dumps(api), json.dumps(listed), clone.content.decode()):
        assert leaks(text, paths) == []
    assert yaml.safe_load(download) == api["config"] == expected
    assert "model_path: qwen (registered model)" in download and "path: …/secret.jsonl" in download
    assert "model_path: qwen (registered model)" in page and "path: sums (registered data set)" in page
    initial = clone.context["form"].initial
    assert initial["model_path"] == "qwen (registered model)" and yaml.safe_load(initial["data"]) == expected["data"]


def test_a_share_link_shows_the_same_names(client, private_run, paths):
    page = client.get(reverse("share-detail", args=[share(private_run)])).content.decode()
    assert leaks(page, paths) == []
    assert "model_path: qwen (registered model)" in page and "path: …/secret.jsonl" in page


@pytest.mark.parametrize("role", ["owner", "editor"])
def test_alice_and_her_editors_see_every_path_as_stored(client, alice, bob, private_run, paths, role):
    if role == "editor":
        private_run.team.memberships.filter(user=bob).update(role=TeamRole.EDITOR)
    who = alice if role == "owner" else bob
    client.force_login(who)
    download = client.get(reverse("run-config-yaml", args=[private_run.pk])).content.decode()
    api = client.get(reverse("api-run", args=[private_run.pk]), **bearer(api_token(who))).json()
    page = client.get(reverse("run-detail", args=[private_run.pk])).content.decode()
    clone = client.get(reverse("run-clone", args=[private_run.pk])).context["form"].initial
    assert yaml.safe_load(download) == api["config"] == private_run.config
    assert f"model_path: {paths['model']}" in page and f"path: {SERVER_FILE}" in page
    assert clone["model_path"] == paths["model"]
    assert shown_config(private_run, details=True) == private_run.config


def test_the_overlay_diffs_configs_as_the_viewer_sees_them(client, alice, bob, private_run, paths):
    config = tiny_config()
    other = Run.objects.create(
        owner=alice, team=private_run.team, name="on tiny", config=config.to_dict(), total_steps=config.steps
    )
    client.force_login(bob)
    response = client.get(reverse("overlay") + f"?run={private_run.pk}&run={other.pk}")
    assert leaks(response.content.decode(), paths) == []
    diff = dict(response.context["diff"])
    assert diff["model_path"] == ["qwen (registered model)", config.model_path]
    assert "path: …/secret.jsonl" in diff["data"][0]
    client.force_login(alice)
    diff = dict(client.get(reverse("overlay") + f"?run={private_run.pk}&run={other.pk}").context["diff"])
    assert diff["model_path"] == [paths["model"], config.model_path]


def test_the_comparison_form_offers_a_viewer_no_server_path_of_alices(client, alice, bob, private_run, paths):
    config = tiny_config()
    Run.objects.create(
        owner=alice, team=private_run.team, name="on tiny", config=config.to_dict(), total_steps=config.steps
    )
    client.force_login(bob)
    response = client.get(reverse("compare-new"))
    assert leaks(response.content.decode(), paths) == []
    assert [value for value, _ in response.context["form"].fields["base_models"].choices] == [config.model_path]
    client.force_login(alice)
    offered = client.get(reverse("compare-new")).context["form"].fields["base_models"].choices
    assert sorted(value for value, _ in offered) == sorted([paths["model"], config.model_path])


def test_where_two_entries_name_the_model_the_run_owners_name_is_shown(sam, private_run, paths):
    RegisteredModel.objects.create(name="a lab model", owner=sam, team=private_run.team, path=paths["model"])
    assert shown_config(private_run, details=False)["model_path"] == "qwen (registered model)"
    RegisteredModel.objects.filter(name="qwen").delete()
    assert shown_config(private_run, details=False)["model_path"] == "a lab model (registered model)"
