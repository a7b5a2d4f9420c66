"""While the database is away, Alice's pages and her scripts get 503 with a retry hint, not 500:
the run page as a short page, the API and the JSON endpoints as a JSON error, each with Retry-After
and the same security headers as any page, whether a view or a middleware (the session's) met the
outage. Once the database is back, the same pages answer."""

from __future__ import annotations

import contextlib
from unittest import mock

import pytest
from access_testing import api_token, bearer
from asgiref.sync import async_to_sync
from django.db import InterfaceError, OperationalError, ProgrammingError, connection
from django.test import AsyncClient, Client
from django.urls import reverse
from fault_testing import DatabaseOutage

from studio.middleware import DATABASE_AWAY_MESSAGE

pytestmark = pytest.mark.django_db
REFUSED = 'connection to server at "127.0.0.1", port 5432 failed: Connection refused'


@contextlib.contextmanager
def queries_fail(error: Exception):
    """Every query of this thread's connection raises `error`, as it does while the server is down."""

    def refuse(execute, sql, params, many, context):
        raise error

    with connection.execute_wrapper(refuse):
        yield


@contextlib.contextmanager
def connection_dropped():
    """The connection is gone (psycopg: "connection already closed"): opening a cursor raises."""
    with mock.patch.object(connection, "cursor", side_effect=InterfaceError("connection already closed")):
        yield


OUTAGES = {
    "server down": lambda: queries_fail(OperationalError(REFUSED)),
    "connection dropped": connection_dropped,
}


def assert_security_headers(response) -> None:
    assert "script-src 'self'" in response["Content-Security-Policy"]
    assert "frame-ancestors 'none'" in response["Content-Security-Policy"]
    assert response["X-Frame-Options"] == "DENY"
    assert response["X-Content-Type-Options"] == "nosniff"


@pytest.mark.parametrize("outage", list(OUTAGES))
def test_alices_run_page_answers_503_with_a_retry_hint_and_the_usual_security_headers(
    client, alice, alices_run, outage
):
    client.force_login(alice)
    with OUTAGES[outage]():
        response = client.get(alices_run.get_absolute_url())

    assert response.status_code == 503 and response["Retry-After"] == "10"
    page = response.content.decode()
    assert "<h1>Back in a moment</h1>" in page and "Try again in 10 seconds." in page
    assert "alice" not in page and "Traceback" not in page and "5432" not in page
    assert_security_headers(response)
    assert client.get(alices_run.get_absolute_url()).status_code == 200  # the database is back


@pytest.mark.parametrize("outage", list(OUTAGES))
def test_the_api_and_the_json_endpoints_answer_503_as_json(client, alice, alices_run, outage):
    token = api_token(alice)
    client.force_login(alice)
    with OUTAGES[outage]():
        api = client.get(reverse("api-run", args=[alices_run.pk]), **bearer(token))
        metrics = client.get(reverse("run-metrics", args=[alices_run.pk]))

    for response in (api, metrics):
        assert response.status_code == 503 and response["Retry-After"] == "10"
        assert response.json() == {"error": DATABASE_AWAY_MESSAGE, "retry_after": 10}
        assert_security_headers(response)
    assert DATABASE_AWAY_MESSAGE == "The studio's database is not answering; try again in 10 seconds."
    assert client.get(reverse("api-run", args=[alices_run.pk]), **bearer(token)).json()["id"] == alices_run.pk


def test_a_query_that_is_wrong_is_no_outage_and_is_not_hidden_behind_a_503(client, alice, alices_run):
    client.force_login(alice)
    with queries_fail(ProgrammingError('relation "studio_run" does not exist')), pytest.raises(ProgrammingError):
        client.get(alices_run.get_absolute_url())


@pytest.mark.parametrize("handler", ["wsgi", "asgi"])
def test_a_database_that_goes_away_under_the_session_middleware_answers_503(alice, monkeypatch, handler):
    """Alice logs in; the view stores her new session, and the database goes away before the session
    middleware saves it once more on the way out: that middleware's error is a 503 too, not a 500
    (nor Django's 400 "session deleted before the request completed"). Under ASGI, as daphne serves
    it, Django handles a middleware's error in another thread."""
    outage = DatabaseOutage(monkeypatch)
    outage.refuse_from('UPDATE "django_session"', 1)
    login = (reverse("login"), {"username": "alice", "password": "alice-password"})
    if handler == "asgi":  # the response, not the exception, as a server gets it
        response = async_to_sync(AsyncClient(raise_request_exception=False).post)(*login)
    else:
        response = Client(raise_request_exception=False).post(*login)

    assert outage.refused == 1
    assert response.status_code == 503 and response["Retry-After"] == "10"
    assert "<h1>Back in a moment</h1>" in response.content.decode()
    assert_security_headers(response)
