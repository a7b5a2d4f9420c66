"""Paths are data the user owns: Bob (no access to Alice's runs) cannot train from her checkpoint,
read a server file into his samples or make the worker write a model anywhere, through the form,
the YAML import, the preview or the API, and he hears exactly what he hears for a path that does
not exist. Alice still uses her own checkpoints, registered models and uploads."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from access_testing import api_token, bearer, fast_passwords, team_of  # noqa: F401 (a fixture)
from django.urls import reverse
from studio_testing import form_data, tiny_config

from prorl_engine.builders import MODEL_BUILDERS
from prorl_engine.config import ConfigError, RunConfig
from prorl_engine.paths import DATA_REFUSED, MODEL_REFUSED
from studio.launch import launch_run
from studio.models import Checkpoint, RegisteredDataset, RegisteredModel, Run
from studio.paths import run_path_policy

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("fast_passwords")]
REPO = Path(__file__).resolve().parents[2]
RECORDS = [{"prompt": "What is 2 + 2?", "answer": "4"}, {"prompt": "What is 3 + 4?", "answer": "7"}]
ROUTES = ("form", "import", "preview", "api")


def model_folder(folder: Path) -> Path:
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps({"model_type": "qwen2", "max_position_embeddings": 512}))
    return folder


def jsonl(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(record) + "\n" for record in RECORDS))
    return path


@pytest.fixture
def alices_checkpoint(alices_run, tmp_path) -> Checkpoint:
    """A checkpoint of Alice's run, a real save_pretrained folder as far as validation looks."""
    folder = model_folder(tmp_path / "runs" / str(alices_run.pk) / "checkpoints" / "step-000004")
    return Checkpoint.objects.create(run=alices_run, step=4, path=str(folder))


@pytest.fixture
def server_file(tmp_path) -> Path:
    """A file on the server that nobody registered: valid records, so only the rules keep it out."""
    return jsonl(tmp_path / "home" / "alice" / "private.jsonl")


@pytest.fixture
def uploads(settings, tmp_path) -> Path:
    settings.UPLOADS_DIR = tmp_path / "uploads"
    return settings.UPLOADS_DIR


def file_mix(path: str) -> list[dict]:
    return [{"task": "mine", "source": "file", "path": path, "domain": "math", "eval_size": 1}]


def refusal(client, route: str, user, field: str, **changes) -> str:
    """What `user` is told about `field` when posting the tiny preset with `changes` by `route`."""
    values = {**tiny_config().to_dict(), **changes}
    typed = {name: yaml.safe_dump(value) if name == "data" else value for name, value in changes.items()}
    if route == "form":
        response = client.post(reverse("run-new"), form_data(**typed))
        assert response.status_code == 400
        return " | ".join(response.context["form"].errors[field.split("[")[0]])
    if route == "import":
        response = client.post(reverse("run-import"), {"yaml_text": yaml.safe_dump(values)})
        assert response.status_code == 400
        return " | ".join(response.context["import_form"].non_field_errors())
    if route == "preview":
        return json.dumps(client.post(reverse("run-preview"), form_data(**typed)).json()["errors"])
    response = client.post(
        reverse("api-runs"), {"name": "x", "config": values}, content_type="application/json", **bearer(api_token(user))
    )
    assert response.status_code == 400
    return json.dumps(response.json())


@pytest.mark.parametrize("route", ROUTES)
def test_bob_cannot_train_from_alices_checkpoint_and_hears_what_a_missing_folder_gets(
    client, bob, alices_checkpoint, queued, route
):
    client.force_login(bob)
    told = refusal(client, route, bob, "model_path", model_path=alices_checkpoint.path)
    assert told == refusal(client, route, bob, "model_path", model_path="/no/such/model")
    assert MODEL_REFUSED in told and alices_checkpoint.path not in told
    assert Run.objects.count() == 1 and not queued  # only Alice's own run


