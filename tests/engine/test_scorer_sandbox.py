"""Scorers that parse model text: hostile answers end within their limits, earn nothing, touch nothing.

reasoning-gym's scorers pass answers to `eval` or sympy's `parse_expr`, math-verify to sympy. Each
attack below succeeded when they ran in the trainer's process (a file appeared, the call never
returned, the answer read the scorer's reference); here each must fail, while the right answer
still earns its full reward.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import sys
import tempfile
import time
import uuid
from pathlib import Path

import pytest
import reasoning_gym
import sympy

from prorl_engine.data.example import Example
from prorl_engine.verifiers.equivalence import MathJudge
from prorl_engine.verifiers.logic import LogicVerifier
from prorl_engine.verifiers.math import MathVerifier
from prorl_engine.verifiers.scorer_helper import literal_eval_with_operators, restricted_parse_expr
from prorl_engine.verifiers.scorer_pool import GRACE_S, HelperSandbox, ScorerPool
from prorl_engine.verifiers.stem import StemVerifier

pytestmark = pytest.mark.skipif(
    shutil.which("bwrap") is None, reason="bubblewrap is not installed (scripts/install_system.sh)"
)

TIMEOUT_S = 1.0  # the verifiers' limit in these tests (the default is 5 s)
PROJECT = Path(__file__).resolve().parents[2]


def puzzle(task: str, seed: int = 3) -> Example:
    """A reasoning-gym item as the data loader builds it (the entry through JSON)."""
    entry = json.loads(json.dumps(reasoning_gym.create_dataset(task, size=1, seed=seed)[0]))
    return Example(
        uid="l1", domain="logic", task=task, prompt=entry["question"], answer=entry["answer"], metadata={"entry": entry}
    )


def tagged(answer: str) -> str:
    return f"Let me think. <answer>{answer}</answer>"


@pytest.fixture(scope="module")
def logic_pool():
    """One helper, started here: the timings below measure calls, not a helper's start-up."""
    pool = ScorerPool("logic", size=1)
    assert (
        pool.call(
            {"op": "logic", "task": "leg_counting", "answer": "?", "entry": puzzle("leg_counting").metadata["entry"]},
            5.0,
        ).error
        is None
    )
    yield pool
    pool.close()


@pytest.fixture(scope="module")
def logic(logic_pool):
    return LogicVerifier(logic_pool, timeout_s=TIMEOUT_S)


@pytest.fixture(scope="module")
def judge():
    judge = MathJudge(timeout_s=TIMEOUT_S, size=1)
    assert judge.equivalent("\\frac{1}{2}", "0.5").equal  # starts its helper
    yield judge
    judge.close()


def timed(verifier, response: str, example: Example):
    started = time.monotonic()
    verdict = verifier.verify(response, example)
    return verdict, time.monotonic() - started


# side effects -----------------------------------------------------------------------------------

SIDE_EFFECTS = ["__import__('os').system('touch {marker}')", "open('{marker}', 'w').write('pwned')"]
EVALUATING_TASKS = ["string_insertion", "n_queens", "puzzle24", "countdown", "polynomial_multiplication"]


@pytest.mark.parametrize("task", EVALUATING_TASKS)
@pytest.mark.parametrize("attack", SIDE_EFFECTS, ids=["os.system", "open"])
def test_an_answer_with_a_side_effect_writes_nothing_and_earns_what_a_wrong_answer_does(logic, tmp_path, task, attack):
    marker = tmp_path / f"pwned-{task}"
    example = puzzle(task)
    verdict = logic.verify(tagged(attack.format(marker=marker)), example)
    assert not marker.exists()
    assert verdict.reward == logic.verify(tagged("no idea"), example).reward <= 0.01
    assert logic.verify(tagged(example.answer), example).reward == 1.0


# time -------------------------------------------------------------------------------------------


