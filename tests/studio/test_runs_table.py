"""The runs table: config and metric columns, sorting by them across every run, filters, tags and
notes edited by those who may steer a run, and a selection that opens the overlay or compare page."""

from __future__ import annotations

import html
import re

import pytest
from access_testing import team_of
from django.urls import reverse
from studio_testing import tiny_config

from studio.models import MetricPoint, Run, RunStatus, RunTag
from studio.runs_table import Column, parse_column, parse_tags

pytestmark = pytest.mark.django_db


def make_run(owner, name: str, rewards: list[float] = (), **fields) -> Run:
    config = tiny_config(**fields.pop("config", {}))
    run = Run.objects.create(owner=owner, name=name, config=config.to_dict(), total_steps=config.steps, **fields)
    MetricPoint.objects.bulk_create(
        [MetricPoint(run=run, step=i + 1, values={"reward/mean": r, "kl/ref": 0.01 * i}) for i, r in enumerate(rewards)]
    )
    return run


def listed(page: str) -> list[str]:
    """Run names in table order."""
    return [
        html.unescape(name)
        for name in re.findall(r'<tr data-run="\d+">\s*<td><input[^>]*></td>\s*<td><a href="[^"]+">([^<]+)</a>', page)
    ]


def cells(page: str, name: str) -> list[str]:
    row = page[page.index(f">{name}</a>") :]
    return re.findall(r'<td class="metric-cell">([^<]*)</td>', row[: row.index("</tr>")])


@pytest.fixture
def three_runs(alice, bob):
    return [
        make_run(alice, "steady", [0.1, 0.5, 0.4], config={"learning_rate": 1e-5}),
        make_run(alice, "late bloomer", [0.0, 0.2, 0.9], config={"learning_rate": 3e-6}),
        make_run(alice, "flat", [0.3, 0.3], config={"learning_rate": 2e-5}, status=RunStatus.FINISHED),
        make_run(bob, "bob's run", [1.0]),
    ]


def test_columns_from_config_and_latest_and_best_metrics(client, alice, three_runs):
    client.force_login(alice)
    query = "?col=config:learning_rate&col=latest:reward/mean&col=best:reward/mean&col=best:kl/ref&sort=name"
    page = client.get(reverse("run-list") + query).content.decode()
    assert listed(page) == ["flat", "late bloomer", "steady"]  # never Bob's
    assert cells(page, "steady") == ["1e-05", "0.4", "0.5"]  # best:kl/ref has no direction: no column
    assert cells(page, "late bloomer") == ["3e-06", "0.9", "0.9"]
    assert "reward/mean (max)" in page and "kl/ref (max)" not in page


def test_sorting_by_a_metric_column_spans_every_run_and_puts_runs_without_it_last(client, alice, three_runs):
    make_run(alice, "not started")
    client.force_login(alice)
    page = client.get(reverse("run-list") + "?col=best:reward/mean&sort=-best:reward/mean").content.decode()
    assert listed(page) == ["late bloomer", "steady", "flat", "not started"]
    page = client.get(reverse("run-list") + "?col=best:reward/mean&sort=best:reward/mean").content.decode()
    assert listed(page) == ["flat", "steady", "late bloomer", "not started"]
    page = client.get(reverse("run-list") + "?col=config:learning_rate&sort=config:learning_rate").content.decode()
    assert listed(page)[:3] == ["late bloomer", "steady", "flat"]


