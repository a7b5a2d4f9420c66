"""Forks: a new run started from a checkpoint of another run, with an edited config.

The engine restores the checkpoint's weights, reference, optimizer, step and reset history
(`Trainer(..., fork_from=<checkpoint folder>)`); the fork's steps continue the parent's, so its
first step is the checkpoint's step + 1, and its page draws the parent's curves up to there in grey.
The fork form starts from the parent's config and watchdog rules, both editable.
"""

from __future__ import annotations

from typing import Any

from django import forms
from django.conf import settings
from django.contrib.auth.decorators import login_required
from django.db.models import QuerySet
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_GET, require_http_methods

from studio.forms import RunForm, initial_from_config
from studio.launch import launch_run
from studio.models import Checkpoint, MetricPoint, Run
from studio.params import answers_bad_parameters, optional_id_param
from studio.payloads import shown_config
from studio.permissions import can_fork_run, can_see_run_details, can_view_run
from studio.series import chart_data
from studio.watchdogs import copied_fields


class CheckpointChoice(forms.ModelChoiceField):
    def label_from_instance(self, checkpoint: Checkpoint) -> str:
        return f"step {checkpoint.step} ({checkpoint.created_at:%Y-%m-%d %H:%M})"


class ForkForm(RunForm):
    """The run form plus the checkpoint to start from; the fork must train past that step."""

    def __init__(self, *args: Any, checkpoints: QuerySet[Checkpoint], **kwargs: Any):
        """`user` and `fork_parent` (RunForm): the fork may keep its parent's base model and data."""
        super().__init__(*args, **kwargs)
        self.fields["checkpoint"] = CheckpointChoice(
            queryset=checkpoints,
            empty_label=None,
            help_text="The fork starts from this checkpoint's weights, reference, optimizer and step.",
        )

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean()
        checkpoint: Checkpoint | None = cleaned.get("checkpoint")
        if self.config is not None and checkpoint is not None and self.config.steps <= checkpoint.step:
            self.add_error(
                "steps",
                f"must be above {checkpoint.step}, the step of the checkpoint the fork "
                f"starts from (the fork trains steps {checkpoint.step + 1} onwards)",
            )
            self.config = None
        return cleaned


def _forkable_run(request: HttpRequest, run_id: int) -> Run:
    run = get_object_or_404(Run.objects.select_related("owner"), pk=run_id)
    if not can_view_run(request.user, run):
        raise Http404("No such run")
    return run


@require_http_methods(["GET", "POST"])
@login_required
@answers_bad_parameters(json_body=False)
def run_fork(request: HttpRequest, run_id: int) -> HttpResponse:
    parent = _forkable_run(request, run_id)
    if not can_fork_run(request.user, parent):
        return HttpResponse("You may see this run but not fork it.", status=403, content_type="text/plain")
    checkpoints = parent.checkpoints.order_by("-step")
    if request.method == "GET":
        chosen_id = optional_id_param(request.GET, "checkpoint")
        chosen = (checkpoints.filter(pk=chosen_id).first() if chosen_id else None) or checkpoints.first()
        if chosen is None:
            return render(request, "studio/fork.html", {"parent": parent, "form": None}, status=409)
        config = shown_config(parent, can_see_run_details(request.user, parent))
        initial = {
            "name": f"{parent.name} (fork @ step {chosen.step})",
            **initial_from_config(config),
            **copied_fields(parent, request.user),
            "checkpoint": chosen.pk,
        }
        form = ForkForm(initial=initial, checkpoints=checkpoints, user=request.user, fork_parent=parent)
        return render(request, "studio/fork.html", {"parent": parent, "form": form})
    form = ForkForm(request.POST, checkpoints=checkpoints, user=request.user, fork_parent=parent)
    if not form.is_valid() or form.config is None:
        return render(request, "studio/fork.html", {"parent": parent, "form": form}, status=400)
    run = launch_run(
        request.user, form.cleaned_data["name"], form.config, parent_checkpoint=form.cleaned_data["checkpoint"]
    )
    form.save_watchdogs(run, request.user)
    return redirect(run)


@require_GET
@login_required
def run_parent_curves(request: HttpRequest, run_id: int) -> JsonResponse:
    """The parent's curves up to the fork step, for the fork's page to draw in grey."""
    run = _forkable_run(request, run_id)
    parent = Run.objects.filter(pk=run.parent_run_id).first() if run.parent_run_id else None
    if parent is None or run.fork_step is None or not can_view_run(request.user, parent):
        raise Http404("No visible parent run")
    rows = (
        MetricPoint.objects.filter(run=parent, step__lte=run.fork_step).order_by("step").values_list("step", "values")
    )
    return JsonResponse(
        {
            "run": parent.pk,
            "name": parent.name,
            "fork_step": run.fork_step,
            "series": chart_data(rows.iterator(chunk_size=2000), settings.CHART_POINTS),
        }
    )
