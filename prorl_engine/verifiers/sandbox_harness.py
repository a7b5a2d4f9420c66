"""Runs INSIDE the sandbox, under its Python: applies the process limit, then runs the program once.

Invoked by `Sandbox` as `python3 -s -B /sandbox/harness.py MODE NPROC [FN_NAME]`, with the program
at /sandbox/main.py. It is plain Python 3 with no imports from the project, because the sandbox
sees only the system's /usr.

RLIMIT_NPROC is set here rather than before bwrap: the kernel counts processes per user namespace,
so set after bwrap made the sandbox's own namespace, the limit counts only the sandbox's processes,
not every process of the worker's user.

MODE "stdio": runs main.py as `__main__` with the test's input on stdin; the caller compares stdout.
MODE "call":  stdin holds a JSON array of arguments. main.py is run as a module, then FN_NAME (a
              top-level function, or a method of a top-level `Solution` class) is called with them
              and the JSON of its return value is written to the original stdout. Whatever the
              program prints itself goes to stderr, so it cannot mix with the result.

A program that does not compile exits with COMPILE_ERROR_EXIT before any of it runs.
"""

import json
import os
import resource
import sys

COMPILE_ERROR_EXIT = 86
PROGRAM = "/sandbox/main.py"


def limit_processes(count):
    resource.setrlimit(resource.RLIMIT_NPROC, (count, count))


def compile_program():
    with open(PROGRAM, encoding="utf-8") as handle:
        source = handle.read()
    try:
        return compile(source, "main.py", "exec", dont_inherit=True)
    except (SyntaxError, ValueError, OverflowError, MemoryError, RecursionError) as error:
        sys.stderr.write(f"compile error: {type(error).__name__}: {error}\n")
        sys.stderr.flush()
        os._exit(COMPILE_ERROR_EXIT)


def run_stdio(code):
    sys.argv = ["main.py"]
    exec(code, {"__name__": "__main__", "__file__": PROGRAM, "__builtins__": __builtins__})


def run_call(code, fn_name):
    args = json.loads(sys.stdin.read())
    empty = os.open(os.devnull, os.O_RDONLY)
    os.dup2(empty, 0)
    result_fd = os.dup(1)
    os.dup2(2, 1)  # the program's own prints go to stderr
    namespace = {"__name__": "solution", "__file__": PROGRAM, "__builtins__": __builtins__}
    exec(code, namespace)
    result = find_function(namespace, fn_name)(*args)
    os.write(result_fd, json.dumps(result).encode("utf-8"))


def find_function(namespace, fn_name):
    if fn_name in namespace:
        return namespace[fn_name]
    return getattr(namespace["Solution"](), fn_name)


def main():
    mode, nproc = sys.argv[1], int(sys.argv[2])
    limit_processes(nproc)
    del sys.path[0]  # the harness's folder: the program must not import it
    code = compile_program()
    if mode == "stdio":
        run_stdio(code)
    else:
        run_call(code, sys.argv[3])


if __name__ == "__main__":
    main()
