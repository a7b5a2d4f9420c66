"""A run's data mix is typed (`list[DataSource]`) and stores exactly as it was written."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from prorl_engine.config import ConfigError, DataSource, RunConfig
from prorl_engine.data import spec
from prorl_engine.paths import PathPolicy

ALICES_MIX = """\
data:
- task: chain_sum
  size: 20
  eval_size: 4
- size: 30
  source: file
  task: sums
  path: data/sums.jsonl
  domain: math
  params: {}
"""


def alices_config(tmp_path: Path, mix: str = ALICES_MIX) -> RunConfig:
    """Alice's run on the tiny model with her two sources, validated without looking at the disk."""
    return RunConfig.from_yaml(f"model_path: tiny:{tmp_path / 'tiny'}\n{mix}", check_paths=False)


def test_the_mix_is_a_list_of_data_sources_with_the_defaults_filled_in(tmp_path):
    config = alices_config(tmp_path)
    assert config.data == [
        DataSource(task="chain_sum", size=20, eval_size=4),
        DataSource(task="sums", source="file", size=30, path="data/sums.jsonl", domain="math"),
    ]
    assert config.data[0].weight == 1.0 and config.data[1].instruction == DataSource(task="x").instruction


def test_each_source_stores_the_keys_it_was_written_with_in_their_order(tmp_path):
    config = alices_config(tmp_path)
    assert yaml.safe_dump({"data": config.to_dict()["data"]}, sort_keys=False) == ALICES_MIX
    again = RunConfig.from_yaml(config.to_yaml(), check_paths=False)
    assert again.to_dict() == config.to_dict() and again == config


def test_the_default_mix_stores_as_it_always_has():
    assert RunConfig().to_dict()["data"] == [
        {"task": "chain_sum", "source": "reasoning_gym", "weight": 1.0, "size": 1000}
    ]


def test_a_field_changed_after_reading_is_stored_too(tmp_path):
    config = alices_config(tmp_path)
    config.data[0].weight = 3.0
    assert config.to_dict()["data"][0] == {"task": "chain_sum", "size": 20, "eval_size": 4, "weight": 3.0}


def test_a_source_built_in_code_stores_every_field():
    assert DataSource(task="chain_sum", size=5).to_dict() == {
        "task": "chain_sum",
        "source": "reasoning_gym",
        "weight": 1.0,
        "size": 5,
        "path": None,
        "domain": "logic",
        "params": {},
        "instruction": "\nPut your final answer inside <answer></answer> tags.",
        "eval_size": 32,
    }


def test_a_config_may_be_built_from_data_sources(tmp_path):
    sources = [DataSource(task="chain_sum", size=5, eval_size=1)]
    config = RunConfig.from_dict({"model_path": f"tiny:{tmp_path}/tiny", "data": sources}, check_paths=False)
    assert config.data == sources and config.data[0] is not sources[0]


def test_the_worker_resolving_a_file_path_keeps_how_the_source_was_written(tmp_path):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "sums.jsonl").write_text("{}\n")
    policy = PathPolicy(base_dir=tmp_path, build_root=tmp_path / "models", data_roots=(tmp_path / "data",))
    config = alices_config(tmp_path)
    resolved = policy.resolve_data(config.data)
    assert resolved[1].path == str(tmp_path / "data" / "sums.jsonl")
    assert list(resolved[1].to_dict()) == ["size", "source", "task", "path", "domain", "params"]
    assert config.data[1].path == "data/sums.jsonl"  # the config it was given is unchanged


def test_malformed_sources_are_named_by_their_place_and_the_others_still_checked(tmp_path):
    with pytest.raises(ConfigError) as caught:
        RunConfig.from_dict(
            {
                "model_path": f"tiny:{tmp_path}/t",
                "steps": 0,
                "data": [{"task": "chain_sum", "colour": "red", "bias": 1}, {"size": 3}, {"task": "no_such_task"}],
            },
            check_paths=False,
        )
    assert caught.value.errors == [
        ("data[0]", "unknown keys bias, colour"),
        ("data[1]", "needs a task name"),
        ("data[2]", "unknown task 'no_such_task': not a reasoning-gym dataset"),
        ("steps", "must be at least 1"),
    ]


def test_the_mix_is_checked_source_by_source():
    sources = [
        DataSource(task="chain_sum", weight=0),
        DataSource(task="no_such_task"),
        DataSource(task="f", source="file", domain="math"),
    ]
    assert spec.mix_errors(sources) == [
        ("data[0]", "weight must be a positive number, not 0"),
        ("data[1]", "unknown task 'no_such_task': not a reasoning-gym dataset"),
        ("data[2]", "a file source needs a path"),
    ]
    assert spec.mix_errors([]) == [("data", "the training mix is empty: add at least one source")]


def test_validating_a_config_imports_neither_torch_nor_the_demo(tmp_path):
    """Model builders are named, not imported: the studio's web process validates without torch."""
    code = (
        "import sys\nfrom prorl_engine.config import RunConfig\n"
        f"RunConfig.from_dict({{'model_path': 'base:{tmp_path}/b', 'data': [{{'task': 'chain_sum'}}]}})\n"
        "print(sorted(m for m in ('torch', 'prorl_engine.demo', 'prorl_engine.modeling') if m in sys.modules))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120)
    assert result.stdout.strip() == "[]"
