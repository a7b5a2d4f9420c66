"""Teams: make one (you are its owner), add people by username with a role, change roles, remove.

Members see a team's page; only its owners (and staff) change it. Anyone else gets a 404. A team
always keeps at least one owner.
"""

from __future__ import annotations

from django import forms
from django.contrib.auth import get_user_model
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.db import transaction
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_GET, require_POST

from studio.models import Membership, Team, TeamRole
from studio.permissions import can_manage_team, can_view_team, visible_runs, visible_teams


class TeamForm(forms.Form):
    name = forms.CharField(max_length=100)


class MemberForm(forms.Form):
    username = forms.CharField(max_length=150)
    role = forms.ChoiceField(choices=TeamRole.choices, initial=TeamRole.VIEWER)

    def __init__(self, *args, team: Team, **kwargs):
        super().__init__(*args, **kwargs)
        self.team = team

    def clean_username(self) -> str:
        username = self.cleaned_data["username"].strip()
        user = get_user_model().objects.filter(username=username, is_active=True).first()
        if user is None:
            raise forms.ValidationError(f"There is no user called {username!r}.")
        if Membership.objects.filter(team=self.team, user=user).exists():
            raise forms.ValidationError(f"{username} is already in {self.team.name}.")
        self.cleaned_data["user"] = user
        return username


class RoleForm(forms.Form):
    role = forms.ChoiceField(choices=TeamRole.choices)


def _visible_team(request: HttpRequest, team_id: int) -> Team:
    """The team, or 404 for anyone who is not in it (no hint that it exists)."""
    team = get_object_or_404(Team, pk=team_id)
    if not can_view_team(request.user, team):
        raise Http404("No such team")
    return team


def _managed_team(request: HttpRequest, team_id: int) -> Team:
    team = _visible_team(request, team_id)
    if not can_manage_team(request.user, team):
        raise PermissionDenied("Only the team's owners change its members.")
    return team


def _render_team(
    request: HttpRequest, team: Team, *, member_form: MemberForm | None = None, error: str = "", status: int = 200
) -> HttpResponse:
    context = {
        "team": team,
        "memberships": team.memberships.select_related("user"),
        "runs": visible_runs(request.user).filter(team=team).select_related("owner"),
        "can_manage": can_manage_team(request.user, team),
        "member_form": member_form or MemberForm(team=team),
        "roles": TeamRole.choices,
        "error": error,
    }
    return render(request, "studio/team_detail.html", context, status=status)


def _last_owner_change(membership: Membership, new_role: str | None) -> bool:
    """Would demoting or removing `membership` leave its team without an owner?"""
    if membership.role != TeamRole.OWNER or new_role == TeamRole.OWNER:
        return False
    return (
        not Membership.objects.filter(team_id=membership.team_id, role=TeamRole.OWNER)
        .exclude(pk=membership.pk)
        .exists()
    )


@require_GET
@login_required
def team_list(request: HttpRequest) -> HttpResponse:
    teams = visible_teams(request.user).prefetch_related("memberships__user")
    return render(request, "studio/team_list.html", {"teams": teams, "form": TeamForm()})


@require_POST
@login_required
def team_create(request: HttpRequest) -> HttpResponse:
    form = TeamForm(request.POST)
    if not form.is_valid():
        teams = visible_teams(request.user)
        return render(request, "studio/team_list.html", {"teams": teams, "form": form}, status=400)
    with transaction.atomic():
        team = Team.objects.create(name=form.cleaned_data["name"])
        Membership.objects.create(team=team, user=request.user, role=TeamRole.OWNER)
    return redirect(team)


@require_GET
@login_required
def team_detail(request: HttpRequest, team_id: int) -> HttpResponse:
    return _render_team(request, _visible_team(request, team_id))


@require_POST
@login_required
def team_member_add(request: HttpRequest, team_id: int) -> HttpResponse:
    team = _managed_team(request, team_id)
    form = MemberForm(request.POST, team=team)
    if not form.is_valid():
        return _render_team(request, team, member_form=form, status=400)
    Membership.objects.create(team=team, user=form.cleaned_data["user"], role=form.cleaned_data["role"])
    return redirect(team)


@require_POST
@login_required
def team_member_role(request: HttpRequest, team_id: int, user_id: int) -> HttpResponse:
    team = _managed_team(request, team_id)
    membership = get_object_or_404(Membership, team=team, user_id=user_id)
    form = RoleForm(request.POST)
    if not form.is_valid():
        return _render_team(request, team, error="Choose owner, editor or viewer.", status=400)
    if _last_owner_change(membership, form.cleaned_data["role"]):
        return _render_team(
            request, team, error="A team keeps at least one owner: make someone else owner first.", status=400
        )
    membership.role = form.cleaned_data["role"]
    membership.save(update_fields=["role"])
    return redirect(team)


@require_POST
@login_required
def team_member_remove(request: HttpRequest, team_id: int, user_id: int) -> HttpResponse:
    """Owners remove anyone; every member may leave."""
    team = _visible_team(request, team_id)
    if user_id != request.user.pk and not can_manage_team(request.user, team):
        raise PermissionDenied("Only the team's owners remove members.")
    membership = get_object_or_404(Membership, team=team, user_id=user_id)
    if _last_owner_change(membership, None):
        return _render_team(
            request, team, error="A team keeps at least one owner: make someone else owner first.", status=400
        )
    membership.delete()
    if user_id == request.user.pk and not can_view_team(request.user, team):
        return redirect("team-list")
    return redirect(team)
