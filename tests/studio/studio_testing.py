"""Helpers of the studio tests."""

from __future__ import annotations

import http.server
import json
import threading
from collections.abc import Collection
from datetime import timedelta
from pathlib import Path

from django.utils import timezone

from prorl_engine.config import RunConfig
from studio.models import Run, Watchdog
from studio.presets import default_values
from studio.watchdogs import parse_rule, save_rules


def tiny_config(**changes) -> RunConfig:
    """The engine's tiny CPU preset as a validated RunConfig, with `changes` applied."""
    return RunConfig.from_dict({**default_values(), **changes}, check_paths=False)


def make_run(owner, name: str, minutes_ago: float = 0, **fields) -> Run:
    """A run of the tiny preset owned by `owner`, created `minutes_ago` (its place in the queue), with `fields` set."""
    config = tiny_config()
    return Run.objects.create(
        owner=owner,
        name=name,
        config=config.to_dict(),
        total_steps=config.steps,
        created_at=timezone.now() - timedelta(minutes=minutes_ago),
        **fields,
    )


def write_checkpoints(run, steps: Collection[int], resets: Collection[int] = ()) -> list:
    """Checkpoint folders of `run` at `steps`, as its trainer writes them but without training, each
    registered as a Checkpoint row the way the worker's sink registers it.

    The Trainer is built from the run's config; step by step up to max(steps) its policy moves by a
    small seeded step (seed = the step), standing in for an update, so every checkpoint is a distinct
    model; at each step of `resets` the reference is reset through `Trainer.reset_reference` (pi_ref
    <- pi_theta, one reset_history record). The folders are written by prorl_engine.checkpoint.save
    with the trainer's `state_dict()`, so a fork or an evaluation loads them as it loads trained ones.
    """
    import torch

    from prorl_engine import checkpoint as ckpt
    from prorl_engine.events import NullSink
    from prorl_engine.reset import INTERVAL
    from prorl_engine.trainer import Trainer
    from studio.models import Checkpoint

    trainer = Trainer(RunConfig.from_dict(run.config, check_paths=False), run.run_dir, NullSink())
    written = []
    for step in range(1, max(steps) + 1):
        trainer.step = step
        moves = torch.Generator().manual_seed(step)
        with torch.no_grad():
            for parameter in trainer.policy.parameters():
                parameter.add_(1e-2 * torch.randn(parameter.shape, generator=moves).to(parameter))
        if step in resets:
            trainer.reset_reference(INTERVAL)
        if step in steps:
            path = ckpt.save(
                run.run_dir, step, trainer.policy, trainer.tokenizer, trainer.reference, trainer.state_dict()
            )
            written.append(Checkpoint.objects.create(run=run, step=step, path=str(path)))
    return written


def form_data(config: RunConfig | None = None, **changes) -> dict[str, str]:
    """What the browser posts for `config` (the tiny preset by default), with `changes` typed in."""
    from studio.forms import initial_from_config

    initial = initial_from_config((config or tiny_config()).to_dict())
    data = {"name": "a run"}
    for key, value in initial.items():
        if value is False:
            continue  # an unticked checkbox sends nothing
        data[key] = "on" if value is True else "" if value is None else str(value)
    data.update({key: str(value) for key, value in changes.items()})
    return data


class Browserless:
    """A person using the studio over plain HTTP: cookies, CSRF tokens, forms."""

    def __init__(self, base_url: str):
        import http.cookiejar
        import urllib.request

        self.base_url = base_url
        self.cookies = http.cookiejar.CookieJar()
        self.opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(self.cookies))

    def csrf_token(self) -> str:
        return next(cookie.value for cookie in self.cookies if cookie.name == "csrftoken")

    def get(self, path: str) -> tuple[int, str]:
        with self.opener.open(self.base_url + path, timeout=30) as response:
            return response.status, response.read().decode()

    def post(self, path: str, data: dict[str, str]) -> tuple[int, str, str]:
        """(status, final url after redirects, body)."""
        import urllib.error
        import urllib.parse
        import urllib.request

        body = urllib.parse.urlencode({**data, "csrfmiddlewaretoken": self.csrf_token()}).encode()
        request = urllib.request.Request(self.base_url + path, data=body, headers={"Referer": self.base_url + path})
        try:
            with self.opener.open(request, timeout=60) as response:
                return response.status, response.url, response.read().decode()
        except urllib.error.HTTPError as error:
            return error.code, error.url, error.read().decode()

    def log_in(self, username: str, password: str) -> None:
        self.get("/accounts/login/")
        status, url, _ = self.post("/accounts/login/", {"username": username, "password": password})
        assert status == 200 and not url.endswith("/accounts/login/"), "login failed"


def rule_on(run: Run, text: str, **extra) -> Watchdog:
    """The run's one watchdog rule, `text`, by its owner (`webhook_url`, `email`: where it notifies)."""
    save_rules(run, [parse_rule(text)], extra.pop("webhook_url", ""), extra.pop("email", ""), run.owner)
    return Watchdog.objects.get(run=run)


class Receiver:
    """A local webhook endpoint: records every JSON body POSTed to it."""

    def __init__(self):
        self.bodies: list[dict] = []
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                length = int(self.headers["Content-Length"])
                receiver.bodies.append(json.loads(self.rfile.read(length)))
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = http.server.HTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()


def descendants(pid: int) -> set[int]:
    """Every descendant of `pid`, from /proc (children in sessions of their own included)."""
    parents: dict[int, list[int]] = {}
    for status in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = status.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        parents.setdefault(int(fields[1]), []).append(int(status.parent.name))
    found, todo = set(), [pid]
    while todo:
        for child in parents.get(todo.pop(), []):
            found.add(child)
            todo.append(child)
    return found
