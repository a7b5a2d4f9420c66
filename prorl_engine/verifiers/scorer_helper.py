"""Runs INSIDE the scorer sandbox: scores model answers with the libraries that parse them.

Started by `scorer_pool.ScorerPool` as

    python -S -s -B -P /sandbox/helper.py PROFILE NPROC SITE_DIR...

under bubblewrap (see scorer_pool.py for what it can see). It is plain Python with no imports from
the project: the sandbox holds only the interpreter, the site-packages folders named on the command
line (read-only) and this file. PROFILE says what to import before the first request ("math":
math-verify and sympy; "logic": reasoning-gym), so a request never pays for imports.

Protocol, one JSON object per line. After its imports the helper writes `ready`. Then per request

    {"op": "math", "gold": str, "answer": str, "timeout_s": float}
    {"op": "logic", "task": str, "answer": str, "entry": {...}, "timeout_s": float}

it first answers `{"started": true}` (or `{"prepare_error": str}` when the request cannot be
scored at all, e.g. a task reasoning-gym cannot build), then `{"value": ..., "error": str | null,
"timed_out": bool}`. It exits when stdin closes.

One fork per request. The helper itself never runs a scorer: it forks a child for each request,
and only the child touches the answer. So nothing an answer does outlives its own call (a scorer
patched, a cache poisoned), and a child that runs past `timeout_s` is killed by SIGKILL while the
helper, with its imports, lives on for the next request. The child gets an RLIMIT_CPU of the
timeout as a second bound, and inherits the sandbox's RLIMIT_AS. Before running anything, the child
closes the protocol pipes, so it can only reply through its own pipe, which the helper reads and
checks; and the helper is not dumpable, so a child cannot ptrace it or read its memory.

Evaluators that read model text, hardened at the source (`harden_evaluators`):

- reasoning-gym 0.1.x: `score_answer` of string_insertion, spiral_matrix, binary_matrix and n_queens
  calls the builtin `eval(answer)` to accept a Python list as an alternative answer form (for partial
  credit), number_sorting calls it on its reference, bitwise_arithmetic on its hexadecimal problem.
  `eval` runs anything: `__import__('os').system(...)` writes files, and it sees the scorer's local
  variables, so the answer `oracle_answer` to string_insertion, or
  `[r.split() for r in valid_solutions[0].split('\\n')]` to n_queens, earns credit without solving
  anything. Every reasoning-gym module gets a module-level `eval` (it shadows the builtin for that
  module's code only) that is `literal_eval_with_operators`: literals (numbers, strings, lists,
  tuples, sets, dicts) combined by arithmetic and bitwise operators, nothing else. No names, calls,
  attributes, subscripts, comprehensions or lambdas, and no builtins. Every use above still works
  (they are all literals, or operators on literals), so right answers and the list forms score
  as before, and names score 0.
- sympy's `parse_expr` (puzzle24, countdown, polynomial_multiplication, simple_integration and
  intermediate_integration in reasoning-gym, math-verify's plain-expression reader, `sympify` of a
  string) evaluates the answer as Python with every builtin function in scope:
  `__import__('sys')._getframe(3).f_locals['entry']['metadata']['target']` read countdown's target
  and scored 1. Every binding of sympy's `parse_expr`, in every loaded module, is replaced by
  `restricted_parse_expr`: the answer may hold no quotes or backslashes; sympy's own tokenizer and
  transformations turn it into Python as before, and that code may hold only numbers, arithmetic,
  comparisons, names that do not start with `_`, and calls of a plain name (or of the undefined
  `Function('f')` that sympy makes of an unknown `f(x)`); it is then evaluated by
  sympy with a namespace of sympy's classes (Integer, Symbol, sin, Add, ...), constants (pi, E, I,
  oo) and a few functions (sqrt, root, cbrt, real_root, Max and Min for max and min), with no
  builtins. Any other name becomes a Symbol or an undefined Function, as sympy's `auto_symbol`
  makes it. A tower of powers still parses and takes forever to evaluate: the timeout ends it.

These are a second wall behind the sandbox (which already keeps an escaped answer away from files,
network and other processes): the restricted evaluators stop an answer from reaching the scorer's
own data, which the sandbox cannot. With them, every reasoning-gym task (105 in 0.1.19) gives the
same score as unhardened to two items' reference answers and to those answers reversed.
"""

