"""Code: the fraction of the example's tests that the response's program passes (spec section 3).

The program is the body of the response's last ```python (or ```py, ```python3) fence after any
thinking; none: format_ok is False. It runs only in the bubblewrap `Sandbox`, once per test, all
tests sequentially within one time budget (5 s): when the whole run passes it, or the program does
not compile, the reward is 0. When the sandbox cannot start, the reward is 0 with
details["error"] saying why, and the program is not run at all.

Test schema, `example.metadata["tests"]`: a list of tests, each a flat object of strings

    {"input": "1 2\\n", "output": "3\\n"}                      stdin -> expected stdout
    {"fn_name": "add", "input": "[1, 2]", "output": "3"}      call: JSON arguments -> JSON result

A stdin test passes when the program exits with status 0 and its stdout equals `output` line by
line, ignoring trailing spaces on each line and trailing blank lines. A call test runs the program
as a module, calls `fn_name` (a top-level function, or a method of a top-level class `Solution`)
with the arguments, and passes when the result equals the JSON `output` (floats within 1e-6).
The APPS/TACO layout `{"inputs": [...], "outputs": [...], "fn_name": optional}`, and either form
as a JSON string, are accepted too.

Why no assert-snippet tests: a test runs inside the sandbox next to the program, and a program can
defeat an `assert f(1) == 2` there (return an object whose `__eq__` is always true, or
`os._exit(0)` before the assert runs): a reward an RL policy would learn to hack. Here the expected
output never enters the sandbox, so the only way to print it is to compute it.
"""

from __future__ import annotations

import functools
import json
import math
import time
from dataclasses import dataclass
from typing import Any

from prorl_engine.data.example import Example
from prorl_engine.verifiers.base import Verdict
from prorl_engine.verifiers.extract import final_text, last_fenced_block
from prorl_engine.verifiers.sandbox import Sandbox, SandboxResult, SandboxUnavailable

PYTHON_FENCES = ("python", "python3", "py")
MAX_PROGRAM_CHARS = 64 * 1024
FLOAT_TOLERANCE = 1e-6


@dataclass(frozen=True)
class CodeTest:
    """One test: stdin text and expected stdout, or (with `fn_name`) JSON arguments and JSON result."""

    input: str
    output: str
    fn_name: str | None = None


class CodeVerifier:
    """Continuous reward: tests passed / tests, run in the sandbox within `time_budget_s` in total."""

    domain = "code"

    def __init__(self, sandbox: Sandbox | None = None, time_budget_s: float = 5.0) -> None:
        self.sandbox = sandbox or default_sandbox()
        self.time_budget_s = time_budget_s

    def verify(self, response: str, example: Example) -> Verdict:
        """Score one response; `details` has passed/total, each test's status and any error."""
        tests = parse_tests(example.metadata.get("tests"))
        program = last_fenced_block(final_text(response), PYTHON_FENCES)
        if program is None:
            return Verdict(0.0, format_ok=False, details={"error": "no ```python block"})
        if len(program) > MAX_PROGRAM_CHARS:
            return _failed(program, f"program longer than {MAX_PROGRAM_CHARS} characters, not run")
        try:
            self.sandbox.ensure_available()
            return self._run_tests(program, tests)
        except SandboxUnavailable as error:
            return _failed(program, f"sandbox unavailable, code not run: {error}")

    def _run_tests(self, program: str, tests: list[CodeTest]) -> Verdict:
        """Run the tests one by one until they are done or the time budget is spent."""
        deadline = time.monotonic() + self.time_budget_s
        statuses: list[str] = []
        for test in tests:
            result = self.sandbox.run(
                program,
                stdin=test.input.encode(errors="replace"),
                timeout_s=max(0.0, deadline - time.monotonic()),
                fn_name=test.fn_name,
                stdout_bytes=max(self.sandbox.limits.stdout_bytes, 2 * len(test.output)),
            )
            if result.compile_error:
                return _failed(program, _tail(result.stderr))
            if result.timed_out:
                return _failed(program, f"the run passed its {self.time_budget_s:g} s budget", statuses + ["timeout"])
            statuses.append(_status(result, test))
        passed = statuses.count("passed")
        details = {"passed": passed, "total": len(tests), "tests": statuses}
        return Verdict(passed / len(tests), extracted=program, details=details)


