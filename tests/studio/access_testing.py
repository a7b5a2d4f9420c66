"""Helpers of the sharing and access tests: teams, share links and API tokens made directly."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from studio.models import ApiToken, Membership, Run, ShareLink, Team, TeamRole
from studio.permissions import new_token, token_hash


@pytest.fixture
def fast_passwords(settings) -> None:
    """Test users' passwords hashed cheaply (PBKDF2 costs seconds per user on a busy CPU). Only for
    tests in this process: a live studio's server could not check these hashes."""
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


def team_of(owner, *members: tuple, name: str = "alice's team") -> Team:
    """A team owned by `owner`, with `members` given as (user, role) pairs, e.g. (bob, "viewer")."""
    team = Team.objects.create(name=name)
    Membership.objects.create(team=team, user=owner, role=TeamRole.OWNER)
    for user, role in members:
        Membership.objects.create(team=team, user=user, role=role)
    return team


def share(run: Run, *, expires_in: timedelta | None = None, revoked: bool = False) -> str:
    """A share link to `run`; returns its token (the only time it exists in clear)."""
    token = new_token()
    now = timezone.now()
    ShareLink.objects.create(
        run=run,
        token_hash=token_hash(token),
        created_by=run.owner,
        expires_at=now + expires_in if expires_in is not None else None,
        revoked_at=now if revoked else None,
    )
    return token


def api_token(user) -> str:
    token = new_token()
    ApiToken.objects.create(user=user, name="script", token_hash=token_hash(token))
    return token


def bearer(token: str) -> dict[str, str]:
    """Test-client keyword arguments that send `Authorization: Bearer <token>`."""
    return {"HTTP_AUTHORIZATION": f"Bearer {token}"}