import ast
import gc
import json
import os
import resource
import select
import signal
import sys
import time

READY = "ready"
MAX_REPLY_BYTES = 64 * 1024  # a child's reply is a score and a short error; more is not a reply
PROFILES = {"math": ("math_verify",), "logic": ("reasoning_gym",)}
PROTOCOL_FD_NAME = "protocol"

# literal_eval_with_operators -----------------------------------------------------------------

_LITERAL_NODES = (
    ast.Expression,
    ast.Constant,
    ast.List,
    ast.Tuple,
    ast.Set,
    ast.Dict,
    ast.Load,
    ast.UnaryOp,
    ast.BinOp,
    ast.operator,
    ast.unaryop,
)


def literal_eval_with_operators(source, globals=None, locals=None):
    """`eval` for reasoning-gym's modules: a Python literal, or literals joined by operators.

    `[['Q', '_'], ['_', 'Q']]` and `0x3a + (0x1f >> 2)` evaluate as `eval` would; a name, call,
    attribute, subscript, comprehension or lambda raises ValueError naming it. `globals` and
    `locals` are accepted for `eval`'s signature and ignored: nothing is looked up.
    """
    if not isinstance(source, str):
        raise TypeError(f"eval of a {type(source).__name__} is not allowed here, only of text")
    tree = ast.parse(source.strip(" \t"), mode="eval")
    for node in ast.walk(tree):
        if not isinstance(node, _LITERAL_NODES):
            raise ValueError(f"not a literal: {type(node).__name__} is not allowed in an answer")
    return eval(compile(tree, "<answer>", "eval"), {"__builtins__": {}}, {})


# restricted_parse_expr -----------------------------------------------------------------------

_SYMPY_FUNCTIONS = ("sqrt", "root", "cbrt", "real_root")
_CODE_NODES = (
    ast.Expression,
    ast.Constant,
    ast.Name,
    ast.Load,
    ast.BinOp,
    ast.UnaryOp,
    ast.Compare,
    ast.Call,
    ast.keyword,
    ast.Tuple,
    ast.operator,
    ast.unaryop,
    ast.cmpop,
)
_ORIGINALS = {}  # "parse_expr" -> sympy's own, kept here because every other binding is replaced
_DEFAULT = object()


def restricted_parse_expr(s, local_dict=None, transformations=_DEFAULT, global_dict=None, evaluate=True):
    """sympy's `parse_expr` (same signature) for model text: see the module docstring for the rules.

    Raises ValueError when the answer or the code sympy makes of it breaks a rule; sympy's own
    errors (TokenError, SyntaxError, ...) as before.
    """
    from sympy.parsing import sympy_parser

    if not isinstance(s, str):
        raise TypeError(f"expected text to parse, got {type(s).__name__}")
    if any(character in s for character in "'\"\\"):
        raise ValueError("quotes and backslashes are not allowed in an expression")
    if transformations is _DEFAULT:
        transformations = sympy_parser.standard_transformations
    namespace = _safe_namespace(global_dict)
    names = dict(local_dict or {})
    code = sympy_parser.stringify_expr(s, names, namespace, _transformation_list(transformations))
    _check_code(code, names, namespace)
    original = _ORIGINALS.get("parse_expr", sympy_parser.parse_expr)  # not hardened yet: sympy's is the original
    return original(s, local_dict=local_dict, transformations=transformations, global_dict=namespace, evaluate=evaluate)


