"""Share links and a run's team: the run's sharing page, and the read-only pages a link opens.

A share link is `/s/<token>/`: 256 random bits shown once, when the link is made; the database keeps
only its SHA-256. Whoever holds it sees the live run page (metrics.json and the websocket through
the same token) with no control at all, until the link is revoked or expires; then it is a 404.
"""

from __future__ import annotations

from datetime import timedelta

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django import forms
from django.contrib.auth.decorators import login_required
from django.contrib.auth.models import AnonymousUser
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.http import require_GET, require_POST

from studio.models import Run, ShareLink
from studio.payloads import ShareRevokedPayload
from studio.permissions import can_manage_run, can_view_run, new_token, share_link_for, teams_for_runs_of, token_hash
from studio.views import metrics_response, render_run_page


class ShareLinkForm(forms.Form):
    label = forms.CharField(max_length=100, required=False, help_text="Who the link is for, to find it later.")
    expires_in_days = forms.IntegerField(
        required=False,
        min_value=1,
        max_value=365,
        help_text="The link is refused after this many days; empty: it works until revoked.",
    )


class RunTeamForm(forms.Form):
    team = forms.ModelChoiceField(queryset=None, required=False, empty_label="no team (only you)")

    def __init__(self, *args, user, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["team"].queryset = teams_for_runs_of(user)


def _managed_run(request: HttpRequest, run_id: int) -> Run:
    """The run, if the request may manage its sharing; 404 for those who may not even see it."""
    run = get_object_or_404(Run.objects.select_related("owner", "team"), pk=run_id)
    if not can_view_run(request.user, run):
        raise Http404("No such run")
    if not can_manage_run(request.user, run):
        raise PermissionDenied("Only the run's owner and its team's owners manage its sharing.")
    return run


def _render_sharing(
    request: HttpRequest,
    run: Run,
    *,
    share_form: ShareLinkForm | None = None,
    team_form: RunTeamForm | None = None,
    new_link_url: str = "",
    status: int = 200,
) -> HttpResponse:
    context = {
        "run": run,
        "links": run.share_links.select_related("created_by"),
        "share_form": share_form or ShareLinkForm(),
        "team_form": team_form or RunTeamForm(user=request.user, initial={"team": run.team_id}),
        "new_link_url": new_link_url,
        "now": timezone.now(),
    }
    return render(request, "studio/share_links.html", context, status=status)


# --- the run's sharing page (its owner, staff, its team's owners) --------------------------------


@require_GET
@login_required
def run_sharing(request: HttpRequest, run_id: int) -> HttpResponse:
    return _render_sharing(request, _managed_run(request, run_id))


@require_POST
@login_required
def run_set_team(request: HttpRequest, run_id: int) -> HttpResponse:
    run = _managed_run(request, run_id)
    form = RunTeamForm(request.POST, user=request.user)
    if not form.is_valid():
        return _render_sharing(request, run, team_form=form, status=400)
    run.team = form.cleaned_data["team"]
    run.save(update_fields=["team"])
    return redirect("run-sharing", run.pk)


@require_POST
@login_required
def share_link_create(request: HttpRequest, run_id: int) -> HttpResponse:
    """Make a link and show its URL once (on this response, never again)."""
    run = _managed_run(request, run_id)
    form = ShareLinkForm(request.POST)
    if not form.is_valid():
        return _render_sharing(request, run, share_form=form, status=400)
    days = form.cleaned_data["expires_in_days"]
    token = new_token()
    ShareLink.objects.create(
        run=run,
        token_hash=token_hash(token),
        label=form.cleaned_data["label"],
        created_by=request.user,
        expires_at=timezone.now() + timedelta(days=days) if days else None,
    )
    url = request.build_absolute_uri(reverse("share-detail", args=[token]))
    return _render_sharing(request, run, new_link_url=url)


@require_POST
@login_required
def share_link_revoke(request: HttpRequest, run_id: int, link_id: int) -> HttpResponse:
    run = _managed_run(request, run_id)
    link = get_object_or_404(ShareLink, pk=link_id, run=run)
    if link.revoked_at is None:
        link.revoked_at = timezone.now()
        link.save(update_fields=["revoked_at"])
        payload: ShareRevokedPayload = {"type": "run.share_revoked", "link": link.pk}
        async_to_sync(get_channel_layer().group_send)(run.group_name, payload)  # its open sockets close
    return redirect("run-sharing", run.pk)


# --- what a link opens (no login) ---------------------------------------------------------------


def shared_run(token: str) -> Run:
    link = share_link_for(token)
    if link is None:
        raise Http404("No such link")
    return link.run


@require_GET
def share_detail(request: HttpRequest, token: str) -> HttpResponse:
    """The live run page, read-only: rendered as for an anonymous visitor, so that no control of
    any kind (each is drawn only for people allowed to use it) can appear on it."""
    run = shared_run(token)
    request.user = AnonymousUser()
    response = render_run_page(request, run, share_token=token)
    response["Referrer-Policy"] = "no-referrer"  # the token is in this page's URL
    response["Cache-Control"] = "private, no-store"
    return response


def share_not_found(request: HttpRequest) -> HttpResponse:
    """Any other URL under /s/: the studio's one 404 (studio.middleware), with DEBUG on too, where
    an unmatched URL would get Django's page listing every route."""
    raise Http404("No such link")


@require_GET
def share_metrics(request: HttpRequest, token: str) -> JsonResponse:
    response = metrics_response(request, shared_run(token), details=False)
    response["Cache-Control"] = "private, no-store"
    return response