def _status(result: SandboxResult, test: CodeTest) -> str:
    """passed, wrong_answer, runtime_error or output_limit."""
    if result.output_exceeded:
        return "output_limit"
    if not result.completed:
        return "runtime_error"
    same = _same_result if test.fn_name else _same_stdout
    return "passed" if same(result.stdout.decode("utf-8", errors="replace"), test.output) else "wrong_answer"


def _same_stdout(actual: str, expected: str) -> bool:
    """Equal line by line, ignoring trailing spaces on lines and trailing blank lines."""
    return _lines(actual) == _lines(expected)


def _lines(text: str) -> list[str]:
    lines = [line.rstrip() for line in text.splitlines()]
    while lines and not lines[-1]:
        lines.pop()
    return lines


def _same_result(actual: str, expected: str) -> bool:
    """Equal JSON values, floats within FLOAT_TOLERANCE."""
    try:
        return _same_value(json.loads(actual), json.loads(expected))
    except json.JSONDecodeError:
        return False


def _same_value(actual: Any, expected: Any) -> bool:
    if isinstance(expected, float) or isinstance(actual, float):
        numbers = (int, float)
        return (
            isinstance(actual, numbers)
            and isinstance(expected, numbers)
            and not isinstance(actual, bool)
            and not isinstance(expected, bool)
            and math.isclose(actual, expected, rel_tol=FLOAT_TOLERANCE, abs_tol=FLOAT_TOLERANCE)
        )
    if isinstance(expected, list) and isinstance(actual, list):
        return len(actual) == len(expected) and all(map(_same_value, actual, expected))
    if isinstance(expected, dict) and isinstance(actual, dict):
        return actual.keys() == expected.keys() and all(_same_value(actual[k], expected[k]) for k in expected)
    return type(actual) is type(expected) and actual == expected


def _failed(program: str, error: str, statuses: list[str] | None = None) -> Verdict:
    """Reward 0 for a program that was read but could not earn anything, with the reason."""
    details: dict[str, Any] = {"error": error}
    if statuses is not None:
        details["tests"] = statuses
    return Verdict(0.0, extracted=program, details=details)


def _tail(stderr: bytes, size: int = 500) -> str:
    return stderr.decode("utf-8", errors="replace").strip()[-size:]


def parse_tests(tests: Any) -> list[CodeTest]:
    """`metadata["tests"]` in any accepted layout -> CodeTests; ValueError says what is wrong."""
    if isinstance(tests, str):
        tests = json.loads(tests)
    if isinstance(tests, dict):
        tests = _from_columns(tests)
    if not isinstance(tests, list) or not tests:
        raise ValueError(f"code: metadata['tests'] must be a non-empty list of tests, got {tests!r:.200}")
    return [_parse_test(index, test) for index, test in enumerate(tests)]


def _from_columns(tests: dict) -> list[dict]:
    """APPS/TACO layout {"inputs": [...], "outputs": [...], "fn_name": ...} -> list of tests."""
    inputs, outputs = tests.get("inputs"), tests.get("outputs")
    if not isinstance(inputs, list) or not isinstance(outputs, list) or len(inputs) != len(outputs):
        raise ValueError("code: tests {'inputs': [...], 'outputs': [...]} need two lists of the same length")
    fn_name = tests.get("fn_name")
    return [{"input": i, "output": o, "fn_name": fn_name} for i, o in zip(inputs, outputs)]


def _parse_test(index: int, test: Any) -> CodeTest:
    """One test object -> CodeTest; a call test's values may be JSON text or already decoded."""
    if not isinstance(test, dict) or test.get("input") is None or test.get("output") is None:
        raise ValueError(f"code: test {index} must be an object with 'input' and 'output', got {test!r:.200}")
    fn_name = test.get("fn_name") or None
    if fn_name is None:
        if not isinstance(test["input"], str) or not isinstance(test["output"], str):
            raise ValueError(f"code: test {index}: stdin tests need text 'input' and 'output'")
        return CodeTest(test["input"], test["output"])
    arguments, output = _json_text(test["input"]), _json_text(test["output"])
    if not isinstance(json.loads(arguments), list):
        raise ValueError(f"code: test {index}: 'input' of a call test must be a JSON array of arguments")
    json.loads(output)  # a JSONDecodeError (a ValueError) names the bad value
    return CodeTest(arguments, output, str(fn_name))


def _json_text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value)


@functools.cache
def default_sandbox() -> Sandbox:
    """The process-wide sandbox with the default limits."""
    return Sandbox()
