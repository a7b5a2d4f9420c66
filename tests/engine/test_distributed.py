"""One run across ranks: torchrun + FSDP2 on the CPU (gloo), against the same run on one rank.

Each test launches real torchrun processes (`prorl_engine.launch`). The ranks score with a test
verifier (share of vowels, so every group has reward spread) installed by a `sitecustomize` module
on their PYTHONPATH; the same hook scripts a command or a crash where a test needs one.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from test_trainer import TIMING_KEYS, read_jsonl, tiny_config

from prorl_engine import checkpoint as ckpt
from prorl_engine.events import JsonlSink
from prorl_engine.launch import torchrun_command
from prorl_engine.trainer import Trainer

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]
HOOK = """
import os
import prorl_engine.rewards as rewards
from prorl_engine.verifiers.base import Verdict


class VowelShare:
    domain = "logic"

    def verify(self, response, example):
        return Verdict(reward=sum(ch in "aeiou" for ch in response) / max(1, len(response)), format_ok=True)


rewards.verifier_for = lambda domain: VowelShare()

if os.environ.get("TEST_RESET_BEFORE_STEP") and os.environ.get("RANK") == "0":
    from prorl_engine import events

    calls = []

    def poll(self):
        calls.append(1)
        if len(calls) == int(os.environ["TEST_RESET_BEFORE_STEP"]):
            return [events.Command(events.CommandKind.RESET_REFERENCE, "alice", "c1")]
        return []

    events.NoControl.poll = poll

if os.environ.get("TEST_KILL_RANK_AT_STEP"):
    import signal
    from prorl_engine import trainer

    step_body = trainer.Trainer._train_step

    def dying_step(self):
        if self.step == int(os.environ["TEST_KILL_RANK_AT_STEP"]) and os.environ.get("RANK") == "1":
            os.kill(os.getpid(), signal.SIGKILL)
        step_body(self)

    trainer.Trainer._train_step = dying_step

if os.environ.get("TEST_HANG_RANK_AT_STEP"):
    import time
    from prorl_engine import trainer

    step_body = trainer.Trainer._train_step

    def stuck_step(self):
        if self.step == int(os.environ["TEST_HANG_RANK_AT_STEP"]) and os.environ.get("RANK") == "1":
            time.sleep(3600)
        step_body(self)

    trainer.Trainer._train_step = stuck_step
"""


@pytest.fixture
def hook(tmp_path) -> Path:
    folder = tmp_path / "hook"
    folder.mkdir()
    (folder / "sitecustomize.py").write_text(HOOK)
    return folder


def launch(config, run_dir: Path, nproc: int, hook: Path, timeout: float = 600, **env) -> subprocess.CompletedProcess:
    """Train `config` in `run_dir` as `nproc` ranks (writing its config.yaml first, unless resuming)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.yaml").write_text(config.to_yaml())
    environment = {**os.environ, "PYTHONPATH": f"{hook}{os.pathsep}{ROOT}", **env}
    return subprocess.run(
        torchrun_command(run_dir, nproc), env=environment, capture_output=True, text=True, timeout=timeout
    )


def assert_same_metrics(a: list[dict], b: list[dict]) -> None:
    assert [row["step"] for row in a] == [row["step"] for row in b]
    for row_a, row_b in zip(a, b):
        for key in row_a.keys() - TIMING_KEYS - {"timing/rollout_spread_s"}:
            assert row_b[key] == pytest.approx(row_a[key], rel=1e-5, abs=1e-6), (row_a["step"], key)


def weights(checkpoint: Path) -> dict[str, torch.Tensor]:
    return load_file(checkpoint / "model.safetensors")