@pytest.mark.timeout(120)
@pytest.mark.parametrize("task", ["puzzle24", "n_queens"])  # sympy's parse_expr, and eval
def test_an_answer_that_never_finishes_ends_at_the_limit_with_reward_0_and_the_helper_lives_on(logic, task):
    example = puzzle(task)
    verdict, seconds = timed(logic, tagged("9**9**9**9"), example)
    assert verdict.reward == 0.0 and "timed out after 1 s" in verdict.details["error"]
    assert TIMEOUT_S <= seconds < TIMEOUT_S + GRACE_S
    verdict, seconds = timed(logic, tagged(example.answer), example)
    assert verdict.reward == 1.0 and seconds < 1.0  # the same helper: no second start-up


@pytest.mark.timeout(120)
def test_math_verify_on_a_hostile_answer_is_bounded_too(judge):
    math_verifier, stem_verifier = MathVerifier(judge), StemVerifier(judge)
    number = Example(uid="m1", domain="math", task="test", prompt="?", answer="391")
    for verifier, response in [(math_verifier, "\\boxed{9^{9^{9^{9}}}}"), (stem_verifier, "Answer: 10^{10^{10}}")]:
        verdict, seconds = timed(verifier, response, number)
        assert verdict.reward == 0.0 and "timed out" in verdict.details["error"]
        assert seconds < TIMEOUT_S + GRACE_S
    assert math_verifier.verify("\\boxed{\\frac{782}{2}}", number).reward == 1.0


# the scorer's own data ----------------------------------------------------------------------------


def countdown_forgery(example: Example) -> str:
    """Reads the target out of countdown's scorer frame; uses each number once, so only the value is fake."""
    numbers = "+".join(map(str, example.metadata["entry"]["metadata"]["numbers"]))
    return f"__import__('sys')._getframe(len('abc')).f_locals['entry']['metadata']['target'] + ({numbers})*False"


def puzzle24_forgery(example: Example) -> str:
    numbers = "+".join(re.findall(r"\b\d+\b", example.answer))
    return f"__import__('builtins').len('abcdefghijklmnopqrstuvwx') + ({numbers})*False"


@pytest.mark.parametrize(
    "task, forge, earned",
    [
        ("string_insertion", lambda example: "oracle_answer", 0.0),  # in-process: 0.1
        ("string_insertion", lambda example: "list(entry['answer'])", 0.0),  # 0.1
        ("n_queens", lambda example: "[r.split() for r in valid_solutions[0].split('\\n')]", 0.0),  # 0.5
        (
            "binary_matrix",
            lambda example: "[[int(c) for c in r.split()] for r in oracle_answer.split('\\n')]",
            0.0,
        ),  # 0.1
        ("countdown", countdown_forgery, 0.01),  # 1.0; 0.01 is countdown's score for an unreadable answer
        ("puzzle24", puzzle24_forgery, 0.01),  # 1.0
    ],
)
def test_an_answer_that_names_the_scorer_s_variables_earns_nothing(logic, task, forge, earned):
    example = puzzle(task)
    assert logic.verify(tagged(forge(example)), example).reward == earned
    assert logic.verify(tagged(example.answer), example).reward == 1.0


@pytest.mark.parametrize(
    "task, list_form, credit",
    [
        ("string_insertion", lambda answer: str(list(answer)), 0.1),
        ("n_queens", lambda answer: str([row.split() for row in answer.split("\n")]), 0.5),
        ("binary_matrix", lambda answer: str([[int(c) for c in row.split()] for row in answer.split("\n")]), 0.1),
    ],
)
def test_the_python_list_forms_that_scorers_accept_still_earn_their_partial_credit(logic, task, list_form, credit):
    example = puzzle(task)
    assert logic.verify(tagged(list_form(example.answer)), example).reward == credit


def test_only_the_answer_and_the_entry_reach_the_helper(logic_pool):
    class Recording(ScorerPool):
        def call(self, request, timeout_s):
            self.requests.append(request)
            return logic_pool.call(request, timeout_s)

    recorder = Recording("logic")
    recorder.requests = []
    example = puzzle("leg_counting")
    example.metadata["private"] = "the run's folder, a user's name"
    assert LogicVerifier(recorder).verify(tagged(example.answer), example).reward == 1.0
    (request,) = recorder.requests
    assert request == {
        "op": "logic",
        "task": "leg_counting",
        "answer": example.answer,
        "entry": example.metadata["entry"],
    }


