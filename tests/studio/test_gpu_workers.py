"""Runs that ask for several GPUs, end to end: a worker declares the GPUs it owns, a run is routed
to a queue only a worker that can hold it consumes, and that worker trains it as torchrun ranks.

Here the "GPUs" are simulated (PRORL_WORKER_GPUS=2 on a CPU machine): the ranks train on the CPU with
gloo, through the same code a GPU worker runs.
"""

import pytest
from studio_testing import Browserless, form_data

from studio.models import Event, MetricPoint, Run, RunStatus
from studio.queue import training_queue, training_queues
from studio.workers import queue_info

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]


def test_runs_are_routed_by_the_gpus_they_ask_for():
    assert [training_queue(n) for n in (1, 2, 4)] == ["gpu", "gpu-2", "gpu-4"]
    assert training_queues(3) == ["gpu", "gpu-2", "gpu-3"]  # a 3-GPU worker also takes smaller runs


def test_a_two_gpu_worker_trains_a_two_gpu_run_and_a_four_gpu_run_waits_with_the_reason(live_studio, alice, wait_for):
    live_studio.start_worker("two-gpus", queues=",".join(training_queues(2)), env={"PRORL_WORKER_GPUS": "2"})
    browser = Browserless(live_studio.url)
    browser.log_in("alice", "alice-password")
    for name, gpus in (("on-two", 2), ("on-four", 4)):
        status, url, _ = browser.post("/runs/new/", form_data(name=name, gpus=gpus, steps=3, eval_every=0))
        assert status == 200, url
    two, four = Run.objects.get(name="on-two"), Run.objects.get(name="on-four")

    def finished():
        run = Run.objects.get(pk=two.pk)
        assert run.status != RunStatus.FAILED, (run.error, live_studio.logs())
        return run.status == RunStatus.FINISHED

    wait_for(finished, 600, "the 2-GPU run to finish", live_studio.logs)
    points = list(MetricPoint.objects.filter(run=two).order_by("step"))
    assert [p.step for p in points] == [1, 2, 3]
    assert all("reward/mean" in p.values and "timing/rollout_spread_s" in p.values for p in points)  # 2 ranks
    run_dir = live_studio.folder / "runs" / str(two.pk)  # the live studio's runs folder
    assert (run_dir / "checkpoints" / "step-000003" / "sharded" / ".metadata").is_file()  # DCP, by both ranks
    running = Event.objects.filter(run=two, kind="status", data__status="running").first()
    assert running.data["ranks"] == 2 and running.data["devices"] == ["cpu", "cpu"]
    status, page = browser.get(f"/runs/{two.pk}/")
    spread = points[-1].values["timing/rollout_spread_s"]
    assert status == 200 and '<span id="rank-count">2</span> ranks on <span id="rank-devices">cpu, cpu</span>' in page
    assert f'<span id="rank-spread">{spread:.2f} s</span>' in page

    waiting = Run.objects.get(pk=four.pk)
    assert waiting.status == RunStatus.QUEUED and waiting.worker == ""
    reason = queue_info(waiting, alice)["reason"]
    assert "no live worker holds 4 GPUs (queue gpu-4)" in reason and "PRORL_WORKER_GPUS=4" in reason


def test_a_run_on_two_machines_is_hosted_by_one_worker_and_joined_by_another(live_studio, alice, wait_for):
    """Two workers of one GPU each stand for two machines: the run (1 GPU x 2 nodes) trains as 2 ranks."""
    one_gpu = {"PRORL_WORKER_GPUS": "1", "PRORL_WORKER_ADDRESS": "127.0.0.1"}
    for name in ("machine-a", "machine-b"):
        live_studio.start_worker(name, queues="gpu", env=one_gpu)
    browser = Browserless(live_studio.url)
    browser.log_in("alice", "alice-password")
    status, url, _ = browser.post("/runs/new/", form_data(name="two-nodes", gpus=1, nodes=2, steps=3, eval_every=0))
    assert status == 200, url
    run = Run.objects.get(name="two-nodes")

    def finished():
        current = Run.objects.get(pk=run.pk)
        assert current.status != RunStatus.FAILED, (current.error, live_studio.logs())
        return current.status == RunStatus.FINISHED

    wait_for(finished, 600, "the run on two machines to finish", live_studio.logs)
    assert [p.step for p in MetricPoint.objects.filter(run=run).order_by("step")] == [1, 2, 3]
    running = Event.objects.filter(run=run, kind="status", data__status="running").first()
    assert running.data["ranks"] == 2 and running.data["devices"] == ["cpu", "cpu"]
    run_dir = live_studio.folder / "runs" / str(run.pk)
    assert len(list(run_dir.glob("ranks-127.0.0.1-*.log"))) == 1  # the joining worker's ranks


def test_a_run_whose_second_machine_never_comes_fails_with_the_reason(live_studio, alice, wait_for):
    live_studio.start_worker("alone", queues="gpu", env={"PRORL_WORKER_GPUS": "1", "PRORL_WORKER_ADDRESS": "127.0.0.1"})
    browser = Browserless(live_studio.url)
    browser.log_in("alice", "alice-password")
    fields = form_data(name="missing-node", gpus=1, nodes=2, steps=3, eval_every=0, collective_timeout_s=10)
    status, url, _ = browser.post("/runs/new/", fields)
    assert status == 200, url
    run = Run.objects.get(name="missing-node")
    wait_for(lambda: Run.objects.get(pk=run.pk).status == RunStatus.FAILED, 300, "the run to fail", live_studio.logs)
    error = Run.objects.get(pk=run.pk).error
    assert "the run needs 2 machines with 1 GPUs each, and fewer joined its rendezvous at 127.0.0.1:" in error
    assert "within 10 s (collective_timeout_s): start more workers on queue gpu" in error
