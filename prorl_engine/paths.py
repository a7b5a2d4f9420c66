"""Which model folders and data files a run may use, when it runs on someone's behalf.

A person at a terminal (`prorl train`) may name any folder or file: the engine checks only that it
is there. A service that trains for other people (the studio's worker) passes a `PathPolicy` to
`RunConfig.validate` instead, and then paths are data the person owns:

- a plain `model_path` must be a folder under one of `model_roots` (or the build root), or one that
  `grants_model` allows (the caller's registry: a registered model, a checkpoint the person may fork);
- `tiny:NAME` / `base:NAME` may build only inside `build_root`: NAME must be a relative folder name
  without `..` (an absolute NAME, an escape or a bare `tiny:` is refused). NAME means what it means
  at a terminal started in `base_dir` when that lies inside the build root (`tiny:var/models/x`
  with the default folders); an existing model that NAME names under the model roots is used as it
  is, read-only (the committed demo model); otherwise the model is built in `build_root / NAME`;
- a `file` data source's `path` must be a file under one of `data_roots`, or one `grants_data` allows.

Relative paths are read from `base_dir`, never from the process's working directory; `~` is not
expanded. A path the person may not use gets exactly the message of a path that does not exist
(`MODEL_REFUSED`, `DATA_REFUSED`), so the answer never says what exists on the server. With
`check_disk` false (models and data that live only on the GPU workers), the caller's own machine
is not consulted: a permitted path is trusted until the worker, which checks its disk, starts the run.
"""

from __future__ import annotations

import copy
import dataclasses
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path, PurePath
from typing import Protocol, TypeVar

MODEL_REFUSED = (
    "no model you may use is at this path: choose a registered model, a checkpoint of a run you "
    "may fork, a folder under the allowed model roots, or tiny:NAME / base:NAME"
)
DATA_REFUSED = (
    "path: no data file you may use is at this path: choose a registered or uploaded data set, "
    "or a file under the allowed data roots"
)

Grant = Callable[[Path], bool]


class _Source(Protocol):
    """What `resolve_data` reads of a data source (prorl_engine.data.spec.DataSource, which imports this module)."""

    source: str
    path: str | None


class _Config(Protocol):
    """What `resolve` reads of a run config (prorl_engine.config.RunConfig, which imports this module)."""

    model_path: str
    data: list


SourceT = TypeVar("SourceT", bound=_Source)
ConfigT = TypeVar("ConfigT", bound=_Config)


@dataclass(frozen=True)
class LocatedModel:
    """A model folder a policy allows; with `builder`, the builder makes the model there on first use."""

    folder: Path
    builder: str | None = None

    @property
    def model_path(self) -> str:
        """The absolute `model_path` the engine trains from."""
        return f"{self.builder}:{self.folder}" if self.builder else str(self.folder)


def _never(_: Path) -> bool:
    return False


