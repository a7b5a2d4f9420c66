"""Data sources and the training mix: files load into Examples, bad records are named, weights hold."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from collections import Counter

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from prorl_engine.config import DataSource
from prorl_engine.data.example import Example
from prorl_engine.data.sources import DataError, TrainingMix, file_examples, load_source, reasoning_gym_examples


def write_jsonl(path, records):
    path.write_text("".join(json.dumps(record) + "\n" for record in records), encoding="utf-8")
    return path


def math_records(count: int, tag: str = "q") -> list[dict]:
    return [{"id": f"{tag}-{i}", "prompt": f"{tag}: what is {i} + {i}?", "answer": str(2 * i)} for i in range(count)]


def file_source(path, task="arith", domain="math", **kwargs) -> DataSource:
    return DataSource(task=task, source="file", path=str(path), domain=domain, **kwargs)


# --- files ------------------------------------------------------------------------------------------


def test_a_jsonl_file_loads_into_examples(tmp_path):
    path = write_jsonl(
        tmp_path / "math.jsonl",
        [
            {"id": "m1", "prompt": "What is 2 + 2?", "answer": "4", "level": 1},
            {"prompt": "What is 3 * 3?", "answer": "9", "task": "times"},
        ],
    )
    examples = file_examples(file_source(path))
    assert examples[0] == Example(
        uid="m1", domain="math", task="arith", prompt="What is 2 + 2?", answer="4", metadata={"level": 1, "task": None}
    )
    assert (examples[1].uid, examples[1].task, examples[1].answer) == ("math/1", "times", "9")


def test_a_parquet_file_loads_into_examples(tmp_path):
    path = tmp_path / "code.parquet"
    pq.write_table(
        pa.table(
            {
                "id": ["c1", "c2"],
                "prompt": ["Write add(a, b).", "Write neg(a)."],
                "tests": [
                    [{"fn_name": "add", "input": "[1, 2]", "output": "3"}],
                    [
                        {"fn_name": "neg", "input": "[1]", "output": "-1"},
                        {"fn_name": "neg", "input": "[0]", "output": "0"},
                    ],
                ],
            }
        ),
        path,
    )
    examples = file_examples(file_source(path, task="funcs", domain="code"))
    assert [e.uid for e in examples] == ["c1", "c2"]
    assert examples[1].domain == "code" and examples[1].prompt == "Write neg(a)."
    assert examples[1].metadata["tests"] == [
        {"fn_name": "neg", "input": "[1]", "output": "-1"},
        {"fn_name": "neg", "input": "[0]", "output": "0"},
    ]

    from prorl_engine.verifiers import get_verifier

    program = "```python\ndef neg(a):\n    return -a\n```"
    assert get_verifier("code").verify(program, examples[1]).reward == 1.0


def test_a_logic_file_gets_the_answer_instruction_and_a_reasoning_gym_entry(tmp_path):
    path = write_jsonl(tmp_path / "logic.jsonl", [{"prompt": "Sum 1 2", "answer": "3"}])
    (example,) = file_examples(file_source(path, task="sums", domain="logic"))
    assert example.prompt == "Sum 1 2" + DataSource(task="x").instruction
    assert example.metadata["entry"] == {"question": "Sum 1 2", "answer": "3", "metadata": {}}


def test_a_malformed_jsonl_line_is_named(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"prompt": "a", "answer": "1"}\n{"prompt": "b", "answer": "2"}\n{"prompt": "c", answer: 3}\n')
    with pytest.raises(DataError) as caught:
        file_examples(file_source(path))
    message = str(caught.value)
    assert str(path) in message and "line 3" in message and "not valid JSON" in message


def test_a_jsonl_line_that_is_not_an_object_is_named(tmp_path):
    path = tmp_path / "list.jsonl"
    path.write_text('{"prompt": "a", "answer": "1"}\n["prompt", "b"]\n')
    with pytest.raises(DataError, match=r"line 2: a record must be a JSON object"):
        file_examples(file_source(path))


def test_a_record_missing_a_required_field_is_named_with_file_line_and_field(tmp_path):
    path = write_jsonl(
        tmp_path / "missing.jsonl",
        [
            {"prompt": "What is 1 + 1?", "answer": "2"},
            {"prompt": "What is 2 + 2?", "answer": "4"},
            {"prompt": "What is 3 + 3?"},
        ],
    )
    with pytest.raises(DataError) as caught:
        file_examples(file_source(path))
    message = str(caught.value)
    assert str(path) in message and "line 3" in message and "'answer'" in message


def test_a_missing_prompt_and_a_domains_own_fields_are_named(tmp_path):
    no_prompt = write_jsonl(tmp_path / "noprompt.jsonl", [{"answer": "2"}])
    with pytest.raises(DataError, match=r"line 1: field 'prompt' is missing"):
        file_examples(file_source(no_prompt))
    ifeval = write_jsonl(
        tmp_path / "ifeval.jsonl",
        [
            {
                "prompt": "Write a haiku.",
                "instruction_id_list": ["length_constraints:number_words"],
                "kwargs": [{"num_words": 5}],
            },
            {"prompt": "Write a poem.", "instruction_id_list": ["punctuation:no_comma"]},
        ],
    )
    with pytest.raises(DataError, match=r"line 2: field 'kwargs' is missing"):
        file_examples(file_source(ifeval, domain="ifeval"))


def test_a_parquet_row_missing_a_field_is_named_by_its_row(tmp_path):
    path = tmp_path / "stem.parquet"
    pq.write_table(pa.table({"prompt": ["Q1", "Q2", "Q3"], "answer": ["A", None, "C"]}), path)
    with pytest.raises(DataError) as caught:
        file_examples(file_source(path, domain="stem"))
    message = str(caught.value)
    assert str(path) in message and "line 2" in message and "'answer'" in message


def test_an_unsupported_or_empty_file_is_refused(tmp_path):
    csv = tmp_path / "data.csv"
    csv.write_text("prompt,answer\n")
    with pytest.raises(DataError, match="unsupported file type"):
        file_examples(file_source(csv))
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    with pytest.raises(DataError, match=r"empty.jsonl: no records"):
        file_examples(file_source(empty))


# --- reasoning-gym -----------------------------------------------------------------------------------


def test_reasoning_gym_items_are_logic_examples_with_the_answer_instruction():
    source = DataSource(task="chain_sum", size=4, eval_size=2)
    examples = reasoning_gym_examples(source, seed=5)
    assert len(examples) == 6
    assert all(
        e.domain == "logic" and e.task == "chain_sum" and e.prompt.endswith(source.instruction) for e in examples
    )
    assert [e.uid for e in examples] == [f"chain_sum/5/{i}" for i in range(6)]
    first = examples[0]
    assert first.metadata["entry"]["answer"] == first.answer
    # The answer is the arithmetic result of the question's expression.
    expression = first.metadata["entry"]["metadata"]["expression"]
    assert int(first.answer) == eval(expression)  # noqa: S307 - digits and +/- only, generated here
    assert [e.prompt for e in reasoning_gym_examples(source, seed=5)] == [e.prompt for e in examples]  # seeded


def test_held_out_reasoning_gym_prompts_never_repeat_a_training_prompt():
    # Two one-digit terms: only 100 distinct questions, so 200 generated items repeat some.
    source = DataSource(
        task="chain_sum",
        size=150,
        eval_size=50,
        params={"min_terms": 2, "max_terms": 2, "min_digits": 1, "max_digits": 1},
    )
    train, held_out = load_source(source, seed=0)
    assert len(train) == 150 and held_out
    assert not {e.prompt for e in held_out} & {e.prompt for e in train}


# --- the training mix ---------------------------------------------------------------------------------


def test_a_held_out_record_repeating_a_training_prompt_is_dropped(tmp_path):
    records = math_records(10) + [{"id": f"dup-{i}", "prompt": "q: what is 0 + 0?", "answer": "0"} for i in range(3)]
    path = write_jsonl(tmp_path / "dups.jsonl", records)
    train, held_out = load_source(file_source(path, eval_size=6), seed=0)
    # Seed 0 puts 2 of the 4 "0 + 0" records in the held-out 6 and the other 2 in training: both are dropped.
    assert len(train) == 7 and len(held_out) == 4
    assert not {e.prompt for e in held_out} & {e.prompt for e in train}
    assert not {e.uid for e in held_out} & {e.uid for e in train}


def test_held_out_examples_are_split_off_and_never_drawn_for_training(tmp_path):
    path = write_jsonl(tmp_path / "math.jsonl", math_records(30))
    mix = TrainingMix([file_source(path, eval_size=5)], seed=1)
    held_uids = {e.uid for e in mix.held_out}
    assert len(held_uids) == 5
    drawn = mix.draw(200)
    assert not held_uids & {e.uid for e in drawn}
    assert {e.uid for e in drawn} | held_uids == {f"q-{i}" for i in range(30)}  # every other record is used


def test_mix_weights_3_to_1_hold_over_4000_draws(tmp_path):
    a = write_jsonl(tmp_path / "a.jsonl", math_records(40, "a"))
    b = write_jsonl(tmp_path / "b.jsonl", math_records(40, "b"))
    mix = TrainingMix(
        [file_source(a, task="a", weight=3.0, eval_size=0), file_source(b, task="b", weight=1, eval_size=0)], seed=7
    )
    counts = Counter(e.task for e in mix.draw(4000))
    share = counts["a"] / 4000
    # Each draw picks source a with p = 0.75, so the share has std sqrt(0.75 * 0.25 / 4000) = 0.0068;
    # 0.035 is over 5 std: a correct mix fails this with probability under 1e-6 whatever the seed,
    # while a mix that ignored the weights (0.5) or inverted them (0.25) fails it by far.
    sd = math.sqrt(0.75 * 0.25 / 4000)
    assert abs(share - 0.75) < 0.035 and 0.035 > 5 * sd
    assert counts["a"] + counts["b"] == 4000


def test_state_dict_restores_the_same_subsequent_draws(tmp_path):
    a = write_jsonl(tmp_path / "a.jsonl", math_records(7, "a"))
    b = write_jsonl(tmp_path / "b.jsonl", math_records(5, "b"))
    sources = [file_source(a, task="a", weight=2.0, eval_size=1), file_source(b, task="b", eval_size=1)]
    mix = TrainingMix(sources, seed=3)
    mix.draw(23)  # past the end of both sources' first epoch
    state = json.loads(json.dumps(mix.state_dict()))  # it goes into a checkpoint
    expected = [e.uid for e in mix.draw(40)]

    resumed = TrainingMix(sources, seed=3)
    resumed.load_state_dict(state)
    assert [e.uid for e in resumed.draw(40)] == expected
    mix.load_state_dict(state)
    assert [e.uid for e in mix.draw(40)] == expected


def test_the_same_seed_gives_the_same_draws_and_another_seed_does_not(tmp_path):
    path = write_jsonl(tmp_path / "a.jsonl", math_records(20))
    first = [e.uid for e in TrainingMix([file_source(path)], seed=11).draw(30)]
    assert [e.uid for e in TrainingMix([file_source(path)], seed=11).draw(30)] == first
    assert [e.uid for e in TrainingMix([file_source(path)], seed=12).draw(30)] != first


def test_an_exhausted_source_starts_its_next_epoch_without_dropping_an_example(tmp_path):
    path = write_jsonl(tmp_path / "a.jsonl", math_records(8))
    mix = TrainingMix([file_source(path, eval_size=2)], seed=4)
    train_uids = {f"q-{i}" for i in range(8)} - {e.uid for e in mix.held_out}
    assert len(train_uids) == 6
    drawn = [e.uid for e in mix.draw(6 * 3 + 2)]
    # Each epoch is a permutation of all training examples: nothing is skipped, nothing repeats early.
    epochs = [drawn[0:6], drawn[6:12], drawn[12:18]]
    assert all(sorted(epoch) == sorted(train_uids) for epoch in epochs)
    assert epochs[0] != epochs[1]  # a new order each epoch
    assert mix.state_dict()["streams"] == [{"epoch": 3, "cursor": 2}]


def test_draws_across_calls_equal_one_large_draw(tmp_path):
    """The trainer draws batch by batch (refills too); splitting the draws must not change the stream."""
    a = write_jsonl(tmp_path / "a.jsonl", math_records(6, "a"))
    b = write_jsonl(tmp_path / "b.jsonl", math_records(6, "b"))
    sources = [file_source(a, task="a", eval_size=0), file_source(b, task="b", eval_size=0)]
    whole = [e.uid for e in TrainingMix(sources, seed=9).draw(30)]
    mix = TrainingMix(sources, seed=9)
    assert [e.uid for count in (10, 1, 4, 15) for e in mix.draw(count)] == whole


def test_blank_lines_are_skipped_and_errors_still_name_the_right_line(tmp_path):
    path = tmp_path / "math.jsonl"
    path.write_text('{"prompt": "1+1?", "answer": "2"}\n\n{"prompt": "2+2?"}\n\n')

    with pytest.raises(DataError, match=r"math.jsonl, line 3: field 'answer' is missing"):
        file_examples(DataSource(task="m", source="file", path=str(path), domain="math"))
    path.write_text('{"prompt": "1+1?", "answer": "2"}\n\n{"prompt": "2+2?", "answer": "4"}\n\n')
    examples = file_examples(DataSource(task="m", source="file", path=str(path), domain="math"))
    assert [e.answer for e in examples] == ["2", "4"]


# --- the one reader ------------------------------------------------------------------------------------


def test_files_are_read_without_hf_datasets_and_nothing_is_written_to_the_home_folder(tmp_path):
    """Each file is parsed once, by the engine's reader: no `datasets` import, no cache under $HOME."""
    jsonl = write_jsonl(tmp_path / "math.jsonl", math_records(3))
    parquet = tmp_path / "math.parquet"
    pq.write_table(pa.table({"prompt": ["Q1", "Q2"], "answer": ["1", "2"]}), parquet)
    home = tmp_path / "home"
    home.mkdir()
    script = (
        "import sys\n"
        "from prorl_engine.config import DataSource\n"
        "from prorl_engine.data.sources import file_examples\n"
        f"for path in ({str(jsonl)!r}, {str(parquet)!r}):\n"
        "    print(len(file_examples(DataSource(task='m', source='file', path=path, domain='math'))))\n"
        "print('datasets' in sys.modules)\n"
    )
    environment = {**os.environ, "HOME": str(home), "XDG_CACHE_HOME": str(home / ".cache")}
    environment.pop("HF_HOME", None)
    environment.pop("HF_DATASETS_CACHE", None)
    done = subprocess.run(
        [sys.executable, "-c", script], env=environment, capture_output=True, text=True, timeout=120, check=True
    )
    assert done.stdout.split() == ["3", "2", "False"]
    assert list(home.iterdir()) == []