# the sandbox itself -------------------------------------------------------------------------------

PROBE = """
import json, os, socket, sys
places, targets, port = json.loads(sys.argv[1]), json.loads(sys.argv[2]), int(sys.argv[3])
sys.path.extend(sys.argv[4:])
found = {"uid": os.getuid(), "visible": [p for p in places if os.path.exists(p)], "written": []}
for path in targets + [sys.argv[4] + "/prorl-escape"]:
    try:
        with open(path, "w") as handle:
            handle.write("pwned")
        found["written"].append(path)
    except OSError:
        pass
try:
    socket.create_connection(("127.0.0.1", port), timeout=1)
    found["network"] = True
except OSError:
    found["network"] = False
found["environ"] = sorted(os.environ)
found["secrets"] = []
for name in os.listdir("/proc"):
    try:
        found["secrets"].append(open("/proc/%s/environ" % name, "rb").read().decode(errors="ignore"))
    except OSError:
        pass
import math_verify, reasoning_gym, sympy
found["imports"] = True
print(json.dumps(found))
"""


def test_a_helper_sees_only_the_interpreter_and_site_packages_and_can_write_only_its_tmpfs(tmp_path, monkeypatch):
    secret = f"s3cret-{uuid.uuid4().hex}"
    monkeypatch.setenv("PRORL_TEST_SECRET", secret)
    (tmp_path / "secret.txt").write_text(secret)
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0)
    places = [str(PROJECT), str(tmp_path), str(Path.home() / ".ssh"), "/home", "/etc", "/var", os.getcwd(), sys.prefix]
    targets = [str(tmp_path / "escape"), "/usr/prorl-escape", "/prorl-escape", "/tmp/own-tmpfs-is-fine"]
    arguments = [json.dumps(places), json.dumps(targets), str(listener.getsockname()[1])]
    started = HelperSandbox().start(PROBE.encode(), arguments)
    assert started.namespace_pid() is not None  # bwrap reports the sandbox's PID 1 (reading it lets bwrap go on)
    stdout, _ = started.process.communicate(timeout=120)
    started.log.seek(0)
    assert started.process.returncode == 0, started.log.read().decode(errors="replace")[-2000:]
    found = json.loads(stdout)
    assert found["uid"] != 0 and found["imports"]
    assert found["visible"] == []
    assert found["written"] == ["/tmp/own-tmpfs-is-fine"]
    assert found["network"] is False
    with pytest.raises(BlockingIOError):
        listener.accept()
    listener.close()
    assert set(found["environ"]) <= {
        "HOME",
        "LANG",
        "PATH",
        "PWD",
        "PYTHONHASHSEED",
        "OPENBLAS_NUM_THREADS",
        "OMP_NUM_THREADS",
        "MKL_NUM_THREADS",
    }
    assert not any(secret in text for text in found["secrets"])
    assert not any(Path(target).exists() for target in targets[:3])
    assert not any((Path(site) / "prorl-escape").exists() for site in HelperSandbox().site_packages())


def test_without_bwrap_nothing_is_scored_and_the_reason_is_given(tmp_path):
    marker = tmp_path / "ran-unsandboxed"
    missing = HelperSandbox(bwrap=str(tmp_path / "no-such-bwrap"))
    verifier = LogicVerifier(ScorerPool("logic", sandbox=missing))
    example = puzzle("string_insertion")
    verdict = verifier.verify(tagged(f"__import__('os').system('touch {marker}')"), example)
    assert (verdict.reward, verdict.format_ok) == (0.0, True)
    assert "sandbox unavailable" in verdict.details["error"] and "no-such-bwrap" in verdict.details["error"]
    assert not marker.exists()
    assert verifier.verify(tagged(example.answer), example).reward == 0.0  # not even the right answer: unscored
    judgement = MathJudge(pool=ScorerPool("math", sandbox=missing)).equivalent("\\frac{1}{2}", "0.5")
    assert not judgement.equal and "sandbox unavailable" in judgement.error


