"""Teams: Alice makes one, adds Bob as a viewer, then makes him an editor; Charlie sees none of it."""

from __future__ import annotations

import pytest
from access_testing import fast_passwords, team_of  # noqa: F401 (a fixture)
from django.urls import reverse

from studio.models import Membership, Run, RunStatus, Team, TeamRole

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("fast_passwords")]


def test_alice_creates_a_team_and_becomes_its_owner(client, alice):
    client.force_login(alice)
    response = client.post(reverse("team-create"), {"name": "reasoning"})
    team = Team.objects.get(name="reasoning")
    assert response.url == team.get_absolute_url()
    assert list(team.memberships.values_list("user__username", "role")) == [("alice", "owner")]
    assert "reasoning" in client.get(reverse("team-list")).content.decode()


def test_a_team_needs_a_name(client, alice):
    client.force_login(alice)
    assert client.post(reverse("team-create"), {"name": ""}).status_code == 400
    assert not Team.objects.exists()


def test_alice_adds_bob_as_a_viewer_then_makes_him_an_editor(client, alice, bob, alices_run):
    team = team_of(alice)
    Run.objects.filter(pk=alices_run.pk).update(team=team, status=RunStatus.RUNNING)
    client.force_login(alice)
    client.post(reverse("team-member-add", args=[team.pk]), {"username": "bob", "role": "viewer"})
    assert Membership.objects.get(team=team, user=bob).role == TeamRole.VIEWER

    client.force_login(bob)
    page = client.get(reverse("run-detail", args=[alices_run.pk])).content.decode()
    assert "alice&#x27;s tiny run" in page and reverse("run-stop", args=[alices_run.pk]) not in page
    assert "alice&#x27;s tiny run" in client.get(reverse("team-detail", args=[team.pk])).content.decode()

    client.force_login(alice)
    client.post(reverse("team-member-role", args=[team.pk, bob.pk]), {"role": "editor"})
    client.force_login(bob)
    page = client.get(reverse("run-detail", args=[alices_run.pk])).content.decode()
    assert reverse("run-stop", args=[alices_run.pk]) in page


def test_adding_an_unknown_user_a_member_twice_or_an_unknown_role_says_why(client, alice, bob, charlie):
    team = team_of(alice, (bob, TeamRole.VIEWER))
    client.force_login(alice)
    unknown = client.post(reverse("team-member-add", args=[team.pk]), {"username": "dana", "role": "viewer"})
    assert unknown.status_code == 400 and "There is no user called &#x27;dana&#x27;" in unknown.content.decode()
    twice = client.post(reverse("team-member-add", args=[team.pk]), {"username": "bob", "role": "editor"})
    assert twice.status_code == 400 and "bob is already in alice&#x27;s team" in twice.content.decode()
    bad_role = client.post(reverse("team-member-add", args=[team.pk]), {"username": "charlie", "role": "admin"})
    assert bad_role.status_code == 400 and not Membership.objects.filter(user=charlie).exists()


def test_a_team_keeps_at_least_one_owner(client, alice, bob):
    team = team_of(alice, (bob, TeamRole.EDITOR))
    client.force_login(alice)
    demote = client.post(reverse("team-member-role", args=[team.pk, alice.pk]), {"role": "viewer"})
    assert demote.status_code == 400 and "at least one owner" in demote.content.decode()
    leave = client.post(reverse("team-member-remove", args=[team.pk, alice.pk]))
    assert leave.status_code == 400
    client.post(reverse("team-member-role", args=[team.pk, bob.pk]), {"role": "owner"})
    assert client.post(reverse("team-member-remove", args=[team.pk, alice.pk])).url == reverse("team-list")
    assert list(team.memberships.values_list("user__username", "role")) == [("bob", "owner")]


def test_bob_may_leave_but_not_remove_others_as_a_viewer(client, alice, bob, charlie):
    team = team_of(alice, (bob, TeamRole.VIEWER), (charlie, TeamRole.VIEWER))
    client.force_login(bob)
    assert client.post(reverse("team-member-remove", args=[team.pk, charlie.pk])).status_code == 403
    assert client.post(reverse("team-member-remove", args=[team.pk, bob.pk])).status_code == 302
    assert not Membership.objects.filter(team=team, user=bob).exists()


def test_bob_removed_from_the_team_no_longer_sees_alices_run(client, alice, bob, alices_run):
    team = team_of(alice, (bob, TeamRole.EDITOR))
    Run.objects.filter(pk=alices_run.pk).update(team=team)
    client.force_login(alice)
    client.post(reverse("team-member-remove", args=[team.pk, bob.pk]))
    client.force_login(bob)
    assert client.get(reverse("run-detail", args=[alices_run.pk])).status_code == 404
    assert client.get(reverse("team-detail", args=[team.pk])).status_code == 404


def test_charlie_gets_a_404_for_alices_team_and_cannot_change_it(client, alice, bob, charlie):
    team = team_of(alice, (bob, TeamRole.VIEWER))
    client.force_login(charlie)
    assert client.get(reverse("team-detail", args=[team.pk])).status_code == 404
    assert (
        client.post(reverse("team-member-add", args=[team.pk]), {"username": "charlie", "role": "owner"}).status_code
        == 404
    )
    assert client.post(reverse("team-member-remove", args=[team.pk, bob.pk])).status_code == 404
    assert "alice&#x27;s team" not in client.get(reverse("team-list")).content.decode()
    assert not Membership.objects.filter(user=charlie).exists()


def test_alice_puts_her_run_into_a_team_she_may_steer_runs_in_and_takes_it_out(client, alice, bob, alices_run):
    hers = team_of(alice, (bob, TeamRole.VIEWER))
    bobs = team_of(bob, (alice, TeamRole.VIEWER), name="bob's team")
    client.force_login(alice)
    assert client.post(reverse("run-set-team", args=[alices_run.pk]), {"team": hers.pk}).status_code == 302
    assert Run.objects.get(pk=alices_run.pk).team == hers
    refused = client.post(reverse("run-set-team", args=[alices_run.pk]), {"team": bobs.pk})
    assert refused.status_code == 400 and Run.objects.get(pk=alices_run.pk).team == hers
    client.post(reverse("run-set-team", args=[alices_run.pk]), {"team": ""})
    assert Run.objects.get(pk=alices_run.pk).team is None


def test_the_run_page_links_to_its_sharing_page_for_alice_only(client, alice, bob, alices_run):
    team = team_of(alice, (bob, TeamRole.EDITOR))
    Run.objects.filter(pk=alices_run.pk).update(team=team)
    sharing = reverse("run-sharing", args=[alices_run.pk])
    client.force_login(alice)
    assert sharing in client.get(reverse("run-detail", args=[alices_run.pk])).content.decode()
    client.force_login(bob)
    assert sharing not in client.get(reverse("run-detail", args=[alices_run.pk])).content.decode()


def test_a_team_owner_manages_the_sharing_of_a_teammates_run(client, alice, bob, alices_run):
    team = team_of(bob, (alice, TeamRole.EDITOR), name="bob's team")
    Run.objects.filter(pk=alices_run.pk).update(team=team)
    client.force_login(bob)
    assert client.get(reverse("run-sharing", args=[alices_run.pk])).status_code == 200