@pytest.mark.parametrize("route", ROUTES)
def test_bob_cannot_read_a_server_file_into_his_samples(client, bob, server_file, queued, route):
    client.force_login(bob)
    told = refusal(client, route, bob, "data", data=file_mix(str(server_file)))
    assert told == refusal(client, route, bob, "data", data=file_mix("/no/such/file.jsonl"))
    assert DATA_REFUSED in told
    assert not Run.objects.exists() and not queued


@pytest.mark.parametrize("route", ROUTES)
@pytest.mark.parametrize("target", ["tiny:/tmp/bobs-model", "tiny:../../bobs-model", "tiny:", "base:/etc/cron.d"])
def test_bob_cannot_make_the_worker_write_a_model_anywhere(client, bob, queued, route, target):
    client.force_login(bob)
    told = refusal(client, route, bob, "model_path", model_path=target)
    assert told == refusal(client, route, bob, "model_path", model_path="/no/such/model")
    assert not Run.objects.exists() and not queued


def test_alice_trains_from_her_own_checkpoint(client, alice, alices_checkpoint, queued):
    client.force_login(alice)
    response = client.post(reverse("run-new"), form_data(tiny_config(model_path=alices_checkpoint.path), name="mine"))
    assert response.status_code == 302
    assert Run.objects.get(name="mine").config["model_path"] == alices_checkpoint.path


def test_the_form_suggests_alice_her_checkpoints_and_charlie_nothing_of_hers(client, alice, charlie, alices_checkpoint):
    client.force_login(alice)
    assert f'<option value="{alices_checkpoint.path}">' in client.get(reverse("run-new")).content.decode()
    client.force_login(charlie)
    assert alices_checkpoint.path not in client.get(reverse("run-new")).content.decode()


def test_bob_as_alices_editor_trains_from_her_checkpoint_but_not_as_a_viewer(
    client, alice, bob, alices_run, alices_checkpoint, queued
):
    team = team_of(alice, (bob, "viewer"))
    Run.objects.filter(pk=alices_run.pk).update(team=team)
    client.force_login(bob)
    assert MODEL_REFUSED in refusal(client, "form", bob, "model_path", model_path=alices_checkpoint.path)
    team.memberships.filter(user=bob).update(role="editor")
    response = client.post(reverse("run-new"), form_data(tiny_config(model_path=alices_checkpoint.path), name="b"))
    assert response.status_code == 302 and Run.objects.filter(owner=bob, name="b").exists()


def test_sam_registers_a_model_for_alices_team_and_only_its_members_may_use_it(
    client, settings, tmp_path, alice, bob, charlie, sam, queued
):
    settings.REGISTRY_ROOTS = [tmp_path / "models"]
    folder = model_folder(tmp_path / "models" / "qwen-1.5b")
    team = team_of(alice, (bob, "viewer"), name="lab")
    client.force_login(sam)
    refused = client.post(reverse("registry-register"), {"kind": "model", "name": "etc", "path": "/etc"})
    assert refused.status_code == 400 and "registry roots" in refused.content.decode()
    response = client.post(
        reverse("registry-register"), {"kind": "model", "name": "qwen", "path": str(folder), "team": team.pk}
    )
    assert response.status_code == 302
    assert RegisteredModel.objects.get(name="qwen").path == str(folder)

    config = tiny_config(model_path=str(folder)).to_dict()
    for user, status in ((alice, 201), (bob, 201), (charlie, 400)):
        created = client.post(
            reverse("api-runs"),
            {"name": f"{user.username} on qwen", "config": config},
            content_type="application/json",
            **bearer(api_token(user)),
        )
        assert created.status_code == status, (user, created.json())
    client.force_login(charlie)
    assert str(folder) not in client.get(reverse("registry-list")).content.decode()
    assert sorted(run.owner.username for run in Run.objects.all()) == ["alice", "bob"]