def _transformation_list(transformations):
    """parse_expr's group names ("all", "implicit") resolved as sympy resolves them."""
    from sympy.parsing.sympy_parser import T

    if transformations == "all":
        return T[:]
    if transformations == "implicit":
        return T[:6]
    return transformations or ()


_NAMESPACES = {}  # the namespace made of sympy's own, built once


def _safe_namespace(global_dict):
    """sympy's classes, constants and a few functions, and no builtins (an empty `__builtins__`
    stops `eval` from adding the real ones). A fresh copy each time: nothing can change the next one."""
    if global_dict is None:
        if "sympy" not in _NAMESPACES:
            everything = {}
            exec("from sympy import *", everything)
            _NAMESPACES["sympy"] = _filtered(everything)
        return dict(_NAMESPACES["sympy"])
    return _filtered(global_dict)


def _filtered(global_dict):
    """The entries of `global_dict` that are sympy objects or classes, plus the allowed functions."""
    import sympy
    from sympy import Basic

    namespace = {"__builtins__": {}}
    for name, value in global_dict.items():
        if name.startswith("_"):
            continue
        if isinstance(value, Basic) or (isinstance(value, type) and issubclass(value, Basic)):
            namespace[name] = value
    for name in _SYMPY_FUNCTIONS:
        namespace[name] = getattr(sympy, name)
    namespace["max"], namespace["min"] = sympy.Max, sympy.Min
    return namespace


def _check_code(code, names, namespace):
    """ValueError unless the Python that sympy made of an answer keeps to the allowed forms."""
    for node in ast.walk(ast.parse(code, mode="eval")):
        if not isinstance(node, _CODE_NODES):
            raise ValueError(f"{type(node).__name__} is not allowed in an expression")
        if isinstance(node, ast.Name) and (
            node.id.startswith("_") or (node.id not in names and node.id not in namespace)
        ):
            raise ValueError(f"the name {node.id!r} is not allowed in an expression")
        if isinstance(node, ast.Call) and not (isinstance(node.func, ast.Name) or _is_undefined_function(node.func)):
            raise ValueError("only a plain name may be called in an expression")
        if isinstance(node, ast.keyword) and (node.arg is None or node.arg.startswith("_")):
            raise ValueError("this keyword argument is not allowed in an expression")


def _is_undefined_function(node):
    """`Function('f')`: what sympy's auto_symbol makes of an unknown name that is called, `f(x)`."""
    return (
        isinstance(node, ast.Call)
        and isinstance(node.func, ast.Name)
        and node.func.id == "Function"
        and len(node.args) == 1
        and not node.keywords
        and isinstance(node.args[0], ast.Constant)
        and isinstance(node.args[0].value, str)
    )


def harden_evaluators():
    """Replace `eval` in every reasoning-gym module and sympy's `parse_expr` everywhere it is bound.

    Called after the profile's imports and again after building a task's scorer (a task may import
    modules of its own); cheap, and idempotent.
    """
    if "sympy" in sys.modules:
        from sympy.parsing import sympy_parser

        _ORIGINALS.setdefault("parse_expr", sympy_parser.parse_expr)
    original = _ORIGINALS.get("parse_expr")
    own = globals()
    for name, module in list(sys.modules.items()):
        namespace = getattr(module, "__dict__", None)
        if not isinstance(namespace, dict) or namespace is own:
            continue
        if original is not None:
            for key, value in list(namespace.items()):
                if value is original:
                    namespace[key] = restricted_parse_expr
        if name == "reasoning_gym" or name.startswith("reasoning_gym."):
            namespace["eval"] = literal_eval_with_operators


# scoring -------------------------------------------------------------------------------------