def test_two_ranks_train_as_one_rank_on_the_same_global_batch(tiny_model, tmp_path, hook):
    config = tiny_config(tiny_model, steps=3, checkpoint_every=2)
    for nproc in (1, 2):
        done = launch(config, tmp_path / f"ranks{nproc}", nproc, hook)
        assert done.returncode == 0, done.stderr[-3000:]
    one, two = (read_jsonl(tmp_path / f"ranks{n}" / "metrics.jsonl") for n in (1, 2))
    assert_same_metrics(one, two)
    assert all(row["sampling/kept_groups"] == 2 and row["policy/grad_norm"] > 0 for row in two)
    assert all("timing/rollout_spread_s" in row for row in two)

    final = [ckpt.latest(tmp_path / f"ranks{n}") for n in (1, 2)]
    a, b = weights(final[0]), weights(final[1])
    base = load_file(tiny_model / "model.safetensors")
    for name, tensor in base.items():
        torch.testing.assert_close(b[name], a[name], rtol=1e-5, atol=1e-5)
        assert not torch.equal(a[name], tensor), f"{name} never moved"

    # the consolidated checkpoint is an ordinary save_pretrained folder
    from transformers import AutoModelForCausalLM

    loaded, info = AutoModelForCausalLM.from_pretrained(str(final[1]), output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"]
    for name, tensor in loaded.state_dict().items():
        torch.testing.assert_close(tensor, b.get(name, b["model.embed_tokens.weight"]))


def test_a_two_rank_run_resumes_on_two_ranks_and_on_one(tiny_model, tmp_path, hook, monkeypatch):
    config = tiny_config(tiny_model, steps=4, checkpoint_every=2)
    straight = launch(config, tmp_path / "straight", 2, hook)
    assert straight.returncode == 0, straight.stderr[-3000:]
    first = launch(config.replace(steps=2), tmp_path / "resumed", 2, hook)
    assert first.returncode == 0, first.stderr[-3000:]
    shutil.copytree(tmp_path / "resumed", tmp_path / "on-one")

    second = launch(config, tmp_path / "resumed", 2, hook)  # the same folder, now asking for 4 steps
    assert second.returncode == 0, second.stderr[-3000:]
    assert_same_metrics(
        read_jsonl(tmp_path / "straight" / "metrics.jsonl"), read_jsonl(tmp_path / "resumed" / "metrics.jsonl")
    )

    # the 2-rank checkpoint on 1 rank under torchrun: the shards are re-split, the run goes on unchanged
    on_one = launch(config, tmp_path / "on-one", 1, hook)
    assert on_one.returncode == 0, on_one.stderr[-3000:]
    assert_same_metrics(
        read_jsonl(tmp_path / "straight" / "metrics.jsonl"), read_jsonl(tmp_path / "on-one" / "metrics.jsonl")
    )

    # and in a plain single process: consolidated weights, the optimizer read back from the shards
    checkpoint = ckpt.latest(tmp_path / "straight")
    solo = Trainer(config, tmp_path / "solo", JsonlSink(tmp_path / "solo"))
    solo._restore(checkpoint)
    assert solo.step == 4
    for name, tensor in weights(checkpoint).items():
        if name in dict(solo.policy.named_parameters()):
            torch.testing.assert_close(solo.policy.state_dict()[name], tensor)
    moments = [state["exp_avg"] for state in solo.optimizer.state.values()]
    assert len(moments) == len(list(solo.policy.parameters())) and all(m.abs().sum() > 0 for m in moments)


def test_a_reset_asked_of_rank_0_acts_on_every_rank_at_the_same_step(tiny_model, tmp_path, hook):
    config = tiny_config(tiny_model, steps=3, beta=0.01)
    done = launch(config, tmp_path / "run", 2, hook, TEST_RESET_BEFORE_STEP="2")
    assert done.returncode == 0, done.stderr[-3000:]
    rows = read_jsonl(tmp_path / "run" / "metrics.jsonl")
    events = read_jsonl(tmp_path / "run" / "events.jsonl")
    resets = [e for e in events if e["kind"] == "reset"]
    assert [(e["step"], e["data"]["reason"], e["data"]["requested_by"]) for e in resets] == [(1, "manual", "alice")]
    # k2 is >= 0 on every token and summed over both ranks: 0 (but for the float32 sampler's ~1e-6
    # rounding of pi_old, squared) means each rank's reference is its policy
    assert rows[0]["kl/ref"] < 1e-10 and rows[1]["kl/ref"] < 1e-10 and rows[2]["kl/ref"] > 1e-6


def test_a_killed_rank_fails_the_run_in_bounded_time_and_it_resumes(tiny_model, tmp_path, hook):
    config = tiny_config(tiny_model, steps=3, checkpoint_every=1)
    start = time.monotonic()
    crashed = launch(config, tmp_path / "run", 2, hook, TEST_KILL_RANK_AT_STEP="2")
    assert crashed.returncode != 0
    assert time.monotonic() - start < 300
    assert "exitcode" in crashed.stderr or "Signal 9" in crashed.stderr or "SIGKILL" in crashed.stderr
    assert ckpt.latest_step(tmp_path / "run") == 1

    resumed = launch(config, tmp_path / "run", 2, hook)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert [row["step"] for row in read_jsonl(tmp_path / "run" / "metrics.jsonl")] == [1, 2, 3]


def test_a_stuck_rank_fails_the_run_after_the_collective_timeout(tiny_model, tmp_path, hook):
    config = tiny_config(tiny_model, steps=3, checkpoint_every=1, collective_timeout_s=15)
    start = time.monotonic()
    stuck = launch(config, tmp_path / "run", 2, hook, timeout=300, TEST_HANG_RANK_AT_STEP="2")
    elapsed = time.monotonic() - start
    assert stuck.returncode != 0
    # rank 0 waits 15 s in its first collective of step 2, raises, and torchrun stops the sleeping rank 1
    assert elapsed < 15 + 120, elapsed
    assert "timed out" in stuck.stderr.lower() or "timeout" in stuck.stderr.lower(), stuck.stderr[-3000:]
    assert ckpt.latest_step(tmp_path / "run") == 1


def test_the_torchrun_command_line(tmp_path):
    single = torchrun_command(tmp_path, 2)
    assert single[:3] == [sys.executable, "-m", "torch.distributed.run"]
    assert "--standalone" in single and "--nproc-per-node=2" in single and single[-1] == str(tmp_path)
    multi = torchrun_command(tmp_path, 8, nnodes=2, node_rank=1, rdzv_endpoint="host0:29400", fork_from="/c/step-1")
    assert {"--nnodes=2", "--node-rank=1", "--rdzv-backend=c10d", "--rdzv-endpoint=host0:29400"} <= set(multi)
    assert "--standalone" not in multi and multi[-2:] == ["--from", "/c/step-1"]
    with pytest.raises(ValueError, match="rdzv-endpoint"):
        torchrun_command(tmp_path, 8, nnodes=2)


def test_prorl_train_with_nproc_trains_the_run_across_ranks(tiny_model, tmp_path, hook):
    config_file = tmp_path / "config.yaml"
    config_file.write_text(tiny_config(tiny_model, steps=2, checkpoint_every=1).to_yaml())
    environment = {**os.environ, "PYTHONPATH": f"{hook}{os.pathsep}{ROOT}"}
    prorl = [sys.executable, "-c", "import sys; from prorl_engine.cli import main; sys.exit(main(sys.argv[1:]))"]
    run_dir = tmp_path / "run"
    trained = subprocess.run(
        [*prorl, "train", str(config_file), "--out", str(run_dir), "--nproc", "2"],
        env=environment,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert trained.returncode == 0, trained.stderr[-3000:]
    assert f"finished: {run_dir}" in trained.stdout
    assert (ckpt.latest(run_dir) / "sharded" / ".metadata").is_file()  # written by both ranks through DCP
    assert [row["step"] for row in read_jsonl(run_dir / "metrics.jsonl")] == [1, 2]


def test_a_single_process_checkpoint_goes_on_across_two_ranks_and_back(tiny_model, tmp_path, hook, monkeypatch):
    """One process trains 2 steps; 2 ranks take its checkpoint (whole files, each rank keeping its
    shards) and write it back as a distributed one; one process reads that: the same weights, the
    same AdamW moments, the same step and data position."""
    from test_trainer import DigitShare, train

    monkeypatch.setattr("prorl_engine.rewards.verifier_for", lambda domain: DigitShare())
    config = tiny_config(tiny_model, steps=2, checkpoint_every=2)
    solo = train(config, tmp_path / "run")
    before = ckpt.latest(tmp_path / "run")
    saved = torch.load(before / "trainer_state.pt", weights_only=False)
    original_weights = weights(before)

    across = launch(config, tmp_path / "run", 2, hook)  # nothing left to train: it re-saves step 2 from its shards
    assert across.returncode == 0, across.stderr[-3000:]
    after = ckpt.latest(tmp_path / "run")
    assert (after / "sharded" / ".metadata").is_file()

    back = Trainer(config, tmp_path / "back", JsonlSink(tmp_path / "back"))
    back._restore(after)
    assert back.step == 2 and back.mix.state_dict() == saved["data"]
    for name, tensor in back.policy.state_dict().items():
        torch.testing.assert_close(tensor, original_weights.get(name, original_weights["model.embed_tokens.weight"]))
    moments = [solo.optimizer.state[p]["exp_avg"] for p in solo.policy.parameters()]
    restored = [back.optimizer.state[p]["exp_avg"] for p in back.policy.parameters()]
    for theirs, ours in zip(moments, restored, strict=True):
        torch.testing.assert_close(ours, theirs)
