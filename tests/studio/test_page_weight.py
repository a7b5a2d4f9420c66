"""Pages light: Alice's run page, with everything it loads first, comes over the wire in under
1.5 MB; static files are compressed and kept by the browser; no page script asks for a WebGL trace."""

from __future__ import annotations

import gzip
import re
from pathlib import Path

import pytest
from django.conf import settings
from django.urls import reverse

from studio.models import MetricPoint

pytestmark = pytest.mark.django_db

GZIP = {"HTTP_ACCEPT_ENCODING": "gzip"}
SCRIPTS = Path(settings.BASE_DIR) / "static" / "studio"


def body(response) -> bytes:
    return b"".join(response.streaming_content) if response.streaming else response.content


def test_the_run_page_comes_over_the_wire_in_under_1_5_mb(client, alice, alices_run):
    MetricPoint.objects.bulk_create(
        MetricPoint(run=alices_run, step=s, values={"reward/mean": s / 100, "kl/ref": 0.01}) for s in range(1, 301)
    )
    client.force_login(alice)
    page = client.get(reverse("run-detail", args=[alices_run.pk]), **GZIP)
    html = gzip.decompress(page.content).decode()
    sizes = {"page": len(page.content)}
    assets = re.findall(r'<(?:script src|link rel="stylesheet" href)="([^"]+)"', html)
    assert "/static/studio/plotly-basic.min.js" in assets and len(assets) >= 4
    for url in assets:
        response = client.get(url, **GZIP)
        assert response.status_code == 200 and response["Content-Encoding"] == "gzip", url
        assert response["Cache-Control"] == f"max-age={settings.WHITENOISE_MAX_AGE}, public", url
        sizes[url] = len(body(response))
    sizes["metrics.json"] = len(client.get(reverse("run-metrics", args=[alices_run.pk]), **GZIP).content)
    assert sum(sizes.values()) < 1_500_000, sizes
    assert sizes["/static/studio/plotly-basic.min.js"] < 500_000  # the full plotly.min.js: 1.47 MB gzipped


def test_a_static_file_is_revalidated_by_its_etag(client):
    first = client.get("/static/studio/run.js")
    assert first.status_code == 200 and first["ETag"]
    again = client.get("/static/studio/run.js", HTTP_IF_NONE_MATCH=first["ETag"])
    assert again.status_code == 304


@pytest.mark.parametrize("script", ["run.js", "compare_overlay.js", "charts.js"])
def test_no_chart_script_asks_for_a_webgl_trace(script):
    text = (SCRIPTS / script).read_text()
    assert "scattergl" not in text and "gl2d" not in text
    assert set(re.findall(r'type: "(\w+)"', text)) <= {"scatter", "rect", "line", "log", "category"}


def test_the_curves_are_drawn_by_the_shared_svg_traces():
    charts = (SCRIPTS / "charts.js").read_text()
    assert charts.count('type: "scatter"') == 2  # rawTrace and mainTrace: every page's curves
