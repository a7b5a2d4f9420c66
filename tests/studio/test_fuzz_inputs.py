"""Fuzzing the ways a config gets in (the run form, the schedule preview, the YAML import, the API's
run creation) and the API's query parameters with hostile values: no answer is a 500, and every run
created has a config that validates. Example counts are bounded so the file runs in well under a minute."""

from __future__ import annotations

import json

import pytest
import yaml
from access_testing import api_token, bearer, fast_passwords  # noqa: F401 (a fixture)
from django.urls import reverse
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from studio_testing import form_data, tiny_config

from prorl_engine.config import RunConfig
from studio.models import Run

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("fast_passwords")]

FUZZ = settings(
    max_examples=30,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.data_too_large],
)
CONFIG_FIELDS = [spec.name for spec in RunConfig.field_specs()]

# Text a person or a script could send: odd numbers, odd characters, a lot of one character.
SPECIAL = [
    "",
    " ",
    "0",
    "-1",
    "1.5",
    "²",
    "١٢",
    "1e400",
    "-1e400",
    "nan",
    "inf",
    "1e40",
    "0x10",
    "1_000",
    str(2**31),
    str(2**63),
    "9" * 30,
    "\x00",
    "a\x00b",
    "true",
    "null",
    "[]",
    "{}",
    "~",
    "&a [*a]",
    "tiny:",
    "tiny:../../etc",
    "/etc/passwd",
    "!!binary aGVsbG8=",
    "2020-01-01",
]
texts = st.one_of(
    st.sampled_from(SPECIAL),
    st.text(st.characters(blacklist_categories=("Cs",)), max_size=40),
    st.builds(
        lambda char, n: char * n, st.sampled_from(["a", "[", "9", "\x00", "{a: ", "- "]), st.integers(100, 150_000)
    ),
)
json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats()
    | st.text(max_size=20)
    | st.sampled_from(SPECIAL),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4),
    max_leaves=12,
)


@st.composite
def hostile_yaml(draw) -> str:
    """YAML a hostile person writes: deep nesting, alias bombs, odd tags, a data mix with odd values."""
    kind = draw(st.sampled_from(["deep", "bomb", "mix", "text"]))
    if kind == "deep":
        depth = draw(st.integers(1, 6000))
        return "- " + "[" * depth + "]" * draw(st.sampled_from([depth, 0]))
    if kind == "bomb":
        fan, levels = draw(st.integers(2, 12)), draw(st.integers(1, 9))
        lines = ["- task: chain_sum", "  params:", f"    l0: &l0 [{', '.join(['1'] * fan)}]"]
        lines += [f"    l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * fan)}]" for i in range(1, levels)]
        return "\n".join(lines)
    if kind == "mix":
        source = {
            "task": "chain_sum",
            "size": 20,
            **draw(
                st.dictionaries(
                    st.sampled_from(
                        [
                            "task",
                            "source",
                            "weight",
                            "size",
                            "path",
                            "domain",
                            "params",
                            "instruction",
                            "eval_size",
                            "extra",
                        ]
                    ),
                    json_values,
                    max_size=3,
                )
            ),
        }
        return yaml.safe_dump([source])
    return draw(texts)


@pytest.fixture
def as_alice(client, alice, queued):
    client.force_login(alice)
    return client


def with_data(changes: dict[str, str], data: str | None) -> dict[str, str]:
    """The fields typed in, with the data mix replaced by `data` when one was drawn."""
    return changes if data is None else {**changes, "data": data}


def assert_every_run_validates() -> None:
    """No run was created from an invalid config: each one's stored config validates as it is."""
    for run in Run.objects.all():
        config = RunConfig.from_dict(run.config, check_paths=False)
        assert run.total_steps == config.steps


@FUZZ
@given(
    changes=st.dictionaries(st.sampled_from(CONFIG_FIELDS + ["name"]), texts, min_size=1, max_size=4),
    data=st.one_of(st.none(), hostile_yaml()),
)
def test_the_run_form_never_answers_500_nor_stores_an_invalid_config(as_alice, changes, data):
    fields = form_data(**with_data(changes, data))
    before = Run.objects.count()
    response = as_alice.post(reverse("run-new"), fields)
    assert response.status_code in (302, 400), response.status_code
    assert Run.objects.count() == before + (response.status_code == 302)
    assert_every_run_validates()


@FUZZ
@given(
    changes=st.dictionaries(st.sampled_from(CONFIG_FIELDS), texts, max_size=4),
    data=st.one_of(st.none(), hostile_yaml()),
)
def test_the_preview_never_answers_500_and_stays_small(as_alice, changes, data):
    response = as_alice.post(reverse("run-preview"), form_data(**with_data(changes, data)))
    assert response.status_code in (200, 400), response.status_code
    body = response.json()
    if response.status_code == 200:
        assert len(body["windows"]) <= 2001 and len(body["resets"]) <= 2001
    else:
        assert body["errors"] and all(": " in message for message in body["errors"])


@FUZZ
@given(
    text=st.one_of(
        hostile_yaml(),
        st.builds(
            lambda data, extra: yaml.safe_dump({**tiny_config().to_dict(), "data": data, **extra}),
            st.just([{"task": "chain_sum"}]),
            st.dictionaries(st.sampled_from(CONFIG_FIELDS), json_values, max_size=3),
        ),
    )
)
def test_the_yaml_import_never_answers_500(as_alice, text):
    before = Run.objects.count()
    response = as_alice.post(reverse("run-import"), {"yaml_text": text})
    assert response.status_code in (200, 400), response.status_code
    assert Run.objects.count() == before  # an import only fills the form


@FUZZ
@given(
    body=st.one_of(
        st.builds(
            lambda changes: {"name": "fuzzed", "config": {**tiny_config().to_dict(), **changes}},
            st.dictionaries(st.sampled_from(CONFIG_FIELDS + ["extra"]), json_values, min_size=1, max_size=3),
        ),
        json_values,
        st.sampled_from(["[" * 100_000, "{" * 5000, "\x00", "nan", '{"name": "a\\u0000", "config": {}}']),
    )
)
def test_the_api_run_creation_never_answers_500_nor_stores_an_invalid_config(client, alice, body):
    token = api_token(alice)
    payload = body if isinstance(body, str) else json.dumps(body)
    before = Run.objects.count()
    response = client.post("/api/v1/runs/", data=payload, content_type="application/json", **bearer(token))
    assert response.status_code in (201, 400), response.status_code
    assert Run.objects.count() == before + (response.status_code == 201)
    assert_every_run_validates()


@FUZZ
@given(
    endpoint=st.sampled_from(["", "{run}/", "{run}/metrics/", "{run}/events/", "{run}/commands/"]),
    query=st.dictionaries(
        st.sampled_from(["since", "after_id", "limit", "keys", "kind", "status", "downsample"]), texts, max_size=3
    ),
)
def test_the_api_query_parameters_never_answer_500(client, alice, alices_run, endpoint, query):
    token = api_token(alice)
    response = client.get("/api/v1/runs/" + endpoint.format(run=alices_run.pk), query, **bearer(token))
    assert response.status_code in (200, 400), response.status_code
    if response.status_code == 400:
        assert response.json()["field"] in query