def test_a_bwrap_that_cannot_start_a_sandbox_makes_the_pool_refuse_with_its_message():
    with tempfile.TemporaryDirectory(prefix="prorl-fake-bwrap-") as folder:
        os.chmod(folder, 0o755)  # a root worker starts the sandbox as nobody, who must reach it
        broken = Path(folder) / "bwrap"
        broken.write_text("#!/bin/sh\necho 'bwrap: No permissions to create new namespace' >&2\nexit 1\n")
        broken.chmod(0o755)
        reply = ScorerPool("math", sandbox=HelperSandbox(bwrap=str(broken))).call(
            {"op": "math", "gold": "1", "answer": "2"}, 5.0
        )
    assert reply.value is None and "No permissions to create new namespace" in reply.error


def helper_processes() -> set[int]:
    """PIDs of every Python running a scorer helper (helpers and their per-call children; not bwrap)."""
    pids = set()
    for entry in Path("/proc").iterdir():
        try:
            arguments = (entry / "cmdline").read_bytes().split(b"\0") if entry.name.isdigit() else []
            if b"/sandbox/helper.py" in arguments and not arguments[0].endswith(b"bwrap"):
                pids.add(int(entry.name))
        except OSError:
            continue
    return pids


def gone(pids: set[int], seconds: float = 3.0) -> bool:
    deadline = time.monotonic() + seconds
    while pids & helper_processes() and time.monotonic() < deadline:
        time.sleep(0.05)
    return not pids & helper_processes()


@pytest.mark.timeout(120)
def test_a_helper_that_stops_answering_is_killed_with_everything_in_it_and_replaced():
    request = {"op": "math", "gold": "\\frac{1}{2}", "answer": "0.5"}
    others = helper_processes()
    pool = ScorerPool("math", size=1, prepare_timeout_s=2.0)
    try:
        assert pool.call(request, 5.0).value["equal"] is True
        (helper,) = helper_processes() - others
        os.kill(helper, signal.SIGSTOP)  # what a stuck helper looks like from outside
        started = time.monotonic()
        reply = pool.call(request, 5.0)
        assert reply.timed_out and "replaced" in reply.error and reply.value is None
        assert time.monotonic() - started < 2.0 + 1.0
        assert gone({helper})
        assert pool.call(request, 5.0).value["equal"] is True  # a fresh helper
    finally:
        pool.close()
    assert gone(helper_processes() - others)


def test_a_task_reasoning_gym_cannot_build_is_a_data_error(logic):
    example = Example(uid="l1", domain="logic", task="composite", prompt="?", answer="1", metadata={"entry": {}})
    with pytest.raises(ValueError, match="composite"):
        logic.verify(tagged("1"), example)


def test_warm_calls_cost_milliseconds_not_a_helper_start(logic, judge):
    example = puzzle("countdown")
    logic.verify(tagged(example.answer), example)
    judge.equivalent("\\frac{1}{2}", "0.5")
    started = time.monotonic()
    for _ in range(10):
        assert logic.verify(tagged(example.answer), example).reward == 1.0
        assert judge.equivalent("\\frac{1}{2}", "2/4").equal
    assert (time.monotonic() - started) / 20 < 0.25  # measured: about 13 ms a call; a helper start is over 1 s


# the hardened evaluators, in this process ---------------------------------------------------------


@pytest.mark.parametrize(
    "source, value",
    [
        ("[['Q', '_'], ['_', 'Q']]", [["Q", "_"], ["_", "Q"]]),
        ("  ['a', 'b']", ["a", "b"]),
        ("0x3a + (0x1f >> 2) - -1", 0x3A + (0x1F >> 2) + 1),
        ("{'a': (1, 2.5)}", {"a": (1, 2.5)}),
    ],
)
def test_literal_eval_with_operators_evaluates_literals_as_eval_does(source, value):
    assert literal_eval_with_operators(source) == value == eval(source.strip())


