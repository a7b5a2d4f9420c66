"""The verifier registry, and the example data files: every record is well formed and its reference
answer, written the way a good model would write it, earns full reward."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from prorl_engine.data.example import DOMAINS, Example
from prorl_engine.verifiers import VERIFIERS, get_verifier
from prorl_engine.verifiers.code import parse_tests
from prorl_engine.verifiers.ifeval import instructions

EXAMPLES = Path(__file__).resolve().parents[2] / "prorl_engine" / "data" / "examples"

SOLUTIONS = {  # one reference program per code example, by id
    "code-001": "a, b = map(int, input().split())\nprint(a + b)",
    "code-002": "print(input()[::-1])",
    "code-003": "input()\nprint(max(map(int, input().split())))",
    "code-004": "n = int(input())\nf = [0, 1]\nwhile len(f) < n:\n    f.append(f[-1] + f[-2])\nprint(*f[:n])",
    "code-005": "w = input().strip()\nprint('YES' if w == w[::-1] else 'NO')",
    "code-006": "for i in range(1, int(input()) + 1):\n    print('*' * i)",
    "code-007": "from math import gcd",
    "code-008": (
        "def two_sum(nums, target):\n    seen = {}\n    for j, x in enumerate(nums):\n"
        "        if target - x in seen:\n            return [seen[target - x], j]\n        seen[x] = j"
    ),
    "code-009": "def mean(values):\n    return sum(values) / len(values)",
    "code-010": (
        "from collections import Counter\ndef word_count(text):\n    return dict(Counter(text.lower().split()))"
    ),
}


def records(domain: str) -> list[dict]:
    lines = (EXAMPLES / f"{domain}.jsonl").read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines]


def as_example(domain: str, record: dict) -> Example:
    """The record as the data loader turns it into an Example (fields besides id/prompt/answer: metadata)."""
    metadata = {key: value for key, value in record.items() if key not in ("id", "prompt", "answer")}
    return Example(
        uid=record["id"],
        domain=domain,
        task=record.get("task", "examples"),
        prompt=record["prompt"],
        answer=record.get("answer"),
        metadata=metadata,
    )


def test_every_domain_has_its_verifier_shared_by_all_callers():
    assert set(VERIFIERS) == set(DOMAINS)
    for domain in DOMAINS:
        assert get_verifier(domain).domain == domain
        assert get_verifier(domain) is get_verifier(domain)


def test_an_unknown_domain_has_no_verifier():
    with pytest.raises(ValueError, match="poetry"):
        get_verifier("poetry")


@pytest.mark.parametrize("domain", DOMAINS)
def test_each_example_file_has_8_to_20_records_with_unique_ids_and_prompts(domain):
    rows = records(domain)
    assert 8 <= len(rows) <= 20
    assert len({row["id"] for row in rows}) == len(rows)
    assert all(isinstance(row["prompt"], str) and row["prompt"] for row in rows)


def test_math_references_boxed_earn_1():
    for record in records("math"):
        assert (
            get_verifier("math").verify(f"Therefore \\boxed{{{record['answer']}}}.", as_example("math", record)).reward
            == 1.0
        )


def test_stem_references_boxed_earn_1():
    for record in records("stem"):
        assert get_verifier("stem").verify(f"\\boxed{{{record['answer']}}}", as_example("stem", record)).reward == 1.0


def test_logic_references_in_answer_tags_earn_1():
    for record in records("logic"):
        verdict = get_verifier("logic").verify(f"<answer>{record['answer']}</answer>", as_example("logic", record))
        assert verdict.reward == 1.0, record["task"]


def test_code_reference_solutions_pass_every_test():
    for record in records("code"):
        parse_tests(record["tests"])
        response = f"```python\n{SOLUTIONS[record['id']]}\n```"
        assert get_verifier("code").verify(response, as_example("code", record)).reward == 1.0, record["id"]


def test_ifeval_records_name_known_instructions_with_fitting_kwargs():
    for record in records("ifeval"):
        assert len(instructions(as_example("ifeval", record).metadata)) == len(record["instruction_id_list"])