def test_a_line_that_is_not_utf8_is_named(tmp_path):
    path = tmp_path / "latin1.jsonl"
    path.write_bytes(b'{"prompt": "a", "answer": "1"}\n{"prompt": "caf\xe9", "answer": "2"}\n')
    with pytest.raises(DataError, match=r"latin1.jsonl, line 2: not UTF-8 text"):
        file_examples(file_source(path))


def test_records_keep_their_values_as_written(tmp_path):
    """No column types: an ifeval record's kwargs keep their own keys, and the verifier scores them."""
    from prorl_engine.verifiers import get_verifier

    path = write_jsonl(
        tmp_path / "ifeval.jsonl",
        [
            {
                "prompt": "Four words.",
                "instruction_id_list": ["length_constraints:number_words"],
                "kwargs": [{"num_words": 5, "relation": "less than"}],
            },
            {"prompt": "No commas.", "instruction_id_list": ["punctuation:no_comma"], "kwargs": [{}], "answer": 3},
        ],
    )
    first, second = file_examples(file_source(path, domain="ifeval"))
    assert first.metadata["kwargs"] == [{"num_words": 5, "relation": "less than"}]
    assert second.metadata["kwargs"] == [{}] and (first.answer, second.answer) == (None, 3)
    assert get_verifier("ifeval").verify("Just four words here.", first).reward == 1.0
    assert get_verifier("ifeval").verify("Salt, wind.", second).reward == 0.0


def test_a_missing_or_corrupt_file_is_named(tmp_path):
    with pytest.raises(DataError, match=r"gone.jsonl: cannot be read: No such file or directory"):
        file_examples(file_source(tmp_path / "gone.jsonl"))
    corrupt = tmp_path / "corrupt.parquet"
    corrupt.write_bytes(b"PAR1 this is not a parquet file")
    with pytest.raises(DataError, match=r"corrupt.parquet: cannot be read"):
        file_examples(file_source(corrupt))
