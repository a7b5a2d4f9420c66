"""The helper process behind `MathJudge`: compares answers with math-verify, one JSON line at a time.

Run as `python -m prorl_engine.verifiers.equivalence_worker`. Each stdin line is a request
`{"gold": str, "answer": str}`; each stdout line the reply `{"equal": bool, "error": str | null}`,
after a first line "ready" once math-verify is imported.
It exits when stdin closes, so it never outlives the process that started it.

math-verify's own timeouts (signal.alarm) are switched off: they only work in a main thread and
cannot interrupt a long C-level computation anyway (`9^{9^{9}}` spends minutes in one big-integer
power). The parent bounds the time instead, by killing this process.
"""

from __future__ import annotations

import json
import logging
import os
import resource
import sys

READY = "ready"
MEMORY_LIMIT_BYTES = 2 * 1024**3  # sympy on a hostile expression gets MemoryError, not the machine's RAM


def compare(gold: str, answer: str) -> dict:
    """math-verify's verdict on `answer` against the reference `gold`, both LaTeX without `$`."""
    from math_verify import parse, verify

    gold_parsed = parse(_boxed(gold), parsing_timeout=None)
    answer_parsed = parse(_boxed(answer), parsing_timeout=None)
    if not gold_parsed:
        return {"equal": False, "error": f"the reference answer {gold!r} cannot be parsed"}
    if not answer_parsed:
        return {"equal": False, "error": "the answer cannot be parsed"}
    return {"equal": bool(verify(gold_parsed, answer_parsed, timeout_seconds=None)), "error": None}


def _boxed(latex: str) -> str:
    """Wrap a bare answer in `\\boxed{}` so math-verify reads all of it as one expression."""
    return latex if "\\boxed" in latex else f"\\boxed{{{latex}}}"


def serve(stdin, stdout) -> None:
    """Answer requests until stdin closes."""
    for line in stdin:
        try:
            request = json.loads(line)
            reply = compare(str(request["gold"]), str(request["answer"]))
        except Exception as error:  # noqa: BLE001 - any failure is a "not equal" with its reason
            reply = {"equal": False, "error": f"{type(error).__name__}: {error}"[:500]}
        stdout.write(json.dumps(reply) + "\n")
        stdout.flush()


def main() -> None:
    """Limit memory, import math-verify, say "ready" (startup is not a comparison's time), serve."""
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT_BYTES, MEMORY_LIMIT_BYTES))
    logging.disable(logging.WARNING)
    # The protocol gets a private copy of stdout; fd 1 and sys.stdout go to stderr, so a stray print
    # from sympy, ANTLR or math-verify can never corrupt a reply line.
    protocol = os.fdopen(os.dup(1), "w", encoding="utf-8")
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    compare("1", "\\frac{2}{2}")  # imports sympy and builds the LaTeX parser: the slow part of starting
    protocol.write(READY + "\n")
    protocol.flush()
    serve(sys.stdin, protocol)


if __name__ == "__main__":
    main()