def compare_math(gold, answer):
    """math-verify's verdict on `answer` against the reference `gold`, both LaTeX without `$`."""
    from math_verify import parse, verify

    gold_parsed = parse(_boxed(gold), parsing_timeout=None)
    answer_parsed = parse(_boxed(answer), parsing_timeout=None)
    if not gold_parsed:
        return {"equal": False, "error": f"the reference answer {gold!r} cannot be parsed"}
    if not answer_parsed:
        return {"equal": False, "error": "the answer cannot be parsed"}
    return {"equal": bool(verify(gold_parsed, answer_parsed, timeout_seconds=None)), "error": None}


def _boxed(latex):
    """Wrap a bare answer in `\\boxed{}` so math-verify reads all of it as one expression."""
    return latex if "\\boxed" in latex else f"\\boxed{{{latex}}}"


_SCORERS = {}


def logic_scorer(task):
    """reasoning-gym's `score_answer` for `task`, built once per task in the helper (not the child)."""
    if task not in _SCORERS:
        import reasoning_gym

        _SCORERS[task] = reasoning_gym.get_score_answer_fn(task)
        harden_evaluators()
    return _SCORERS[task]


def prepare(request):
    """The request's scoring job as a function of no arguments, to run in a child; raises on bad requests."""
    op = request["op"]
    answer = str(request["answer"])
    if op == "math":
        gold = str(request["gold"])
        return lambda: compare_math(gold, answer)
    if op == "logic":
        scorer = logic_scorer(str(request["task"]))
        entry = request["entry"]
        return lambda: float(scorer(answer, entry))
    raise ValueError(f"unknown op {op!r}")


def run_in_child(job, timeout_s, protocol_fds):
    """Fork, run `job` in the child, and return its reply; kill the child at `timeout_s`."""
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: it never returns
        os.close(read_fd)
        _child(job, write_fd, timeout_s, protocol_fds)
    os.close(write_fd)
    data = _read_until(read_fd, time.monotonic() + timeout_s)
    os.close(read_fd)
    timed_out = data is None
    if timed_out:
        _kill(pid)
    _, status = os.waitpid(pid, 0)
    if timed_out:
        return {"value": None, "error": f"timed out after {timeout_s:g} s", "timed_out": True}
    try:
        reply = json.loads(data)
        return {"value": reply["value"], "error": reply["error"], "timed_out": False}
    except (ValueError, KeyError, TypeError):
        return {"value": None, "error": f"the scorer ended without a reply ({_ending(status)})", "timed_out": False}


def _child(job, write_fd, timeout_s, protocol_fds):
    """Run the job with the protocol pipes closed and the CPU time bounded; reply and exit."""
    try:
        os.setpgid(0, 0)  # so the helper can kill anything it starts along with it
        for fd in protocol_fds:
            os.close(fd)
        seconds = int(timeout_s) + 1
        resource.setrlimit(resource.RLIMIT_CPU, (seconds, seconds))
        reply = {"value": job(), "error": None}
    except BaseException as error:  # noqa: BLE001 - any failure is a reply with its reason
        reply = {"value": None, "error": f"{type(error).__name__}: {error}"[:500]}
    try:
        data = json.dumps(reply).encode()
    except (TypeError, ValueError):
        data = json.dumps({"value": None, "error": "the scorer's result is not a number"}).encode()
    view = memoryview(data)
    while view:
        view = view[os.write(write_fd, view) :]
    os._exit(0)


def _read_until(fd, deadline):
    """Everything written to `fd` until it closes, or None at the deadline; at most MAX_REPLY_BYTES."""
    chunks = []
    size = 0
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0 or not select.select([fd], [], [], remaining)[0]:
            return None
        chunk = os.read(fd, 65536)
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)
        size += len(chunk)
        if size > MAX_REPLY_BYTES:
            return b""


def _kill(pid):
    """SIGKILL the child's process group (the child made it), and the child itself."""
    for kill, target in ((os.killpg, pid), (os.kill, pid)):
        try:
            kill(target, signal.SIGKILL)
        except ProcessLookupError:
            pass


def _ending(status):
    if os.WIFSIGNALED(status):
        return f"signal {signal.Signals(os.WTERMSIG(status)).name}"
    return f"exit status {os.waitstatus_to_exitcode(status)}"


