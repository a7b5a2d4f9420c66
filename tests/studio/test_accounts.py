"""Accounts and what outsiders see: login throttling (django-axes), the production HTTPS settings,
the Content-Security-Policy, and what team viewers and share links receive of a failed run.

Alice owns a failed run whose error carries a traceback with the studio's server paths; Bob is a
viewer in her team; a share link's holder is nobody in particular.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest
from access_testing import api_token, bearer, fast_passwords, share, team_of  # noqa: F401 (a fixture)
from asgiref.sync import async_to_sync
from axes.models import AccessAttempt
from axes.utils import reset as reset_axes
from channels.layers import get_channel_layer
from channels.routing import URLRouter
from channels.testing import WebsocketCommunicator
from django.contrib.auth.models import AnonymousUser
from django.db.models import F
from django.test import Client, RequestFactory
from django.urls import reverse
from django.utils.html import escape

from studio.accounts import client_ip
from studio.models import Checkpoint, Comparison, Event, MetricPoint, Run, RunStatus, TeamRole
from studio.payloads import run_relative, viewer_error, viewer_event
from studio.routing import websocket_urlpatterns

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("fast_passwords")]

REPO = Path(__file__).resolve().parents[2]


# --- login throttling ----------------------------------------------------------------------------


@pytest.fixture
def no_lockouts():
    """No test starts or leaves a lockout behind (axes keeps its counts in the database)."""
    reset_axes()
    yield
    reset_axes()


def log_in(client: Client, username: str, password: str, ip: str = "127.0.0.1"):
    return client.post(reverse("login"), {"username": username, "password": password}, REMOTE_ADDR=ip)


def lock_out(client: Client, username: str) -> list[int]:
    """As many wrong passwords as the limit allows; the statuses they got."""
    from django.conf import settings

    return [log_in(client, username, "wrong password").status_code for _ in range(settings.AXES_FAILURE_LIMIT)]


@pytest.mark.usefixtures("no_lockouts")
def test_wrong_passwords_lock_alice_out_from_that_address_and_no_one_else(client, settings, alice, bob):
    assert settings.AXES_FAILURE_LIMIT == 5
    assert lock_out(client, "alice") == [200, 200, 200, 200, 429]
    refused = log_in(client, "alice", "alice-password")
    assert refused.status_code == 429 and "_auth_user_id" not in client.session
    page = refused.content.decode()
    assert "Too many failed logins" in page and "<strong>alice</strong>" in page and "15 minutes" in page
    assert "Traceback" not in page and refused["Retry-After"] == "900"
    assert log_in(Client(), "bob", "bob-password").status_code == 302  # same address, another person
    assert log_in(Client(), "alice", "alice-password", ip="10.0.0.2").status_code == 302  # another address


@pytest.mark.usefixtures("no_lockouts")
def test_the_right_password_works_again_after_the_cool_off(client, settings, alice):
    lock_out(client, "alice")
    assert log_in(client, "alice", "alice-password").status_code == 429
    AccessAttempt.objects.update(attempt_time=F("attempt_time") - settings.AXES_COOLOFF_TIME - timedelta(seconds=1))
    assert log_in(client, "alice", "alice-password").status_code == 302
    assert client.session["_auth_user_id"] == str(alice.pk)


@pytest.mark.usefixtures("no_lockouts")
def test_a_successful_login_forgets_the_earlier_failures(client, settings, alice):
    for _ in range(settings.AXES_FAILURE_LIMIT - 1):
        assert log_in(client, "alice", "wrong").status_code == 200
    assert log_in(client, "alice", "alice-password").status_code == 302
    client.logout()
    for _ in range(settings.AXES_FAILURE_LIMIT - 1):
        assert log_in(client, "alice", "wrong").status_code == 200
    assert log_in(client, "alice", "alice-password").status_code == 302


@pytest.mark.usefixtures("no_lockouts")
def test_a_locked_out_person_keeps_their_session_and_api_token(client, alice, alices_run):
    logged_in = Client()
    logged_in.force_login(alice)
    token = api_token(alice)
    lock_out(client, "alice")
    assert logged_in.get(reverse("run-detail", args=[alices_run.pk])).status_code == 200
    response = Client().get(reverse("api-runs"), **bearer(token))
    assert response.status_code == 200 and [run["id"] for run in response.json()["runs"]] == [alices_run.pk]


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("no_lockouts", "channel_layer_settings")
def test_a_locked_out_persons_session_still_opens_the_runs_websocket(alice, alices_run):
    from studio.asgi import application  # the real stack: origin check, session cookie, consumer

    logged_in = Client()
    logged_in.force_login(alice)
    lock_out(Client(), "alice")
    cookie = f"sessionid={logged_in.cookies['sessionid'].value}".encode()

    async def scenario():
        ws = WebsocketCommunicator(
            application,
            f"/ws/runs/{alices_run.pk}/?after=0",
            headers=[(b"origin", b"http://testserver"), (b"host", b"testserver"), (b"cookie", cookie)],
        )
        connected, _ = await ws.connect()
        assert connected
        assert (await ws.receive_json_from(timeout=5))["kind"] == "status"
        await ws.disconnect()

    async_to_sync(scenario)()


def test_behind_a_proxy_logins_count_the_address_the_proxy_saw(settings):
    request = RequestFactory().post(
        "/accounts/login/", REMOTE_ADDR="10.1.1.1", HTTP_X_FORWARDED_FOR="6.6.6.6, 203.0.113.9"
    )
    settings.PROXY_COUNT = 0
    assert client_ip(request) == "10.1.1.1"  # no proxy: X-Forwarded-For is whatever the client sent
    settings.PROXY_COUNT = 1
    assert client_ip(request) == "203.0.113.9"  # the entry our proxy appended, not the client's "6.6.6.6"
    settings.PROXY_COUNT = 3
    assert client_ip(request) == "10.1.1.1"  # fewer entries than proxies: not forwarded by them


# --- production settings from the environment ----------------------------------------------------

PRODUCTION = {
    "DEBUG": "false",
    "ALLOWED_HOSTS": "studio.example.org",
    "SECURE_HSTS_SECONDS": "31536000",
    "SECURE_HSTS_INCLUDE_SUBDOMAINS": "true",
    "SECURE_HSTS_PRELOAD": "true",
    "SECURE_SSL_REDIRECT": "true",
    "SESSION_COOKIE_SECURE": "true",
    "CSRF_COOKIE_SECURE": "true",
    "SECURE_PROXY_SSL_HEADER": "X-Forwarded-Proto",
}
HTTPS_VARIABLES = [name for name in PRODUCTION if name.startswith(("SECURE_", "SESSION_", "CSRF_"))]


def manage(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    base = {k: v for k, v in os.environ.items() if k not in PRODUCTION}
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=180,
        env={**base, "SECRET_KEY": secrets.token_urlsafe(50), **env},
    )


def test_the_deploy_check_is_clean_with_the_production_variables():
    result = manage("check", "--deploy", "--fail-level", "WARNING", env=PRODUCTION)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "System check identified no issues" in result.stdout


def test_without_them_the_deploy_check_names_what_is_missing():
    result = manage(
        "check",
        "--deploy",
        "--fail-level",
        "WARNING",
        env={k: v for k, v in PRODUCTION.items() if k not in HTTPS_VARIABLES},
    )
    assert result.returncode != 0
    found = set(re.findall(r"security\.W\d+", result.stdout + result.stderr))
    assert found == {"security.W004", "security.W008", "security.W012", "security.W016"}


def test_the_environment_sets_the_throttle_and_the_proxy_header():
    script = (
        "import json; from django.conf import settings as s; print(json.dumps([s.AXES_FAILURE_LIMIT, "
        "s.AXES_COOLOFF_TIME.total_seconds(), s.PROXY_COUNT, s.SECURE_PROXY_SSL_HEADER]))"
    )
    result = manage(
        "shell",
        "-c",
        script,
        env={
            "PRORL_LOGIN_FAILURE_LIMIT": "3",
            "PRORL_LOGIN_COOLOFF_S": "60",
            "PRORL_PROXY_COUNT": "1",
            "SECURE_PROXY_SSL_HEADER": "X-Forwarded-Proto",
        },
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout.strip().splitlines()[-1]) == [3, 60.0, 1, ["HTTP_X_FORWARDED_PROTO", "https"]]


# --- Content-Security-Policy --------------------------------------------------------------------


def policy_of(response) -> dict[str, list[str]]:
    directives = [part.strip().split() for part in response["Content-Security-Policy"].split(";") if part.strip()]
    return {words[0]: words[1:] for words in directives}


def test_every_page_gets_a_policy_of_own_scripts_and_no_frames(client, alice, alices_run):
    client.force_login(alice)
    for url in (
        reverse("login"),
        reverse("run-list"),
        reverse("run-detail", args=[alices_run.pk]),
        reverse("run-metrics", args=[alices_run.pk]),
        reverse("share-detail", args=[share(alices_run)]),
    ):
        policy = policy_of(client.get(url))
        assert policy["script-src"] == ["'self'"] and policy["default-src"] == ["'self'"], url
        assert policy["object-src"] == ["'none'"] and policy["frame-ancestors"] == ["'none'"]
        assert policy["connect-src"] == ["'self'", "ws://testserver"]
    assert policy_of(client.get(reverse("run-list"), secure=True))["connect-src"] == ["'self'", "wss://testserver"]


TEMPLATES = sorted((REPO / "templates").rglob("*.html"))
INLINE = [
    (re.compile(r"<script(?![^>]*\ssrc=)[^>]*>", re.I), "an inline <script>"),
    (re.compile(r"<[^>]+\son[a-z]+\s*=", re.I), "an inline event handler"),
    (re.compile(r"<[^>]+\sstyle\s*=", re.I), "a style attribute"),
    (re.compile(r"<style", re.I), "a <style> element"),
]


@pytest.mark.parametrize("template", TEMPLATES, ids=[str(t.relative_to(REPO / "templates")) for t in TEMPLATES])
def test_no_template_has_what_the_policy_refuses(template):
    text = template.read_text()
    assert [what for pattern, what in INLINE if pattern.search(text)] == []


def test_the_inline_patterns_catch_what_they_name():
    samples = ["<script>alert(1)</script>", '<input onclick="x()">', '<div style="color: red">', "<style>p{}</style>"]
    assert [[what for pattern, what in INLINE if pattern.search(s)] for s in samples] == [[w] for _, w in INLINE]
    assert not any(pattern.search('<script src="/static/studio/run.js"></script>') for pattern, _ in INLINE)


# --- what team viewers and share links get of a failed run -------------------------------------

TRACEBACK_ERROR = (
    "FileNotFoundError: [Errno 2] No such file or directory: '/srv/prorl/data/secret.jsonl'\n\n"
    "Traceback (most recent call last):\n"
    '  File "/srv/prorl/app/worker/tasks.py", line 80, in _train\n'
    "    Trainer(config, run.run_dir, sink).train()\n"
    "FileNotFoundError: [Errno 2] No such file or directory: '/srv/prorl/data/secret.jsonl'\n"
)
ONE_LINE = "FileNotFoundError: [Errno 2] No such file or directory: '…/secret.jsonl'"
WORKER = "gpu-7.internal:4242"


def test_a_viewer_gets_the_errors_first_line_without_server_paths(tmp_path):
    run_dir = tmp_path / "runs" / "17"
    assert viewer_error(TRACEBACK_ERROR, run_dir) == ONE_LINE
    assert (
        viewer_error(f"OSError: cannot write {run_dir}/checkpoints/step-000002/model.safetensors", run_dir)
        == "OSError: cannot write checkpoints/step-000002/model.safetensors"
    )
    assert (
        viewer_error("ValueError: see https://example.org/a/b, 1/2 and a / b")
        == "ValueError: see https://example.org/a/b, 1/2 and a / b"
    )
    assert viewer_error("ValueError: model_path tiny:/srv/models/x") == "ValueError: model_path tiny:…/x"
    long = viewer_error("E: " + "x" * 1000)
    assert len(long) == 300 and long.endswith("…") and viewer_error("") == viewer_error("\n\n") == ""


def test_a_viewers_event_has_paths_relative_to_the_run_and_no_worker(tmp_path):
    run_dir = tmp_path / "runs" / "17"
    event = {
        "id": 1,
        "step": 3,
        "kind": "status",
        "time": 0.0,
        "data": {
            "status": "failed",
            "error": TRACEBACK_ERROR,
            "worker": WORKER,
            "path": f"{run_dir}/checkpoints/step-000003",
        },
    }
    assert viewer_event(event, run_dir)["data"] == {
        "status": "failed",
        "error": ONE_LINE,
        "path": "checkpoints/step-000003",
    }
    outside = {**event, "data": {"path": "/srv/prorl/runs/18/checkpoints/step-000003"}}
    assert viewer_event(outside, run_dir)["data"] == {}
    assert run_relative(f"{run_dir}/../18/x", run_dir) is None


@pytest.fixture
def failed_run(alices_run, alice, bob) -> Run:
    """Alice's run, failed at step 3 after a checkpoint, in her team where Bob is a viewer."""
    team = team_of(alice, (bob, TeamRole.VIEWER))
    MetricPoint.objects.bulk_create(
        MetricPoint(run=alices_run, step=s, values={"reward/mean": s / 10}) for s in range(1, 4)
    )
    Run.objects.filter(pk=alices_run.pk).update(team=team, status=RunStatus.FAILED, last_step=3, error=TRACEBACK_ERROR)
    path = str(alices_run.run_dir / "checkpoints" / "step-000003")
    Checkpoint.objects.create(run=alices_run, step=3, path=path)
    Event.objects.create(run=alices_run, step=3, kind="checkpoint", data={"path": path}, time=1.0)
    Event.objects.create(
        run=alices_run,
        step=3,
        kind="status",
        time=2.0,
        data={"status": "failed", "error": TRACEBACK_ERROR, "worker": WORKER},
    )
    alices_run.refresh_from_db()
    return alices_run


