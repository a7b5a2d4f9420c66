"""The reasoning-boundary view of a finished comparison: per task, pass@k for k = 1..n of a base
column and of each other column, and the task's category (prorl_engine/boundary.py states the rule
and cites ProRL v1). The samples are the comparison's own: n up to 256 samples per prompt, asked
for on the comparison form.

Who may: whoever may see the comparison (studio.compare.can_view_comparison); others get a 404.
"""

from __future__ import annotations

from typing import Any

from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render
from django.views.decorators.http import require_GET

from prorl_engine.boundary import CATEGORIES, TOLERANCE, TaskBoundary, boundary
from studio.compare import _comparison_for, default_reference
from studio.models import Comparison


def shown_ks(k_large: int) -> list[int]:
    """The k of the table's columns: 1, 2, 4, ... below K, then K itself."""
    ks = [1]
    while ks[-1] * 2 < k_large:
        ks.append(ks[-1] * 2)
    return ks if ks[-1] == k_large else [*ks, k_large]


def _base_index(request: HttpRequest, comparison: Comparison) -> int:
    """?base=<column> when it names one, else the comparison's default reference (its first base model)."""
    chosen = request.GET.get("base", "")
    if chosen.isascii() and chosen.isdigit() and len(chosen) <= 3 and int(chosen) < len(comparison.entries):
        return int(chosen)
    return default_reference(comparison.entries)


def _tables(comparison: Comparison, base: int) -> dict[str, list[TaskBoundary]]:
    """Each column other than `base` -> its TaskBoundary per task against the `base` column."""
    labels = comparison.result["labels"]
    return boundary(comparison.result["prompts"], labels[base], [label for label in labels if label != labels[base]])


def boundary_tables(comparison: Comparison, base: int) -> dict[str, Any]:
    """The page's rows: per checkpoint, how many tasks fall in each category, and per task its
    category and pass@k of the base and the checkpoint at the shown k."""
    tables = _tables(comparison, base)
    k_large = min((t.k_large for tasks in tables.values() for t in tasks), default=1)
    ks = shown_ks(k_large)
    return {
        "base_label": comparison.result["labels"][base],
        "ks": ks,
        "checkpoints": [
            {
                "label": label,
                "tally": [(name, sum(t.category == name for t in tasks)) for name in CATEGORIES],
                "tasks": [
                    {
                        "task": t.task,
                        "prompts": t.prompts,
                        "category": t.category,
                        "margin": t.margin,
                        "cells": [{"base": t.base[k - 1], "rl": t.rl[k - 1]} for k in ks],
                    }
                    for t in tasks
                ],
            }
            for label, tasks in tables.items()
        ],
    }


@require_GET
@login_required
def compare_boundary(request: HttpRequest, comparison_id: int) -> HttpResponse:
    comparison = _comparison_for(request, comparison_id)  # 404 for whoever may not see it
    base = _base_index(request, comparison)
    context: dict[str, Any] = {
        "comparison": comparison,
        "labels": [e["label"] for e in comparison.entries],
        "base": base,
        "tolerance": TOLERANCE,
        "categories": CATEGORIES,
        "checkpoints": None,  # until the comparison has finished
    }
    if comparison.status == Comparison.Status.FINISHED and comparison.result:
        context.update(boundary_tables(comparison, base))
    return render(request, "studio/compare_boundary.html", context)


@require_GET
@login_required
def compare_boundary_data(request: HttpRequest, comparison_id: int) -> JsonResponse:
    """Every task's whole curves (pass@1..pass@K) per checkpoint, and its category: for scripts."""
    comparison = _comparison_for(request, comparison_id)
    if comparison.status != Comparison.Status.FINISHED or not comparison.result:
        return JsonResponse({"status": comparison.status, "base": None, "checkpoints": {}})
    base = _base_index(request, comparison)
    return JsonResponse(
        {
            "status": comparison.status,
            "base": comparison.result["labels"][base],
            "checkpoints": {
                label: [
                    {k: getattr(t, k) for k in ("task", "prompts", "category", "margin", "base", "rl")} for t in tasks
                ]
                for label, tasks in _tables(comparison, base).items()
            },
        }
    )