def serve(requests, protocol, protocol_fds):
    """Answer requests until stdin closes: an acknowledgement, then the child's reply."""
    for line in requests:
        try:
            request = json.loads(line)
            timeout_s = float(request["timeout_s"])
            job = prepare(request)
        except Exception as error:  # noqa: BLE001 - a request that cannot be scored says why
            _write(protocol, {"prepare_error": f"{type(error).__name__}: {error}"[:500]})
            continue
        _write(protocol, {"started": True})
        try:
            reply = run_in_child(job, timeout_s, protocol_fds)
        except OSError as error:  # fork refused (the process limit): this call is lost, not the helper
            reply = {"value": None, "error": f"cannot start the scorer: {error}", "timed_out": False}
        _write(protocol, reply)


def _write(protocol, message):
    protocol.write(json.dumps(message) + "\n")
    protocol.flush()


# One comparison of each kind of answer: math-verify and sympy import modules on first use (units,
# sets, matrices, ...), and an import in a child is lost with it (0.4 s a call for polynomials).
MATH_WARM_UP = (
    ("1", "\\frac{2}{2}"),
    ("x^2 + 2x + 1", "(x+1)^2"),
    ("\\{1, 2\\}", "\\{2, 1\\}"),
    ("[0, 1)", "[0,1)"),
    ("5", "x = 5"),
    ("\\sqrt{2}", "2^{1/2}"),
    ("\\begin{pmatrix}1 \\\\ 2\\end{pmatrix}", "\\begin{pmatrix}1 \\\\ 2\\end{pmatrix}"),
    ("50\\%", "0.5"),
    ("\\frac{\\pi}{3}", "60^\\circ"),
    ("x \\le 3", "x \\leq 3"),
    ("\\sin x", "\\sin(x)"),
    ("1.5", "3/2"),
    ("\\text{(A)}", "A"),
    ("2+3i", "3i+2"),
    ("e^{x}", "\\exp(x)"),
    ("\\log_2 8", "3"),
)


def _warm_up(profile):
    """Do once what every request would otherwise pay for: imports, parser tables, scorer modules."""
    for module in PROFILES[profile]:
        __import__(module)
    harden_evaluators()
    if profile == "math":
        for gold, answer in MATH_WARM_UP:
            compare_math(gold, answer)


PR_SET_DUMPABLE = 4  # prctl(2)


def not_dumpable():
    """Make this process and its children non-dumpable: a child cannot ptrace the helper or read its
    memory through /proc, so even an answer that escaped the evaluators cannot change later replies."""
    import ctypes

    if ctypes.CDLL(None, use_errno=True).prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_DUMPABLE, 0) failed")


def main():
    """Limit processes, import the profile, say ready, serve. stdout and stderr go to /dev/null."""
    profile, processes, site_dirs = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
    resource.setrlimit(resource.RLIMIT_NPROC, (processes, processes))
    not_dumpable()
    sys.path.extend(site_dirs)
    # The protocol gets private copies of stdin and stdout; fds 0-2 then point at /dev/null, so a
    # stray print from sympy, ANTLR or a scorer can never corrupt a reply, and the child that
    # inherits them can read or write nothing through them.
    requests = os.fdopen(os.dup(0), "r", encoding="utf-8")
    protocol = os.fdopen(os.dup(1), "w", encoding="utf-8")
    null = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1):
        os.dup2(null, fd)
    sys.stdout = sys.stderr
    import logging

    logging.disable(logging.WARNING)
    _warm_up(profile)
    gc.freeze()  # the imported modules' objects stay out of the children's garbage collections
    os.dup2(null, 2)  # startup errors went to the pool's log; from here on, nothing is written
    protocol.write(READY + "\n")
    protocol.flush()
    serve(requests, protocol, (requests.fileno(), protocol.fileno()))


if __name__ == "__main__":
    main()