def test_alice_uploads_a_data_set_trains_on_it_and_bob_may_not(client, alice, bob, uploads, queued):
    client.force_login(alice)
    upload = jsonl(Path(str(uploads) + "-src") / "sums.jsonl")
    with open(upload, "rb") as handle:
        response = client.post(reverse("registry-upload"), {"name": "sums", "domain": "math", "file": handle})
    assert response.status_code == 302
    entry = RegisteredDataset.objects.get(name="sums")
    assert entry.uploaded and Path(entry.path).is_relative_to(uploads) and Path(entry.path).read_text().count("\n") == 2
    assert entry.path in client.get(reverse("registry-list")).content.decode()

    response = client.post(reverse("run-new"), form_data(tiny_config(data=file_mix(entry.path)), name="on sums"))
    assert response.status_code == 302 and Run.objects.get(name="on sums").config["data"][0]["path"] == entry.path
    client.force_login(bob)
    assert DATA_REFUSED in refusal(client, "form", bob, "data", data=file_mix(entry.path))


def test_an_upload_too_big_or_with_a_bad_record_is_refused_and_not_kept(client, alice, settings, uploads, tmp_path):
    client.force_login(alice)
    settings.UPLOAD_MAX_BYTES = 10
    big = jsonl(tmp_path / "big.jsonl")
    with open(big, "rb") as handle:
        response = client.post(reverse("registry-upload"), {"name": "big", "domain": "math", "file": handle})
    assert response.status_code == 400 and "at most 0 MB" in response.content.decode()
    settings.UPLOAD_MAX_BYTES = 2**20
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"prompt": "no answer here"}) + "\n")
    with open(bad, "rb") as handle:
        response = client.post(reverse("registry-upload"), {"name": "bad", "domain": "math", "file": handle})
    assert response.status_code == 400
    assert "bad.jsonl, line 1: field &#x27;answer&#x27; is missing" in response.content.decode()
    assert str(uploads) not in response.content.decode()
    binary = tmp_path / "binary.jsonl"
    binary.write_bytes(b"\xff\xfe\x00junk\n")
    with open(binary, "rb") as handle:
        response = client.post(reverse("registry-upload"), {"name": "binary", "domain": "math", "file": handle})
    assert response.status_code == 400 and "binary.jsonl, line 1: not UTF-8 text" in response.content.decode()
    assert not RegisteredDataset.objects.exists() and not any(p.is_file() for p in uploads.rglob("*"))


def test_bob_cannot_register_what_he_may_not_use(client, bob, alices_checkpoint, server_file):
    client.force_login(bob)
    for kind, path, message in (
        ("model", alices_checkpoint.path, MODEL_REFUSED),
        ("data", str(server_file), DATA_REFUSED.removeprefix("path: ")),
    ):
        response = client.post(
            reverse("registry-register"), {"kind": kind, "name": "x", "path": path, "domain": "math"}
        )
        missing = client.post(
            reverse("registry-register"), {"kind": kind, "name": "x", "path": "/no/such", "domain": "math"}
        )
        assert response.status_code == missing.status_code == 400
        assert (
            response.context["register_form"].errors["path"]
            == missing.context["register_form"].errors["path"]
            == [message]
        )
    assert not RegisteredModel.objects.exists() and not RegisteredDataset.objects.exists()


def test_launching_a_run_rechecks_the_owners_rules_whatever_validated_it(bob, alices_checkpoint, queued):
    config = tiny_config(model_path=alices_checkpoint.path)  # validated without any rules
    with pytest.raises(ConfigError) as refused:
        launch_run(bob, "side door", config)
    assert refused.value.errors == [("model_path", MODEL_REFUSED)]
    assert Run.objects.count() == 1 and not queued


def test_the_demo_run_still_launches_and_trains_from_the_committed_model(
    django_user_model, queued, django_capture_on_commit_callbacks
):
    demo = django_user_model.objects.create_user("demo")
    with django_capture_on_commit_callbacks(execute=True):
        run = launch_run(demo, "demo", RunConfig.load(REPO / "prorl_engine" / "configs" / "demo.yaml"))
    policy = run_path_policy(run)
    resolved = policy.resolve(RunConfig.from_dict(run.config, path_policy=policy), MODEL_BUILDERS)
    assert resolved.model_path == str(REPO / "prorl_engine" / "configs" / "demo-base")  # read as it is: no rebuild
    assert queued == [run.pk]