def test_filters_by_status_owner_team_tag_and_text(client, alice, bob, sam, three_runs):
    steady, late, flat, bobs = three_runs
    team = team_of(bob, (alice, "viewer"))
    Run.objects.filter(pk=bobs.pk).update(team=team, notes="the entropy collapsed at step 40")
    RunTag.objects.create(run=steady, name="baseline")
    RunTag.objects.create(run=late, name="baseline")
    RunTag.objects.create(run=late, name="lr-sweep")
    client.force_login(alice)
    url = reverse("run-list")
    assert listed(client.get(url + "?status=finished").content.decode()) == ["flat"]
    assert listed(client.get(url + "?status=queued&owner=bob").content.decode()) == ["bob's run"]
    assert listed(client.get(url + f"?team={team.pk}").content.decode()) == ["bob's run"]
    assert sorted(listed(client.get(url + "?tag=baseline").content.decode())) == ["late bloomer", "steady"]
    assert listed(client.get(url + "?tag=baseline&tag=lr-sweep").content.decode()) == ["late bloomer"]
    assert listed(client.get(url + "?q=ENTROPY").content.decode()) == ["bob's run"]  # in the notes
    assert listed(client.get(url + f"?q=%23{flat.pk}").content.decode()) == ["flat"]
    assert "No run you can see passes these filters" in client.get(url + "?q=nothing").content.decode()


@pytest.mark.parametrize(
    "query", ["?col=config:model_path", "?col=latest:x'--", "?sort=-best:reward/mean", "?team=9999999999", "?page=x"]
)
def test_unknown_columns_and_parameters_are_ignored(client, alice, three_runs, query):
    client.force_login(alice)
    response = client.get(reverse("run-list") + query)
    assert response.status_code == 200 and len(listed(response.content.decode())) == 3


def test_path_fields_are_never_columns():
    assert parse_column("config:model_path") is None and parse_column("config:data") is None
    assert parse_column("config:beta") == Column("config", "beta")


def test_alice_tags_and_annotates_her_run_and_the_table_shows_it(client, alice, three_runs):
    steady = three_runs[0]
    client.force_login(alice)
    url = reverse("run-annotate", args=[steady.pk])
    response = client.post(url, {"tags": "baseline, lr-sweep baseline", "notes": "lr 1e-5 is stable"})
    assert response.status_code == 302
    assert sorted(steady.tags.values_list("name", flat=True)) == ["baseline", "lr-sweep"]
    page = client.get(reverse("run-list")).content.decode()
    assert '<a class="tag" href="?tag=baseline">baseline</a>' in page and "lr 1e-5 is stable" in page
    client.post(url, {"tags": "lr-sweep", "notes": ""})
    assert list(steady.tags.values_list("name", flat=True)) == ["lr-sweep"]
    page = client.post(url, {"tags": "no spaces? ok; <b>", "notes": ""}).content.decode()
    assert "a tag is letters, digits" in page


def test_a_viewer_reads_tags_but_only_editors_change_them(client, alice, bob, charlie, three_runs):
    steady = three_runs[0]
    team = team_of(alice, (bob, "viewer"))
    Run.objects.filter(pk=steady.pk).update(team=team)
    url = reverse("run-annotate", args=[steady.pk])
    client.force_login(bob)
    assert client.get(url).status_code == 200
    assert client.post(url, {"tags": "mine", "notes": ""}).status_code == 403
    assert 'class="annotate-link"' not in client.get(reverse("run-list") + "?q=steady").content.decode()
    team.memberships.filter(user=bob).update(role="editor")
    assert client.post(url, {"tags": "mine", "notes": ""}).status_code == 302
    client.force_login(charlie)
    assert client.get(url).status_code == 404 and client.post(url, {"tags": "x"}).status_code == 404


def test_the_selection_goes_straight_to_the_overlay_and_compare_pages(client, alice, three_runs):
    client.force_login(alice)
    page = client.get(reverse("run-list")).content.decode()
    form = page[page.index('<form method="get" id="selection">') :]
    assert f'formaction="{reverse("overlay")}"' in form and f'formaction="{reverse("compare-new")}"' in form
    assert all(f'name="run" value="{run.pk}"' in form for run in three_runs[:3])
    ids = "&".join(f"run={run.pk}" for run in three_runs[:2])
    assert client.get(reverse("overlay") + "?" + ids).status_code == 200  # what the button opens


def test_tags_are_checked():
    assert parse_tags("a, b a") == ["a", "b"]
    with pytest.raises(Exception, match="at most 20 tags"):
        parse_tags(" ".join(f"t{i}" for i in range(21)))
