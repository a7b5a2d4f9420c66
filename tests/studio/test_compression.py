"""metrics.json's gzip reuses the compression of its cached series head (studio/compression.py)."""

import gzip
import json
import random

import pytest
from django.urls import reverse

from studio import compression
from studio.models import MetricPoint


def test_a_reused_head_and_a_new_tail_make_one_valid_gzip_stream_of_both():
    rng = random.Random(0)
    head = json.dumps({"series": [rng.random() for _ in range(20_000)]})[:-1] + ", "
    for tail in ('"a": 1}', '"b": ' + json.dumps([rng.random() for _ in range(500)]) + "}", "}"):
        stream = compression.gzip_after(compression.deflated_head(head), tail.encode())
        assert gzip.decompress(stream) == (head + tail).encode()  # gzip checks the CRC-32 and the size too
    assert compression.deflated_head.cache_info().hits >= 2  # the head was deflated once


@pytest.mark.django_db
def test_metrics_json_comes_gzipped_to_a_client_that_takes_gzip_and_says_the_same(client, alice, alices_run):
    MetricPoint.objects.bulk_create(
        MetricPoint(run=alices_run, step=s, values={"reward/mean": s / 100, "kl/ref": 0.01}) for s in range(1, 301)
    )
    client.force_login(alice)
    url = reverse("run-metrics", args=[alices_run.pk])
    plain = client.get(url)
    zipped = client.get(url, HTTP_ACCEPT_ENCODING="gzip, deflate, br")
    assert "Content-Encoding" not in plain and zipped["Content-Encoding"] == "gzip"
    assert "Accept-Encoding" in zipped["Vary"]
    a, b = plain.json(), json.loads(gzip.decompress(zipped.content))
    assert a.pop("server_time") <= b.pop("server_time")
    assert a == b and b["series"]["reward/mean"]["values"][-1] == 3.0
    assert len(zipped.content) < len(plain.content) / 3