def test_bob_cannot_evaluate_alices_checkpoint_as_a_base_model_in_a_comparison(
    client, bob, alices_checkpoint, enqueued
):
    from studio.models import Comparison

    config = tiny_config()
    bobs_run = Run.objects.create(owner=bob, name="bob's", config=config.to_dict(), total_steps=config.steps)
    client.force_login(bob)

    def told(model_path: str) -> list[str]:
        response = client.post(
            reverse("compare-new"),
            {
                "base_models": [config.model_path],
                "model_path": model_path,
                "prompts_from": bobs_run.pk,
                "n": "2",
                "ks": "1",
                "prompts": "2",
            },
        )
        assert response.status_code == 400
        return response.context["form"].errors["model_path"]

    assert told(alices_checkpoint.path) == told("/no/such/model") == [MODEL_REFUSED]
    assert not Comparison.objects.exists()


def test_with_models_only_on_the_workers_the_web_host_trusts_registered_paths_it_cannot_see(
    client, settings, tmp_path, alice, bob, sam, queued
):
    settings.CHECK_PATHS_ON_WEB = False
    settings.REGISTRY_ROOTS = [tmp_path / "gpu-box"]
    on_the_workers = str(tmp_path / "gpu-box" / "llama")  # no such folder on this machine
    team = team_of(alice, name="alice's lab")
    client.force_login(sam)
    client.post(
        reverse("registry-register"), {"kind": "model", "name": "llama", "path": on_the_workers, "team": team.pk}
    )
    assert RegisteredModel.objects.get(name="llama").path == on_the_workers
    client.force_login(alice)
    response = client.post(reverse("run-new"), form_data(tiny_config(model_path=on_the_workers), name="llama run"))
    assert response.status_code == 302 and Run.objects.filter(name="llama run").exists()
    client.force_login(bob)
    assert refusal(client, "form", bob, "model_path", model_path=on_the_workers) == MODEL_REFUSED


@pytest.mark.parametrize("variable", ["PRORL_MODEL_ROOTS", "PRORL_DATA_ROOTS"])
def test_the_studio_refuses_to_start_with_a_root_that_opens_every_runs_files(variable):
    import os
    import subprocess
    import sys

    env = {**os.environ, variable: "/"}
    started = subprocess.run(
        [sys.executable, "-c", "import studio.settings"], cwd=REPO, env=env, capture_output=True, text=True
    )
    assert started.returncode != 0 and f"{variable}: / holds" in started.stderr


def test_the_admin_registers_paths_only_under_the_registry_roots(settings, tmp_path, sam):
    from studio.admin import RegisteredModelAdminForm

    settings.REGISTRY_ROOTS = [tmp_path / "models"]
    folder = model_folder(tmp_path / "models" / "qwen")
    form = type("SamsForm", (RegisteredModelAdminForm,), {"current_user": sam})
    values = {"name": "qwen", "owner": sam.pk, "created_at": "2025-01-01 00:00"}
    inside = form({**values, "path": f"{folder}/"})
    assert inside.is_valid() and inside.cleaned_data["path"] == str(folder)  # stored normalised
    outside = form({**values, "path": "/etc"})
    assert not outside.is_valid() and "registry roots" in outside.errors["path"][0]


def test_bob_forks_alices_run_on_her_private_model_but_cannot_start_his_own_run_on_it(
    client, alice, bob, alices_run, alices_checkpoint, tmp_path, queued
):
    private = model_folder(tmp_path / "registry" / "alices-model")
    RegisteredModel.objects.create(name="mine", owner=alice, path=str(private))
    Run.objects.filter(pk=alices_run.pk).update(
        config={**alices_run.config, "model_path": str(private)}, team=team_of(alice, (bob, "editor"))
    )
    client.force_login(bob)
    fork = client.post(
        reverse("run-fork", args=[alices_run.pk]),
        form_data(tiny_config(model_path=str(private)), name="bob's fork", steps=20, checkpoint=alices_checkpoint.pk),
    )
    assert fork.status_code == 302 and Run.objects.get(name="bob's fork").config["model_path"] == str(private)
    assert refusal(client, "form", bob, "model_path", model_path=str(private)) == MODEL_REFUSED
