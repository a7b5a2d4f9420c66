"""One trainer per run folder: a second one, in another process or this one, is refused naming the
folder and the PID that holds it; the lock ends with `train()` and with its process, however it dies."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from prorl_engine.config import RunConfig
from prorl_engine.events import MemorySink
from prorl_engine.runlock import LOCK_NAME, RunLocked, holder, run_lock
from prorl_engine.trainer import Trainer

HOLD = """
import sys, time
from prorl_engine.runlock import run_lock
with run_lock(sys.argv[1]):
    print("held", flush=True)
    time.sleep(120)
"""


@contextmanager
def held_by_another_process(run_dir: Path) -> Iterator[subprocess.Popen]:
    """A second Python process holding `run_dir`'s lock until the block ends (it is then killed)."""
    child = subprocess.Popen([sys.executable, "-c", HOLD, str(run_dir)], stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline() == "held\n"
        yield child
    finally:
        if child.poll() is None:
            child.kill()
        child.wait()


def tiny_run_config(model: Path) -> RunConfig:
    return RunConfig.from_dict(
        {
            "model_path": str(model),
            "steps": 2,
            "data": [{"task": "chain_sum", "size": 32, "eval_size": 2, "instruction": ""}],
            "max_prompt_tokens": 64,
            "prompts_per_step": 2,
            "samples_per_prompt": 2,
            "max_response_tokens": 4,
            "rollout_batch_size": 4,
            "updates_per_step": 2,
            "micro_batch_size": 4,
            "checkpoint_every": 2,
            "eval_every": 0,
        }
    )


def test_a_lock_held_by_another_process_is_refused_naming_the_folder_and_its_pid(tmp_path):
    with held_by_another_process(tmp_path) as child:
        assert holder(tmp_path) == child.pid
        with pytest.raises(RunLocked) as refused:
            with run_lock(tmp_path):
                pytest.fail("a second holder got the lock")
        assert refused.value.pid == child.pid
        assert str(refused.value) == (
            f"run folder {tmp_path} is being trained by process {child.pid} (lock {tmp_path / LOCK_NAME})"
        )
        os.kill(child.pid, signal.SIGKILL)  # it dies without releasing anything itself
        child.wait()

    assert holder(tmp_path) is None  # the kernel released it: no stale lock to clear by hand
    with run_lock(tmp_path):
        assert holder(tmp_path) == os.getpid()
    assert holder(tmp_path) is None and (tmp_path / LOCK_NAME).read_text() == ""


def test_a_second_lock_in_the_same_process_is_refused_too(tmp_path):
    with run_lock(tmp_path):
        with pytest.raises(RunLocked, match=f"is being trained by process {os.getpid()} "):
            with run_lock(tmp_path):
                pytest.fail("a second holder got the lock")
    with run_lock(tmp_path):  # released by the first block's end
        pass


class LockWatchingSink(MemorySink):
    """Records who holds the run folder's lock each time a step is logged."""

    def __init__(self, run_dir: Path):
        super().__init__()
        self.run_dir, self.holders = run_dir, []

    def metrics(self, step, values):
        super().metrics(step, values)
        self.holders.append(holder(self.run_dir))


def test_a_trainer_is_refused_while_another_process_trains_its_folder_and_holds_the_lock_while_it_trains(
    tiny_model, tmp_path
):
    run = tmp_path / "run"
    sink = LockWatchingSink(run)
    trainer = Trainer(tiny_run_config(tiny_model), run, sink)
    with held_by_another_process(run) as child:
        with pytest.raises(RunLocked, match=f"run folder {run} is being trained by process {child.pid} "):
            trainer.train()
    assert sink.events == [] and sink.metrics_rows == []  # refused before it said "running" or touched the folder
    assert not (run / "checkpoints").exists()

    assert trainer.train() == "finished"  # the other process is gone: the same trainer now trains
    assert sink.holders == [os.getpid(), os.getpid()]  # held during every step
    assert holder(run) is None  # and released when train() returned
