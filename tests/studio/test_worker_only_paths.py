"""A data file that exists only on the GPU workers (PRORL_CHECK_PATHS_ON_WEB=false): the web host
takes Alice's run without looking at its own disk, every page of the run answers, and the worker,
which does look, fails the run with the reason on its page."""

from __future__ import annotations

import pytest
from access_testing import api_token, bearer
from django.urls import reverse
from studio_testing import form_data, tiny_config

from prorl_engine.paths import DATA_REFUSED
from studio.models import Checkpoint, Run, RunStatus

pytestmark = pytest.mark.django_db
ON_THE_WORKERS = "on-the-workers.jsonl"


@pytest.fixture
def worker_only_data(settings, tmp_path) -> list[dict]:
    """A data mix naming a file under the data roots that this machine does not have."""
    settings.CHECK_PATHS_ON_WEB = False
    settings.DATA_ROOTS = [tmp_path / "gpu-data"]
    return [
        {"task": "worker_file", "source": "file", "path": str(tmp_path / "gpu-data" / ON_THE_WORKERS), "domain": "math"}
    ]


@pytest.fixture
def alices_worker_run(alice, worker_only_data, client, queued) -> Run:
    """Launched through the form: the web host did not look for the file."""
    client.force_login(alice)
    response = client.post(reverse("run-new"), form_data(tiny_config(data=worker_only_data), name="gpu data"))
    assert response.status_code == 302, response.content.decode()[:2000]
    run = Run.objects.get(name="gpu data")
    Checkpoint.objects.create(run=run, step=2, path=str(run.run_dir / "checkpoints" / "step-000002"))
    return run


def test_every_page_of_a_run_whose_data_is_only_on_the_workers_answers(client, alice, alices_worker_run, alices_run):
    run = alices_worker_run
    assert run.run_config is not None and run.run_config.data[0].path.endswith(ON_THE_WORKERS)
    checkpoint = run.checkpoints.get()
    pages = [
        reverse(name, args=[run.pk])
        for name in ("run-detail", "run-metrics", "run-config-yaml", "run-clone", "run-sharing")
    ]
    pages += [
        f"{reverse('run-fork', args=[run.pk])}?checkpoint={checkpoint.pk}",
        f"{reverse('overlay')}?run={run.pk}&run={alices_run.pk}",
        f"{reverse('overlay-data')}?run={run.pk}&run={alices_run.pk}",
        f"{reverse('compare-new')}?run={run.pk}",
        reverse("run-list"),
    ]
    answers = {page: client.get(page).status_code for page in pages}
    assert answers == {page: 200 for page in pages}
    assert ON_THE_WORKERS in client.get(reverse("run-config-yaml", args=[run.pk])).content.decode()
    token = api_token(alice)
    assert client.get(reverse("api-run", args=[run.pk]), **bearer(token)).status_code == 200


def test_a_comparison_may_take_its_prompts_from_that_run(
    client, alices_worker_run, enqueued, django_capture_on_commit_callbacks
):
    checkpoint = alices_worker_run.checkpoints.get()
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(
            reverse("compare-new"),
            {
                "checkpoints": [checkpoint.pk],
                "model_path": "tiny:var/models/compare-base",
                "n": "2",
                "ks": "1",
                "prompts": "2",
                "prompts_from": alices_worker_run.pk,
            },
        )
    assert response.status_code == 302, response.content.decode()[:2000]
    comparison = alices_worker_run.comparisons.get()
    assert enqueued == [comparison.pk] and comparison.settings["config"]["data"][0]["path"].endswith(ON_THE_WORKERS)


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("channel_layer_settings")
def test_the_worker_looks_on_its_disk_and_puts_the_missing_file_on_the_run_page(client, alices_worker_run):
    from worker.tasks import train_run

    assert train_run.apply(args=[alices_worker_run.pk]).get() == "failed"
    run = Run.objects.get(pk=alices_worker_run.pk)
    assert run.status == RunStatus.FAILED and run.error == f"invalid config: data[0]: {DATA_REFUSED}"
    page = client.get(reverse("run-detail", args=[run.pk])).content.decode()
    assert "invalid config: data[0]: path: no data file you may use is at this path" in page
