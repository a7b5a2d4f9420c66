"""The house rules of ARCHITECTURE.md that code can check: who may import whom.

The import graph is read from the source (every `import` statement, at module level, inside
functions and under `if TYPE_CHECKING:`), so an import hidden inside a function counts like any other.
Each rule has a self-test on a small package written for it, proving the check sees a violation.
"""

from __future__ import annotations

import ast
import graphlib
import pkgutil
from pathlib import Path

import pytest

from prorl_engine.builders import MODEL_BUILDERS
from prorl_engine.cli import BUILT_ON_THE_ENGINE

ROOT = Path(__file__).resolve().parents[2]
ENGINE = ROOT / "prorl_engine"
FORBIDDEN = {"django", "celery", "channels", "redis", "channels_redis", "daphne"}
VLLM_HOME = ENGINE / "vllm_backend.py"  # the one module that may import vLLM, and only inside functions
PACKAGES = ("prorl_engine", "studio", "worker")
BUILT_ON_THE_CORE = ("prorl_engine.demo", "prorl_engine.ablations")  # the core is the rest of prorl_engine


def imported_roots(path: Path) -> set[str]:
    """The top-level packages `path` imports by absolute imports."""
    roots = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            roots.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            roots.add(node.module.split(".")[0])
    return roots


def module_files(root: Path, packages: tuple[str, ...]) -> dict[str, Path]:
    """Dotted module name -> file, for every .py file of `packages` under `root` (a package is its
    __init__.py). Django's generated migrations are left out."""
    files = {}
    for package in packages:
        for path in sorted((root / package).rglob("*.py")):
            if "migrations" in path.relative_to(root).parts:
                continue
            parts = list(path.relative_to(root).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            files[".".join(parts)] = path
    return files


def imported_names(path: Path, module: str) -> set[str]:
    """Every dotted name `module` (in `path`) imports, relative imports made absolute; for
    `from a import b` both `a.b` (b may be a module) and `a`."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1] + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names)
    return names


def import_graph(root: Path, packages: tuple[str, ...] = PACKAGES) -> dict[str, set[str]]:
    """Module -> the modules of `packages` it imports (each name as the most specific module it names)."""
    files = module_files(root, packages)

    def known(name: str) -> str | None:
        while name and name not in files:
            name = name.rpartition(".")[0]
        return name or None

    graph = {}
    for module, path in files.items():
        targets = {known(name) for name in imported_names(path, module)}
        graph[module] = {target for target in targets if target is not None and target != module}
    return graph


def import_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of the graph (a module, what it imports, ..., the module again), or None."""
    try:
        graphlib.TopologicalSorter(graph).prepare()
    except graphlib.CycleError as exc:
        return list(reversed(exc.args[1]))  # graphlib lists the cycle against the import direction
    return None


def imports_into(
    graph: dict[str, set[str]], sources: tuple[str, ...], targets: tuple[str, ...], exempt: tuple[str, ...] = ()
) -> dict[str, list[str]]:
    """Modules under `sources` (and not under `exempt`) that import modules under `targets`."""

    def under(module: str, prefixes: tuple[str, ...]) -> bool:
        return any(module == prefix or module.startswith(prefix + ".") for prefix in prefixes)

    return {
        module: sorted(t for t in imported if under(t, targets))
        for module, imported in graph.items()
        if under(module, sources) and not under(module, exempt) and any(under(t, targets) for t in imported)
    }


def write_package(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return root


# --- the rules ------------------------------------------------------------------------------------
def test_the_engine_imports_nothing_from_the_web_stack():
    offenders = {
        str(path.relative_to(ENGINE)): sorted(imported_roots(path) & FORBIDDEN)
        for path in ENGINE.rglob("*.py")
        if imported_roots(path) & FORBIDDEN
    }
    assert offenders == {}


def module_level_roots(path: Path) -> set[str]:
    """The top-level packages `path` imports outside any function (what importing it imports)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    inside = {
        id(inner)
        for node in ast.walk(tree)
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
        for inner in ast.walk(node)
    }
    return {root for node in ast.walk(tree) if id(node) not in inside for root in imported_roots_of(node)}


def imported_roots_of(node: ast.AST) -> set[str]:
    if isinstance(node, ast.Import):
        return {alias.name.split(".")[0] for alias in node.names}
    if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
        return {node.module.split(".")[0]}
    return set()


def test_only_the_vllm_backend_imports_vllm_and_only_when_used():
    """The engine without vLLM installed still trains with hf: nothing else names vllm, and the
    backend imports it inside its functions, never when the module is imported."""
    importers = sorted(
        str(path.relative_to(ROOT)) for path in (ROOT / "prorl_engine").rglob("*.py") if "vllm" in imported_roots(path)
    )
    assert importers == ["prorl_engine/vllm_backend.py"]
    assert "vllm" not in module_level_roots(VLLM_HOME)


def test_no_module_imports_one_that_imports_it_back():
    assert import_cycle(import_graph(ROOT)) is None


def test_the_engine_core_imports_nothing_built_on_it():
    """The demo base model and the ablations import the core, never the reverse."""
    graph = import_graph(ROOT, ("prorl_engine",))
    assert imports_into(graph, ("prorl_engine",), BUILT_ON_THE_CORE, exempt=BUILT_ON_THE_CORE) == {}


def test_the_studio_never_imports_the_worker():
    """The studio enqueues by task name (Celery `send_task`); the worker may import studio.models."""
    assert imports_into(import_graph(ROOT), ("studio",), ("worker",)) == {}


def test_the_engine_imports_neither_the_studio_nor_the_worker():
    assert imports_into(import_graph(ROOT), ("prorl_engine",), ("studio", "worker")) == {}


@pytest.mark.parametrize("name", [*MODEL_BUILDERS.values(), *BUILT_ON_THE_ENGINE.values()])
def test_what_the_core_names_instead_of_importing_exists(name):
    """The model builders and the CLI's commands built on the engine are named "module:function"."""
    assert callable(pkgutil.resolve_name(name))


# --- each check sees a violation -------------------------------------------------------------------
def test_the_web_stack_check_sees_a_forbidden_import(tmp_path):
    sample = tmp_path / "bad.py"
    sample.write_text("def f():\n    from django.conf import settings\n    import redis.asyncio\n")
    assert imported_roots(sample) & FORBIDDEN == {"django", "redis"}


def test_the_lazy_import_check_sees_a_module_level_import(tmp_path):
    sample = tmp_path / "backend.py"
    sample.write_text("import vllm\n\ndef f():\n    from torch import nn\n")
    assert module_level_roots(sample) == {"vllm"}


def test_the_cycle_check_sees_a_circle_hidden_inside_a_function(tmp_path):
    root = write_package(
        tmp_path,
        {
            "prorl_engine/__init__.py": "",
            "prorl_engine/config.py": "from prorl_engine.data.sources import load\n",
            "prorl_engine/data/__init__.py": "",
            "prorl_engine/data/sources.py": "def load():\n    from prorl_engine.config import RunConfig\n",
            "prorl_engine/modeling.py": "from .config import RunConfig\n",  # relative: counted, not a circle
        },
    )
    graph = import_graph(root, ("prorl_engine",))
    assert graph["prorl_engine.modeling"] == {"prorl_engine.config"}
    assert import_cycle(graph) == ["prorl_engine.config", "prorl_engine.data.sources", "prorl_engine.config"]


def test_the_cycle_check_sees_a_circle_of_type_only_imports(tmp_path):
    root = write_package(
        tmp_path,
        {
            "prorl_engine/__init__.py": "",
            "prorl_engine/paths.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n"
            "    from prorl_engine.config import RunConfig\n",
            "prorl_engine/config.py": "from prorl_engine import paths\n",
        },
    )
    assert sorted(import_cycle(import_graph(root, ("prorl_engine",)))[:2]) == [
        "prorl_engine.config",
        "prorl_engine.paths",
    ]


def test_the_core_check_sees_the_core_importing_the_demo(tmp_path):
    root = write_package(
        tmp_path,
        {
            "prorl_engine/__init__.py": "",
            "prorl_engine/modeling.py": "def build():\n    from prorl_engine.demo.build import build_base_model\n",
            "prorl_engine/demo/__init__.py": "",
            "prorl_engine/demo/build.py": "from prorl_engine import modeling\n",
            "prorl_engine/ablations/__init__.py": "from prorl_engine.demo import build\n",  # built on the core: allowed
        },
    )
    graph = import_graph(root, ("prorl_engine",))
    assert imports_into(graph, ("prorl_engine",), BUILT_ON_THE_CORE, exempt=BUILT_ON_THE_CORE) == {
        "prorl_engine.modeling": ["prorl_engine.demo.build"]
    }


def test_the_studio_check_sees_the_studio_importing_the_worker(tmp_path):
    root = write_package(
        tmp_path,
        {
            "studio/__init__.py": "",
            "studio/models.py": "",
            "studio/launch.py": "def launch(run):\n    from worker.tasks import train_run\n",
            "studio/migrations/0001_initial.py": "import worker\n",  # generated: not read
            "worker/__init__.py": "",
            "worker/tasks.py": "from studio.models import Run\n",  # allowed
            "prorl_engine/__init__.py": "",
        },
    )
    assert imports_into(import_graph(root), ("studio",), ("worker",)) == {"studio.launch": ["worker.tasks"]}