def leaks(text: str, run: Run) -> list[str]:
    """What of the studio's insides `text` shows: a traceback, a server path, a worker host."""
    return [secret for secret in ("Traceback", "/srv/prorl", str(run.run_dir), WORKER) if secret in text]


def test_a_share_link_shows_a_failed_run_without_traceback_or_paths(client, failed_run):
    token = share(failed_run)
    page = client.get(reverse("share-detail", args=[token])).content.decode()
    metrics = client.get(reverse("share-metrics", args=[token])).content.decode()
    assert leaks(page, failed_run) == [] and leaks(metrics, failed_run) == []
    assert escape(ONE_LINE) in page and json.loads(metrics)["error"] == ONE_LINE
    assert "step 3 · checkpoints/step-000003" in page


def test_a_team_viewer_sees_the_same_over_pages_and_the_api(client, bob, failed_run):
    client.force_login(bob)
    page = client.get(reverse("run-detail", args=[failed_run.pk])).content.decode()
    metrics = client.get(reverse("run-metrics", args=[failed_run.pk])).json()
    token = bearer(api_token(bob))
    run = client.get(reverse("api-run", args=[failed_run.pk]), **token).json()
    listed = client.get(reverse("api-runs"), **token).json()["runs"]
    events = client.get(reverse("api-run-events", args=[failed_run.pk]), **token).json()["events"]
    for text in (page, json.dumps(metrics), json.dumps(run), json.dumps(listed), json.dumps(events)):
        assert leaks(text, failed_run) == []
    assert metrics["error"] == run["error"] == listed[0]["error"] == ONE_LINE
    assert run["checkpoints"][0]["path"] == "checkpoints/step-000003"
    assert [e["data"] for e in events] == [{"path": "checkpoints/step-000003"}, {"status": "failed", "error": ONE_LINE}]


