"""The limited YAML loader: plain data within limits, and each limit refused fast, with or without libyaml."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import yaml

from prorl_engine import safeyaml
from prorl_engine.safeyaml import Limits, YamlLimitError


@pytest.fixture(params=["libyaml", "pure-python"])
def loader(request, monkeypatch):
    """`safeyaml.load` with libyaml's fast first pass, and without it (PyYAML built without libyaml)."""
    if request.param == "pure-python":
        monkeypatch.setattr(yaml, "__with_libyaml__", False)
    elif not yaml.__with_libyaml__:
        pytest.skip("PyYAML has no libyaml here")
    return safeyaml.load


@pytest.mark.parametrize(
    "text, accepted",
    [
        ("[[x]]", True),  # x lies 3 levels deep: the outer list, the inner list, itself
        ("[[[x]]]", False),
        ("[[[]]]", True),  # an empty list has nothing inside it
        ("a: {b: 1}", True),
        ("a: {b: [1]}", False),
        ("x", True),
    ],
)
def test_depth_counts_every_node_on_the_path_the_same_way_in_both_passes(loader, text, accepted):
    limits = Limits(max_depth=3)
    if accepted:
        assert loader(text, limits) == yaml.safe_load(text)
    else:
        with pytest.raises(YamlLimitError, match="nested deeper than 3 levels"):
            loader(text, limits)


def test_5000_levels_are_refused_within_a_few_milliseconds(loader):
    for text in ("a: " + "[" * 5000 + "]" * 5000, "- " * 5000 + "x", "{a: " * 5000):
        started = time.perf_counter()
        with pytest.raises(YamlLimitError, match="nested deeper than 32 levels"):
            loader(text)
        limit = 0.05 if yaml.__with_libyaml__ else 2.0  # PyYAML's own scanner looks 1,024 characters ahead
        assert time.perf_counter() - started < limit


def test_aliases_are_counted_and_expanded_sizes_bounded(loader):
    two = "a: &a [1, 2]\nb: [*a, *a]\n"  # 1 mapping + (1 + 2) list + 2 keys + 2 x 3 expanded + 1 list = 13 nodes
    assert loader(two, Limits(max_nodes=13)) == {"a": [1, 2], "b": [[1, 2], [1, 2]]}
    with pytest.raises(YamlLimitError, match="more than 12 values once its aliases are expanded"):
        loader(two, Limits(max_nodes=12))
    with pytest.raises(YamlLimitError, match="more than 1 aliases"):
        loader(two, Limits(max_aliases=1))


def test_a_recursive_document_is_refused(loader):
    with pytest.raises(YamlLimitError, match="contains it"):
        loader("a: &a [1, *a]")


@pytest.mark.parametrize(
    "text",
    [
        "x: !!binary aGVsbG8=",
        "x: !!set {a, b}",
        "x: !!omap [a: 1]",
        "x: !!timestamp 2020-01-01",
        "x: !!python/object:os.system {}",
    ],
)
def test_only_json_like_values_are_built(loader, text):
    with pytest.raises(yaml.YAMLError):
        loader(text)


def test_dates_are_read_as_text_and_numbers_as_numbers(loader):
    assert loader("a: 2020-01-01\nb: 1.5\nc: 0x10\nd: null\ne: yes") == {
        "a": "2020-01-01",
        "b": 1.5,
        "c": 16,
        "d": None,
        "e": True,
    }


def test_the_text_length_is_checked_before_reading(loader):
    text = "a" * 10_000_001
    started = time.perf_counter()
    with pytest.raises(YamlLimitError, match="has 10,000,001 characters; at most 131,072"):
        loader(text)
    assert time.perf_counter() - started < 0.05


def test_the_cli_refuses_an_alias_bomb_config_with_a_named_error(tmp_path, capsys):
    from prorl_engine.cli import main

    lines = [
        "model_path: tiny:x",
        "data:",
        "  - task: chain_sum",
        "    params:",
        "      a: &a [1, 2, 3, 4, 5, 6, 7, 8, 9]",
    ]
    lines += [f"      {b}: &{b} [{', '.join([f'*{a}'] * 9)}]" for a, b in zip("abcdefgh", "bcdefghi")]
    config = tmp_path / "bomb.yaml"
    config.write_text("\n".join(lines))
    started = time.perf_counter()
    assert main(["train", str(config), "--out", str(tmp_path / "run")]) == 2
    assert time.perf_counter() - started < 1.0
    assert capsys.readouterr().err == f"error: {config}: refused: more than 64 aliases (*name) in the YAML text\n"
    assert not (tmp_path / "run").exists()
    tiny = Path(__file__).resolve().parents[2] / "prorl_engine" / "configs" / "tiny.yaml"
    assert main(["train", str(tiny), "--set", "data=" + "[" * 100, "--out", str(tmp_path / "run")]) == 2
    assert (
        capsys.readouterr().err
        == f"error: --set data={'[' * 100}: refused: the YAML text is nested deeper than 32 levels\n"
    )
