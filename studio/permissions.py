"""Who may see and steer a run: the one place every page, JSON endpoint, websocket and command asks.

People:
- a run's owner and staff may do everything with it;
- members of the run's team by role: viewer sees it; editor also steers it (commands), forks and
  compares it; owner also manages the team and the run's share links;
- anyone else learns nothing: views answer 404, as if the run did not exist (studio.middleware
  gives every 404 the same body);
- only those who may steer a run see its full error and server file paths (`can_see_run_details`).
Share links: a read-only view of one run's page (and its live socket) for whoever holds the token,
logged in or not, until the link is revoked or expires.
API tokens: a script acts as the token's person, with that person's rights.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

from django.contrib.auth.models import AbstractBaseUser, AnonymousUser
from django.db.models import Q, QuerySet
from django.utils import timezone

from studio.models import ApiToken, Membership, Run, ShareLink, Team, TeamRole

User = AbstractBaseUser | AnonymousUser

CONTROL_ROLES = (TeamRole.EDITOR, TeamRole.OWNER)


# --- runs ---------------------------------------------------------------------------------------


def visible_runs(user: User) -> QuerySet[Run]:
    """The runs `user` may see: their own and their teams' runs, or every run for staff."""
    if not user.is_authenticated:
        return Run.objects.none()
    if user.is_staff:
        return Run.objects.all()
    teams = Membership.objects.filter(user=user).values("team_id")
    return Run.objects.filter(Q(owner=user) | Q(team__in=teams))


def team_role(user: User, team_id: int | None) -> str | None:
    """`user`'s role in the team, or None when they are not in it (or there is no team)."""
    if team_id is None or not user.is_authenticated:
        return None
    return Membership.objects.filter(team_id=team_id, user=user).values_list("role", flat=True).first()


def _is_owner_or_staff(user: User, run: Run) -> bool:
    return user.is_authenticated and (user.is_staff or run.owner_id == user.pk)


def can_view_run(user: User, run: Run) -> bool:
    return _is_owner_or_staff(user, run) or team_role(user, run.team_id) is not None


def can_control_run(user: User, run: Run) -> bool:
    """Commands to the live run: reset the reference, pause, resume, stop, save a checkpoint."""
    return _is_owner_or_staff(user, run) or team_role(user, run.team_id) in CONTROL_ROLES


def can_see_run_details(user: User, run: Run) -> bool:
    """The run's full error (with its traceback) and the server paths of its files: those who may
    steer it. Viewers and share links get studio.payloads' viewer forms (a one-line error, paths
    relative to the run)."""
    return can_control_run(user, run)


def can_fork_run(user: User, run: Run) -> bool:
    """Start a new run from one of the run's checkpoints (or clone its config)."""
    return can_control_run(user, run)


def can_compare_run(user: User, run: Run) -> bool:
    """Start evaluation jobs on the run's checkpoints (they take worker time)."""
    return can_control_run(user, run)


def can_manage_run(user: User, run: Run) -> bool:
    """Choose the run's team and make or revoke its share links: its owner, staff, team owners."""
    return _is_owner_or_staff(user, run) or team_role(user, run.team_id) == TeamRole.OWNER


def teams_for_runs_of(user: User) -> QuerySet[Team]:
    """The teams `user` may put a run into: those where they may steer runs."""
    if not user.is_authenticated:
        return Team.objects.none()
    return Team.objects.filter(memberships__user=user, memberships__role__in=CONTROL_ROLES)


# --- teams --------------------------------------------------------------------------------------


def visible_teams(user: User) -> QuerySet[Team]:
    if not user.is_authenticated:
        return Team.objects.none()
    if user.is_staff:
        return Team.objects.all()
    return Team.objects.filter(memberships__user=user)


def can_view_team(user: User, team: Team) -> bool:
    return user.is_authenticated and (user.is_staff or team_role(user, team.pk) is not None)


def can_manage_team(user: User, team: Team) -> bool:
    """Add and remove members and change their roles."""
    return user.is_authenticated and (user.is_staff or team_role(user, team.pk) == TeamRole.OWNER)


# --- secrets: share links and API tokens ---------------------------------------------------------


def new_token() -> str:
    """256 random bits, URL-safe: unguessable."""
    return secrets.token_urlsafe(32)


def token_hash(token: str) -> str:
    """What the database keeps of a token: its SHA-256 (a token is random, so no salt is needed)."""
    return hashlib.sha256(token.encode("utf-8", errors="replace")).hexdigest()


def _matching(model: type[ShareLink] | type[ApiToken], token: str) -> ShareLink | ApiToken | None:
    digest = token_hash(token)
    row = model.objects.filter(token_hash=digest).first()
    # The lookup goes by hash, so its timing says nothing about the token; compare in constant time
    # all the same, so that no index or collation quirk can ever answer for an almost-right token.
    if row is None or not hmac.compare_digest(row.token_hash, digest):
        return None
    return row


def share_link_for(token: str) -> ShareLink | None:
    """The active (not revoked, not expired) share link of `token`, with its run, or None."""
    if not token:
        return None
    link = _matching(ShareLink, token)
    if link is None or not link.is_active():
        return None
    return ShareLink.objects.select_related("run", "run__owner").get(pk=link.pk)


def can_view_run_by_share(token: str, run: Run) -> bool:
    link = share_link_for(token)
    return link is not None and link.run_id == run.pk


def user_for_api_token(token: str) -> AbstractBaseUser | None:
    """The active person whose unrevoked API token this is, or None."""
    if not token:
        return None
    api_token = _matching(ApiToken, token)
    if api_token is None or api_token.revoked_at is not None or not api_token.user.is_active:
        return None
    ApiToken.objects.filter(pk=api_token.pk).update(last_used_at=timezone.now())
    return api_token.user
