"""Which models and data a person's runs may use: the studio's side of prorl_engine/paths.py.

A run of Bob's may use
- a model or data set registered for him or for a team he is in (`RegisteredModel`,
  `RegisteredDataset`: staff register server paths, people upload data files);
- a checkpoint of a run he may fork (`can_fork_run`), as its `model_path`;
- in a fork, the base model and data files of the run it forks (it goes on training on them);
- a folder or file under the operator's roots (settings MODEL_ROOTS, DATA_ROOTS), and
  `tiny:NAME` / `base:NAME` models built under settings MODEL_BUILD_DIR.
Anything else gets the message of a path that does not exist. The web host asks these rules for
the form, the YAML import, the preview and the API; `launch_run` asks again before it stores a run,
and the worker asks again for the run's owner before it trains, so no route around them stores or
trains a config that breaks them.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser, AnonymousUser
from django.db.models import Q, QuerySet

from prorl_engine.paths import PathPolicy
from studio.models import Checkpoint, Membership, RegisteredDataset, RegisteredModel, RegistryEntry, Run
from studio.permissions import can_fork_run, teams_for_runs_of

User = AbstractBaseUser | AnonymousUser


def operator_policy(check_disk: bool | None = None) -> PathPolicy:
    """The roots the operator opens to everyone, and nothing granted to anyone in particular."""
    return PathPolicy(
        base_dir=Path(settings.BASE_DIR),
        build_root=Path(os.path.abspath(settings.MODEL_BUILD_DIR)),
        model_roots=tuple(settings.MODEL_ROOTS),
        data_roots=tuple(settings.DATA_ROOTS),
        check_disk=settings.CHECK_PATHS_ON_WEB if check_disk is None else check_disk,
    )


def path_policy_for(user: User, *, fork_parent: Run | None = None, check_disk: bool | None = None) -> PathPolicy:
    """What a run of `user`'s may use; `fork_parent`: the run it forks, whose base model and data
    files it may keep. `check_disk` None: as settings.CHECK_PATHS_ON_WEB says (the web host)."""
    policy = operator_policy(check_disk)
    parent = fork_parent if fork_parent is not None and can_fork_run(user, fork_parent) else None
    inherited_model, inherited_data = _inherited_paths(policy, parent)
    return dataclasses.replace(
        policy,
        grants_model=lambda folder: folder in inherited_model or _may_use_model(user, folder),
        grants_data=lambda file: file in inherited_data or _may_use_data(user, file),
    )


def run_path_policy(run: Run) -> PathPolicy:
    """The worker's rules for `run`: its owner's, with this machine's disk checked."""
    return path_policy_for(run.owner, fork_parent=run.parent_run, check_disk=True)


# --- the registry -------------------------------------------------------------------------------


def _usable(model: type[RegistryEntry], user: User) -> QuerySet:
    if not user.is_authenticated:
        return model.objects.none()
    if user.is_staff:
        return model.objects.all()
    teams = Membership.objects.filter(user=user).values("team_id")
    return model.objects.filter(Q(owner=user) | Q(team__in=teams))


def usable_models(user: User) -> QuerySet[RegisteredModel]:
    """Registered models `user` may start runs from: their own, their teams', every one for staff."""
    return _usable(RegisteredModel, user).select_related("owner", "team")


def usable_datasets(user: User) -> QuerySet[RegisteredDataset]:
    return _usable(RegisteredDataset, user).select_related("owner", "team")


def forkable_checkpoints(user: User, limit: int = 50) -> QuerySet[Checkpoint]:
    """The newest checkpoints of runs `user` may fork (the query form of `can_fork_run`: their own
    runs and those of teams where they are editor or owner): model_path choices for the run form."""
    if not user.is_authenticated:
        return Checkpoint.objects.none()
    runs = Run.objects.all()
    if not user.is_staff:
        runs = runs.filter(Q(owner=user) | Q(team__in=teams_for_runs_of(user)))
    return Checkpoint.objects.filter(run__in=runs).select_related("run").order_by("-created_at", "-id")[:limit]


# --- grants -------------------------------------------------------------------------------------


def _stored_forms(path: Path) -> list[str]:
    """The strings a stored path may have been written as: absolute, or relative to the project."""
    forms = [str(path)]
    if path.is_relative_to(settings.BASE_DIR):
        forms.append(str(path.relative_to(settings.BASE_DIR)))
    return forms


def _may_use_model(user: User, folder: Path) -> bool:
    if usable_models(user).filter(path__in=_stored_forms(folder)).exists():
        return True
    checkpoints = Checkpoint.objects.filter(path__in=_stored_forms(folder)).select_related("run")
    return any(can_fork_run(user, checkpoint.run) for checkpoint in checkpoints)


def _may_use_data(user: User, file: Path) -> bool:
    return usable_datasets(user).filter(path__in=_stored_forms(file)).exists()


def _inherited_paths(policy: PathPolicy, parent: Run | None) -> tuple[set[Path], set[Path]]:
    """The parent run's plain model folder and data files, as `policy` reads them."""
    if parent is None:
        return set(), set()
    config = parent.config if isinstance(parent.config, dict) else {}
    model_path = config.get("model_path")
    plain = isinstance(model_path, str) and ":" not in model_path  # builders are allowed anyway
    models = {policy.absolute(model_path)} if plain else set()
    sources = config.get("data") if isinstance(config.get("data"), list) else []
    data = {
        policy.absolute(source["path"])
        for source in sources
        if isinstance(source, dict) and source.get("source") == "file" and isinstance(source.get("path"), str)
    }
    return models - {None}, data - {None}
