"""Who may see and steer a run: one place, so teams and share links can grow here."""

from __future__ import annotations

from django.contrib.auth.models import AbstractBaseUser, AnonymousUser
from django.db.models import QuerySet

from studio.models import Run


def visible_runs(user: AbstractBaseUser | AnonymousUser) -> QuerySet[Run]:
    """The runs `user` may see: their own, or every run for staff."""
    if not user.is_authenticated:
        return Run.objects.none()
    if user.is_staff:
        return Run.objects.all()
    return Run.objects.filter(owner=user)


def can_view_run(user: AbstractBaseUser | AnonymousUser, run: Run) -> bool:
    return user.is_authenticated and (user.is_staff or run.owner_id == user.pk)


def can_control_run(user: AbstractBaseUser | AnonymousUser, run: Run) -> bool:
    """Stop, reset the reference, clone: the same people who may see it, for now."""
    return can_view_run(user, run)
