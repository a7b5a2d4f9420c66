"""The code verifier: the fraction of tests the response's program passes, in the sandbox (spec section 3)."""

from __future__ import annotations

import json
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from prorl_engine.data.example import Example
from prorl_engine.verifiers.code import CodeVerifier, parse_tests

SUM_TESTS = [
    {"input": "1 2\n", "output": "3\n"},
    {"input": "-5 5\n", "output": "0\n"},
    {"input": "7 8\n", "output": "15\n"},
]
GCD_TESTS = [
    {"fn_name": "gcd", "input": "[12, 18]", "output": "6"},
    {"fn_name": "gcd", "input": "[7, 13]", "output": "1"},
]


def task(tests) -> Example:
    return Example(uid="c1", domain="code", task="test", prompt="?", metadata={"tests": tests})


def fenced(program: str, language: str = "python") -> str:
    return f"Here is my solution.\n```{language}\n{program}\n```\nDone."


@pytest.fixture(scope="module")
def verifier():
    return CodeVerifier()


def test_a_program_passing_every_test_earns_1(verifier):
    verdict = verifier.verify(fenced("a, b = map(int, input().split())\nprint(a + b)"), task(SUM_TESTS))
    assert (verdict.reward, verdict.format_ok) == (1.0, True)
    assert verdict.details == {"passed": 3, "total": 3, "tests": ["passed"] * 3}


def test_the_reward_is_the_fraction_of_tests_passed(verifier):
    program = "a, b = map(int, input().split())\nprint(a + b if a > 0 else 99)"
    verdict = verifier.verify(fenced(program), task(SUM_TESTS))
    assert verdict.reward == pytest.approx(2 / 3)
    assert verdict.details["tests"] == ["passed", "wrong_answer", "passed"]


def test_trailing_spaces_and_blank_lines_do_not_matter_but_content_does(verifier):
    program = "a, b = map(int, input().split())\nprint(a + b, ' ')\nprint()"
    assert verifier.verify(fenced(program), task(SUM_TESTS)).reward == 1.0
    assert verifier.verify(fenced("print('3 ')"), task(SUM_TESTS)).reward == pytest.approx(1 / 3)


def test_a_program_that_crashes_fails_its_tests(verifier):
    verdict = verifier.verify(fenced("raise SystemExit(3)"), task(SUM_TESTS))
    assert verdict.reward == 0.0 and verdict.details["tests"] == ["runtime_error"] * 3


def test_a_syntax_error_earns_0_and_says_so(verifier):
    verdict = verifier.verify(fenced("def f(:\n    pass"), task(SUM_TESTS))
    assert (verdict.reward, verdict.format_ok) == (0.0, True)
    assert "SyntaxError" in verdict.details["error"]


def test_no_python_block_is_a_format_failure(verifier):
    for response in ("print(3)", fenced("console.log(3)", "javascript"), "```python\nprint(3)"):
        verdict = verifier.verify(response, task(SUM_TESTS))
        assert (verdict.reward, verdict.format_ok) == (0.0, False)


def test_the_last_python_block_is_the_program(verifier):
    response = fenced("print('draft')") + fenced("a, b = map(int, input().split())\nprint(a + b)", "py")
    assert verifier.verify(response, task(SUM_TESTS)).reward == 1.0


def test_call_tests_compare_the_returned_json_value(verifier):
    program = "import math\ndef gcd(a, b):\n    print('debug output does not matter')\n    return math.gcd(a, b)"
    assert verifier.verify(fenced(program), task(GCD_TESTS)).reward == 1.0
    assert verifier.verify(fenced("def gcd(a, b):\n    return 1"), task(GCD_TESTS)).reward == 0.5


def test_a_method_of_a_solution_class_can_be_called(verifier):
    program = (
        "class Solution:\n    def gcd(self, a, b):\n        while b:\n            a, b = b, a % b\n        return a"
    )
    assert verifier.verify(fenced(program), task(GCD_TESTS)).reward == 1.0


def test_floats_match_within_a_tolerance_and_types_must_agree(verifier):
    tests = [
        {"fn_name": "mean", "input": "[[1, 2]]", "output": "1.5"},
        {"fn_name": "mean", "input": "[[1, 2, 3]]", "output": "2.0"},
    ]
    assert verifier.verify(fenced("def mean(v):\n    return sum(v) / len(v) + 1e-9"), task(tests)).reward == 1.0
    assert verifier.verify(fenced("def mean(v):\n    return str(sum(v) / len(v))"), task(tests)).reward == 0.0


def test_a_program_cannot_fake_a_pass_by_exiting_early_or_with_an_always_equal_object(verifier):
    always_equal = (
        "class Anything:\n    def __eq__(self, other):\n        return True\ndef gcd(a, b):\n    return Anything()"
    )
    assert verifier.verify(fenced(always_equal), task(GCD_TESTS)).reward == 0.0
    assert verifier.verify(fenced("import os\nos._exit(0)"), task(GCD_TESTS)).reward == 0.0


def test_a_run_past_the_5_s_budget_earns_0_even_after_passing_tests(verifier):
    program = "import time\na, b = map(int, input().split())\nprint(a + b)\nif a == 7:\n    while True:\n        pass"
    started = time.monotonic()
    verdict = verifier.verify(fenced(program), task(SUM_TESTS))
    assert verdict.reward == 0.0 and "5 s" in verdict.details["error"]
    assert verdict.details["tests"] == ["passed", "passed", "timeout"]
    assert 5.0 <= time.monotonic() - started < 7.0


def test_the_apps_layout_and_json_strings_are_read():
    apps = {"inputs": ["1 2\n", "3 4\n"], "outputs": ["3\n", "7\n"]}
    assert parse_tests(apps)[1].output == "7\n"
    assert parse_tests(json.dumps(apps))[0].input == "1 2\n"
    calls = parse_tests({"fn_name": "f", "inputs": [[1, 2]], "outputs": [3]})
    assert (calls[0].fn_name, calls[0].input, calls[0].output) == ("f", "[1, 2]", "3")


@pytest.mark.parametrize(
    "tests, message",
    [
        (None, "non-empty list"),
        ([], "non-empty list"),
        (["assert f(1) == 2"], "'input' and 'output'"),
        ([{"input": "1"}], "'input' and 'output'"),
        ([{"fn_name": "f", "input": "1", "output": "2"}], "JSON array"),
        ({"inputs": ["1"], "outputs": []}, "same length"),
    ],
)
def test_a_malformed_test_list_is_a_data_error(tests, message):
    with pytest.raises(ValueError, match=message):
        parse_tests(tests)


def test_an_overlong_program_is_not_run(verifier):
    verdict = verifier.verify(fenced("x = 1\n" * 20_000), task(SUM_TESTS))
    assert verdict.reward == 0.0 and "longer than" in verdict.details["error"]


def test_it_works_from_worker_threads(verifier):
    good = fenced("a, b = map(int, input().split())\nprint(a + b)")
    with ThreadPoolExecutor(max_workers=4) as pool:
        rewards = list(pool.map(lambda _: verifier.verify(good, task(SUM_TESTS)).reward, range(8)))
    assert rewards == [1.0] * 8