@dataclass(frozen=True)
class PathPolicy:
    """Where one person's run may read models and data and build models (see the module docstring).

    Roots are absolute folders; a root may itself be a model folder. `grants_model(folder)` and
    `grants_data(file)` receive the absolute, normalised path the person named.
    """

    base_dir: Path
    build_root: Path
    model_roots: tuple[Path, ...] = ()
    data_roots: tuple[Path, ...] = ()
    grants_model: Grant = _never
    grants_data: Grant = _never
    check_disk: bool = True

    def __post_init__(self) -> None:
        for name in ("base_dir", "build_root"):
            if not Path(getattr(self, name)).is_absolute():
                raise ValueError(f"PathPolicy.{name} must be an absolute folder, not {getattr(self, name)!s}")
        for root in (*self.model_roots, *self.data_roots):
            if not Path(root).is_absolute():
                raise ValueError(f"PathPolicy roots must be absolute folders, not {root!s}")

    # --- models ------------------------------------------------------------------------------
    def locate_model(self, model_path: str, builders: Iterable[str]) -> LocatedModel | None:
        """Where the model of `model_path` is (and whether a builder makes it there), or None when
        the person may not use it (or, with check_disk, no model is there)."""
        builder, sep, name = model_path.partition(":")
        if sep and builder in set(builders):
            return self._locate_build(builder, name)
        folder = self.absolute(model_path)
        if folder is None or not self._may_read_model(folder):
            return None
        if self.check_disk and not _is_file(folder / "config.json"):
            return None
        return LocatedModel(folder)

    def _locate_build(self, builder: str, name: str) -> LocatedModel | None:
        relative = _relative_name(name)
        if relative is None:
            return None
        as_at_a_terminal = Path(os.path.normpath(self.base_dir / relative))
        if _inside(as_at_a_terminal, (self.build_root,)):
            return LocatedModel(as_at_a_terminal, builder)
        if self._may_read_model(as_at_a_terminal) and _is_file(as_at_a_terminal / "config.json"):
            return LocatedModel(as_at_a_terminal)  # already built where the person may only read: used as it is
        return LocatedModel(Path(os.path.normpath(self.build_root / relative)), builder)

    def _may_read_model(self, folder: Path) -> bool:
        return _inside(folder, (*self.model_roots, self.build_root)) or self.grants_model(folder)

    # --- data --------------------------------------------------------------------------------
    def locate_data(self, path: str) -> str | None:
        """The absolute path of a data file the person may use, or None (see `DATA_REFUSED`)."""
        file = self.absolute(path)
        if file is None or not (_inside(file, self.data_roots) or self.grants_data(file)):
            return None
        if self.check_disk and not _is_file(file):
            return None
        return str(file)

    # --- the worker's config -----------------------------------------------------------------
    def resolve(self, config: ConfigT, builders: Iterable[str]) -> ConfigT:
        """`config` with its model and data paths replaced by the absolute ones this policy allows,
        so the engine reads (and builds) exactly there whatever its working directory. Raises
        ValueError for a path the policy refuses (validate first: it names the field)."""
        located = self.locate_model(config.model_path, builders)
        if located is None:
            raise ValueError(f"model_path: {MODEL_REFUSED}")
        return dataclasses.replace(config, model_path=located.model_path, data=self.resolve_data(config.data))

    def resolve_data(self, data: list[SourceT]) -> list[SourceT]:
        """The data mix with each file source's path replaced by the absolute one this policy allows
        (new sources; `data` is unchanged). Raises ValueError naming the first source (`data[i]: ...`)
        whose file it refuses."""
        resolved = []
        for index, source in enumerate(data):
            source = copy.copy(source)  # a copy keeps how the source was written (DataSource.to_dict)
            if source.source == "file":
                path = self.locate_data(str(source.path or ""))
                if path is None:
                    raise ValueError(f"data[{index}]: {DATA_REFUSED}")
                source.path = path
            resolved.append(source)
        return resolved

    # ------------------------------------------------------------------------------------------
    def absolute(self, path: str) -> Path | None:
        """`path` read from base_dir and normalised, or None for what no permitted path can be:
        empty, with a NUL, with a `..` part (under a symlinked folder `..` is not where it looks)."""
        if not path or "\0" in path or ".." in PurePath(path).parts:
            return None
        return Path(os.path.normpath(self.base_dir / path))


def _relative_name(name: str) -> PurePath | None:
    """A builder's folder name: non-empty, relative, no `..` part, no NUL."""
    if not name or "\0" in name:
        return None
    relative = PurePath(name)
    if relative.is_absolute() or ".." in relative.parts or relative == PurePath("."):
        return None
    return relative


def _is_file(path: Path) -> bool:
    """`path.is_file()`, False where the OS refuses to look (a name too long, a permission)."""
    try:
        return path.is_file()
    except (OSError, ValueError):
        return False


def _inside(path: Path, roots: Iterable[Path]) -> bool:
    """Is the (normalised, absolute) `path` one of `roots` or below one?"""
    return any(path.is_relative_to(os.path.normpath(root)) for root in roots)