@pytest.mark.parametrize("role", ["owner", "editor"])
def test_alice_and_her_editors_see_the_whole_error(client, alice, bob, failed_run, role):
    if role == "editor":
        failed_run.team.memberships.filter(user=bob).update(role=TeamRole.EDITOR)
    client.force_login(alice if role == "owner" else bob)
    metrics = client.get(reverse("run-metrics", args=[failed_run.pk])).json()
    page = client.get(reverse("run-detail", args=[failed_run.pk])).content.decode()
    run = client.get(reverse("api-run", args=[failed_run.pk]), **bearer(api_token(bob if role == "editor" else alice)))
    assert metrics["error"] == TRACEBACK_ERROR and run.json()["error"] == TRACEBACK_ERROR
    assert escape(TRACEBACK_ERROR) in page and str(failed_run.run_dir / "checkpoints" / "step-000003") in page


def viewer_socket(run: Run, who, token: str = "") -> WebsocketCommunicator:
    query = f"?after=0&share={token}" if token else "?after=0"
    ws = WebsocketCommunicator(URLRouter(websocket_urlpatterns), f"/ws/runs/{run.pk}/{query}")
    ws.scope["user"] = who
    return ws


async def messages_until_status(ws: WebsocketCommunicator) -> list[dict]:
    messages = []
    while not messages or messages[-1]["kind"] != "status":
        messages.append(await ws.receive_json_from(timeout=5))
    return messages


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("channel_layer_settings")
@pytest.mark.parametrize("who", ["share link", "team viewer", "owner"])
def test_the_websocket_gives_each_the_error_they_may_see(failed_run, alice, bob, who):
    ws = (
        viewer_socket(failed_run, AnonymousUser(), share(failed_run))
        if who == "share link"
        else viewer_socket(failed_run, bob if who == "team viewer" else alice)
    )
    live_error = TRACEBACK_ERROR.replace("secret.jsonl", "other.jsonl")

    async def scenario() -> tuple[list[dict], list[dict]]:
        assert (await ws.connect())[0]
        backlog = await messages_until_status(ws)
        layer = get_channel_layer()
        await layer.group_send(
            failed_run.group_name,
            {
                "type": "run.event",
                "event": {
                    "id": 10**6,
                    "step": 3,
                    "kind": "checkpoint",
                    "time": 3.0,
                    "data": {"path": str(failed_run.run_dir / "checkpoints" / "step-000004")},
                },
            },
        )
        await layer.group_send(
            failed_run.group_name,
            {
                "type": "run.status",
                "status": "failed",
                "error": live_error,
                "progress": {"step": 3, "total": 3, "eta_s": None, "status": "failed"},
            },
        )
        live = await messages_until_status(ws)
        await ws.disconnect()
        return backlog, live

    backlog, live = async_to_sync(scenario)()
    if who == "owner":
        assert backlog[-1]["error"] == TRACEBACK_ERROR and live[-1]["error"] == live_error
        assert WORKER in json.dumps(backlog)
        return
    assert leaks(json.dumps(backlog + live), failed_run) == []
    assert backlog[-1]["error"] == ONE_LINE and live[-1]["error"] == ONE_LINE.replace("secret", "other")
    assert [m["event"]["data"] for m in live if m["kind"] == "event"] == [{"path": "checkpoints/step-000004"}]


def test_a_failed_comparison_shows_its_traceback_only_to_its_owner(client, alice, bob, failed_run):
    path = str(failed_run.run_dir / "checkpoints" / "step-000003")
    comparison = Comparison.objects.create(
        owner=alice,
        status=Comparison.Status.FAILED,
        error=TRACEBACK_ERROR,
        settings={"n": 1, "ks": [1], "prompts": 1},
        entries=[
            {"label": "a", "path": path, "run": failed_run.pk, "checkpoint": 1, "step": 3},
            {"label": "base: tiny", "path": "tiny:", "run": None, "checkpoint": None, "step": 0},
        ],
    )
    comparison.runs.set([failed_run])
    url = reverse("compare-data", args=[comparison.pk])
    client.force_login(bob)
    seen = client.get(url).json()
    page = client.get(reverse("compare-detail", args=[comparison.pk])).content.decode()
    assert leaks(json.dumps(seen), failed_run) == [] and leaks(page, failed_run) == []
    assert seen["error"] == ONE_LINE and [e["path"] for e in seen["entries"]] == ["checkpoints/step-000003", "tiny:"]
    client.force_login(alice)
    assert client.get(url).json()["error"] == TRACEBACK_ERROR