@pytest.mark.parametrize(
    "source, node",
    [
        ("oracle_answer", "Name"),
        ("len('abc')", "Call"),
        ("().__class__", "Attribute"),
        ("[c for c in 'ab']", "ListComp"),
        ("'abc'[0]", "Subscript"),
        ("lambda: 0", "Lambda"),
    ],
)
def test_literal_eval_with_operators_refuses_names_calls_and_attributes(source, node):
    with pytest.raises(ValueError, match=node):
        literal_eval_with_operators(source)


def test_restricted_parse_expr_reads_what_scorers_need_as_sympy_does():
    x, y = sympy.symbols("x y")
    assert restricted_parse_expr("x**2 + 2*x + 1") == sympy.expand((x + 1) ** 2)
    assert (
        restricted_parse_expr("sqrt(8) + max(x, 2) + sin(y)/3")
        == 2 * sympy.sqrt(2) + sympy.Max(x, 2) + sympy.sin(y) / 3
    )
    assert restricted_parse_expr("10*(8 - 5) - 6") == 24
    assert restricted_parse_expr("2*x", local_dict={"x": y}) == 2 * y
    assert restricted_parse_expr("x + x", evaluate=False) != 2 * x  # math-verify's unevaluated form
    assert restricted_parse_expr("f(x)") == sympy.Function("f")(x)  # an unknown name is an undefined function


@pytest.mark.parametrize(
    "source, message",
    [
        ("__import__('os').system('true')", "quotes"),
        ("Integer(1).__class__", "Attribute"),
        ("x[0]", "Subscript"),
        ("(x)(1)(2)", "plain name"),
    ],
)
def test_restricted_parse_expr_refuses_python_beyond_arithmetic(source, message):
    with pytest.raises(ValueError, match=message):
        restricted_parse_expr(source)


def test_the_descriptor_climb_stops_below_the_first_folder_others_may_not_search(tmp_path):
    from prorl_engine.verifiers.scorer_sandbox import _reachable_from

    closed, project, site = (
        tmp_path / "closed",
        tmp_path / "closed" / "project",
        tmp_path / "closed" / "project" / "site",
    )
    site.mkdir(parents=True)
    closed.chmod(0o700)
    assert _reachable_from(str(site)) == project  # `..` from site reaches project, not closed's other children
    project.chmod(0o700)
    assert _reachable_from(str(site)) == site


@pytest.mark.timeout(300)
@pytest.mark.skipif(os.geteuid() != 0, reason="needs root: binds the environment under a 0700 folder")
def test_an_environment_under_a_folder_nobody_may_search_still_scores_in_the_sandbox():
    """A clone made by `mktemp -d` (0700) puts the virtualenv where nobody cannot bind it by path:
    the helper imports it from an inherited descriptor instead, and scores as usual.

    The environment is bound read-only, outside pytest's temporary folders: another pytest session
    cleaning up old temporary folders must never delete through the mount into the real environment."""
    import subprocess

    closed = Path(tempfile.mkdtemp(prefix="prorl-closed-"))  # 0700
    mount_point = closed / "venv"
    mount_point.mkdir()
    if subprocess.run(["mount", "--bind", sys.prefix, str(mount_point)], capture_output=True).returncode:
        shutil.rmtree(closed)
        pytest.skip("cannot bind-mount here")
    try:
        subprocess.run(["mount", "-o", "remount,bind,ro", str(mount_point)], check=True, capture_output=True)
        script = (
            "from prorl_engine.verifiers.math import MathVerifier\n"
            "from prorl_engine.data.example import Example\n"
            "example = Example(uid='m', domain='math', task='m', prompt='p', answer='0.5')\n"
            "v = MathVerifier().verify('\\\\boxed{\\\\frac{1}{2}}', example)\n"
            "print(v.reward, v.details)\n"
        )
        done = subprocess.run(
            [str(mount_point / "bin" / "python"), "-c", script],
            capture_output=True,
            text=True,
            cwd=PROJECT,
            timeout=240,
        )
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=True)
        mount_point.rmdir()  # an empty folder once unmounted: rmdir, never a recursive delete
        closed.rmdir()
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.startswith("1.0 "), done.stdout
