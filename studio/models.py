"""What the studio stores about runs.

Metric points are one row per (run, step) holding every key of that step as a JSON dict: a run of
10,000 steps x 40 keys is 10,000 rows read in one indexed range scan, not 400,000.
"""

from __future__ import annotations

import os
import shutil
import time
from functools import cached_property
from pathlib import Path

from django.conf import settings
from django.db import models, transaction
from django.db.models.signals import post_delete
from django.dispatch import receiver
from django.urls import reverse
from django.utils import timezone

from prorl_engine.config import ConfigError, RunConfig
from prorl_engine.data.example import DOMAINS
from prorl_engine.events import CommandKind


class RunStatus(models.TextChoices):
    QUEUED = "queued"
    RUNNING = "running"
    PAUSED = "paused"
    FINISHED = "finished"
    FAILED = "failed"
    STOPPED = "stopped"


TERMINAL_STATUSES = (RunStatus.FINISHED, RunStatus.FAILED, RunStatus.STOPPED)
NOTES_MAX_CHARS = 5000
TAG_MAX_CHARS = 40


class Run(models.Model):
    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="runs")
    name = models.CharField(max_length=200)
    config = models.JSONField(help_text="RunConfig.to_dict() of the run, validated by the engine.")
    status = models.CharField(max_length=16, choices=RunStatus.choices, default=RunStatus.QUEUED, db_index=True)
    error = models.TextField(blank=True)
    total_steps = models.PositiveIntegerField()
    last_step = models.PositiveIntegerField(default=0, help_text="Highest step stored.")
    latest_reward = models.FloatField(null=True, blank=True)
    cloned_from = models.ForeignKey("self", null=True, blank=True, on_delete=models.SET_NULL, related_name="clones")
    team = models.ForeignKey(
        "Team",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="runs",
        help_text="The team whose members see (viewers) or steer (editors) the run.",
    )
    parent_run = models.ForeignKey(
        "self",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="forks",
        help_text="The run this one was forked from.",
    )
    parent_checkpoint = models.ForeignKey(
        "Checkpoint",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="forks",
        help_text="The checkpoint this run starts from.",
    )
    fork_step = models.PositiveIntegerField(
        null=True, blank=True, help_text="Step of the parent checkpoint: the fork's first step is the next."
    )
    created_at = models.DateTimeField(default=timezone.now)
    started_at = models.DateTimeField(null=True, blank=True, help_text="When the current attempt started.")
    finished_at = models.DateTimeField(null=True, blank=True)
    attempts = models.PositiveIntegerField(default=0, help_text="Times a worker took the run up.")
    resumed_from_step = models.PositiveIntegerField(default=0, help_text="Step the current attempt started after.")
    worker = models.CharField(max_length=200, blank=True, help_text="The worker holding the run's lease.")
    heartbeat = models.FloatField(null=True, blank=True, help_text="Unix time of the worker's last lease renewal.")
    notes = models.TextField(
        blank=True, max_length=NOTES_MAX_CHARS, help_text="What the run is for and what came of it, for the runs table."
    )
    imported_from = models.CharField(
        max_length=1000,
        blank=True,
        db_index=True,
        help_text="The CLI run folder it was imported from, absolute (studio/imports.py); empty: trained here.",
    )
    import_fingerprint = models.CharField(
        max_length=64,
        blank=True,
        db_index=True,
        help_text="SHA-256 of the imported folder's config and logs: the same files are not imported twice.",
    )

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"#{self.pk} {self.name}"

    def get_absolute_url(self) -> str:
        return reverse("run-detail", args=[self.pk])

    @property
    def group_name(self) -> str:
        """The channel-layer group every live payload of this run goes to."""
        return f"run-{self.pk}"

    @property
    def run_dir(self) -> Path:
        return Path(settings.RUNS_DIR) / str(self.pk)

    @property
    def is_terminal(self) -> bool:
        return self.status in TERMINAL_STATUSES

    @cached_property
    def run_config(self) -> RunConfig | None:
        """The stored config as the engine reads it, parsed once per instance; None for one stored
        before a bound that now refuses it (its pages show it as stored). Paths are not looked up:
        the files may exist only on the workers, which check them when they train (worker/tasks.py)."""
        try:
            return RunConfig.from_dict(self.config, check_paths=False)
        except ConfigError:
            return None

    def worker_lost(self, now: float | None = None) -> bool:
        """A running run whose worker stopped renewing its lease (crashed, killed, machine gone)."""
        if self.status not in (RunStatus.RUNNING, RunStatus.PAUSED) or self.heartbeat is None:
            return False
        return (now or time.time()) - self.heartbeat > settings.WORKER_LEASE_S


class MetricPoint(models.Model):
    run = models.ForeignKey(Run, on_delete=models.CASCADE, related_name="points")
    step = models.PositiveIntegerField()
    values = models.JSONField(help_text="Every metric key of this step: {'reward/mean': 0.4, ...}.")

    class Meta:
        ordering = ["run", "step"]
        constraints = [models.UniqueConstraint(fields=["run", "step"], name="metricpoint_run_step_unique")]


class Event(models.Model):
    run = models.ForeignKey(Run, on_delete=models.CASCADE, related_name="events")
    step = models.PositiveIntegerField()
    kind = models.CharField(max_length=32, help_text="reset, checkpoint, status, length_penalty, command, eval")
    data = models.JSONField(default=dict)
    time = models.FloatField(help_text="Unix time the engine logged it.")

    class Meta:
        ordering = ["run", "step", "id"]
        indexes = [models.Index(fields=["run", "step"])]


class Sample(models.Model):
    run = models.ForeignKey(Run, on_delete=models.CASCADE, related_name="samples")
    step = models.PositiveIntegerField()
    prompt = models.TextField()
    response = models.TextField()
    reward = models.FloatField()
    verifier_reward = models.FloatField()
    task = models.CharField(max_length=100)
    domain = models.CharField(max_length=32)
    length = models.PositiveIntegerField()
    truncated = models.BooleanField(default=False)
    details = models.JSONField(default=dict)

    class Meta:
        ordering = ["run", "step", "id"]
        indexes = [models.Index(fields=["run", "step"])]


class Checkpoint(models.Model):
    run = models.ForeignKey(Run, on_delete=models.CASCADE, related_name="checkpoints")
    step = models.PositiveIntegerField()
    path = models.CharField(max_length=500)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["run", "step"]
        constraints = [models.UniqueConstraint(fields=["run", "step"], name="checkpoint_run_step_unique")]


class RunTag(models.Model):
    """A label on a run ("baseline", "lr-sweep"): the runs table filters by it. Tags belong to runs,
    not to people: whoever may edit a run (studio.permissions.can_control_run) adds or removes them."""

    run = models.ForeignKey(Run, on_delete=models.CASCADE, related_name="tags")
    name = models.CharField(max_length=TAG_MAX_CHARS, db_index=True)

    class Meta:
        ordering = ["name"]
        constraints = [models.UniqueConstraint(fields=["run", "name"], name="runtag_run_name_unique")]

    def __str__(self) -> str:
        return self.name


class Command(models.Model):
    """A person's request to a live run, applied by the engine at its next step boundary."""

    Kind = models.TextChoices("Kind", [(kind.name, kind.value) for kind in CommandKind])  # the engine's kinds

    run = models.ForeignKey(Run, on_delete=models.CASCADE, related_name="commands")
    kind = models.CharField(max_length=32, choices=Kind.choices)
    requested_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL)
    created_at = models.DateTimeField(default=timezone.now)
    delivered_at = models.DateTimeField(null=True, blank=True, help_text="When the worker handed it to the engine.")

    class Meta:
        ordering = ["created_at", "id"]
        indexes = [models.Index(fields=["run", "delivered_at"])]


# --- sharing and access: teams, share links, API tokens (rules in studio/permissions.py) -----------


class Team(models.Model):
    name = models.CharField(max_length=100)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["name", "id"]

    def __str__(self) -> str:
        return self.name

    def get_absolute_url(self) -> str:
        return reverse("team-detail", args=[self.pk])


class TeamRole(models.TextChoices):
    """viewer: sees the team's runs; editor: also steers, forks and compares them; owner: also
    manages the team (members, roles)."""

    OWNER = "owner"
    EDITOR = "editor"
    VIEWER = "viewer"


class Membership(models.Model):
    team = models.ForeignKey(Team, on_delete=models.CASCADE, related_name="memberships")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="memberships")
    role = models.CharField(max_length=16, choices=TeamRole.choices, default=TeamRole.VIEWER)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["team", "user__username"]
        constraints = [models.UniqueConstraint(fields=["team", "user"], name="membership_team_user_unique")]


class ShareLink(models.Model):
    """A read-only link to one run page, opened without login. Only the SHA-256 of its token is
    stored: the token itself is shown once, when the link is made."""

    run = models.ForeignKey(Run, on_delete=models.CASCADE, related_name="share_links")
    token_hash = models.CharField(max_length=64, unique=True)
    label = models.CharField(max_length=100, blank=True)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+")
    created_at = models.DateTimeField(default=timezone.now)
    expires_at = models.DateTimeField(null=True, blank=True, help_text="Refused from then on; never if empty.")
    revoked_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]

    def is_active(self, now=None) -> bool:
        now = now or timezone.now()
        return self.revoked_at is None and (self.expires_at is None or self.expires_at > now)


class ApiToken(models.Model):
    """A person's token for scripts (`Authorization: Bearer <token>`); stored as its SHA-256."""

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="api_tokens")
    name = models.CharField(max_length=100)
    token_hash = models.CharField(max_length=64, unique=True)
    created_at = models.DateTimeField(default=timezone.now)
    last_used_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]


# --- comparisons: evaluation jobs on checkpoints (studio/compare.py, worker/eval_tasks.py) ---------


class Comparison(models.Model):
    """An evaluation job: several models (checkpoints or base models) answer the same held-out
    prompts on a worker; `result` is the engine's `Comparison.to_dict()`."""

    class Status(models.TextChoices):
        QUEUED = "queued"
        RUNNING = "running"
        FINISHED = "finished"
        FAILED = "failed"

    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="comparisons")
    runs = models.ManyToManyField(
        Run,
        related_name="comparisons",
        blank=True,
        help_text="Runs whose checkpoints or prompts it uses: who may see it.",
    )
    entries = models.JSONField(help_text='[{"label", "path", "run", "checkpoint", "step"}], in column order.')
    settings = models.JSONField(
        help_text="n, ks, prompts, max_new_tokens and the config whose held-out prompts are used."
    )
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.QUEUED)
    error = models.TextField(blank=True)
    result = models.JSONField(null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return f"comparison #{self.pk}: " + " vs ".join(entry["label"] for entry in self.entries)

    def get_absolute_url(self) -> str:
        return reverse("compare-detail", args=[self.pk])

    @property
    def is_done(self) -> bool:
        return self.status in (self.Status.FINISHED, self.Status.FAILED)


# --- the registry: models and data sets people may train from (rules in studio/paths.py) ----------


class RegistryEntry(models.Model):
    """A named model folder or data file on the studio's machines. Its owner, staff and every member
    of its team may start runs from it; nobody else learns that it exists."""

    name = models.CharField(max_length=100)
    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="%(class)ss")
    team = models.ForeignKey(
        Team,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="%(class)ss",
        help_text="Whose members may use it too; empty: only its owner (and staff).",
    )
    path = models.CharField(max_length=1000, help_text="Absolute, normalised path on the workers.")
    description = models.CharField(max_length=300, blank=True)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        abstract = True
        ordering = ["name", "id"]
        constraints = [models.UniqueConstraint(fields=["owner", "name"], name="%(class)s_owner_name_unique")]

    def __str__(self) -> str:
        return self.name


class RegisteredModel(RegistryEntry):
    """A save_pretrained folder (weights and tokenizer) a run may start from: its `model_path`."""


class RegisteredDataset(RegistryEntry):
    """A JSONL or Parquet file of records (prorl_engine/verifiers/README.md): a `file` data source."""

    domain = models.CharField(
        max_length=16,
        choices=[(domain, domain) for domain in DOMAINS],
        help_text="The verifier that scores its records.",
    )
    uploaded = models.BooleanField(default=False, help_text="The studio keeps the file, under UPLOADS_DIR.")
    size_bytes = models.PositiveBigIntegerField(null=True, blank=True)

    def data_source(self) -> dict:
        """The data-mix entry that trains on this file."""
        return {"task": self.name, "source": "file", "path": self.path, "domain": self.domain}

    def upload_folder(self) -> Path | None:
        """The folder the studio made for this upload (<uploads>/<user id>/<random>/<file>), or None
        for a registered path, or an entry whose path (an admin's edit) lies anywhere else."""
        path = Path(os.path.normpath(Path(settings.BASE_DIR) / self.path))
        root = uploads_root()
        if not self.uploaded or not path.is_relative_to(root) or len(path.relative_to(root).parts) != 3:
            return None
        return path.parent


def uploads_root() -> Path:
    """settings.UPLOADS_DIR as the path rules read it (studio.paths): absolute, relative ones from the
    project folder, normalised; so the path stored for an upload is the file a run's worker opens."""
    return Path(os.path.normpath(Path(settings.BASE_DIR) / settings.UPLOADS_DIR))


@receiver(post_delete, sender=RegisteredDataset)
def _delete_uploaded_file(sender: type[RegisteredDataset], instance: RegisteredDataset, **kwargs) -> None:
    """Deleting an uploaded data set (in the admin, or with its owner's account) deletes its file, once
    the deletion is committed, unless another registry entry still names the file."""
    folder = instance.upload_folder()
    if folder is None:
        return

    def remove() -> None:
        still_named = (
            RegisteredDataset.objects.filter(path=instance.path).exists()
            or RegisteredModel.objects.filter(path=instance.path).exists()
        )
        if not still_named:
            shutil.rmtree(folder, ignore_errors=True)

    transaction.on_commit(remove)


# --- watchdogs: rules on a live run's health (studio/watchdogs.py) --------------------------------


class Watchdog(models.Model):
    """A rule on one run: a metric below or above a threshold for a number of consecutive steps
    ("policy/entropy below 0.05 for 20 steps"), or no new step for some minutes; when it holds, it
    fires once (an Event of kind "watchdog") and takes its action, then re-arms when it stops
    holding. Its state (`streak`, `tripped`, `last_step_at`) is kept here so that it survives
    the sink's batches, worker restarts and edits of other rules."""

    class Kind(models.TextChoices):
        METRIC = "metric"
        STALE = "stale", "no new step"

    class Direction(models.TextChoices):
        BELOW = "below", "below"
        ABOVE = "above", "above"

    class Action(models.TextChoices):
        NOTIFY = "notify", "notify"
        PAUSE = "pause", "pause"
        RESET_REFERENCE = "reset_reference", "reset reference"

    run = models.ForeignKey(Run, on_delete=models.CASCADE, related_name="watchdogs")
    kind = models.CharField(max_length=16, choices=Kind.choices, default=Kind.METRIC)
    metric = models.CharField(max_length=100, blank=True, help_text="The metric key, e.g. policy/entropy.")
    direction = models.CharField(max_length=8, choices=Direction.choices, blank=True)
    threshold = models.FloatField(null=True, blank=True)
    for_steps = models.PositiveIntegerField(default=1, help_text="Consecutive steps the condition must hold.")
    stale_minutes = models.FloatField(null=True, blank=True, help_text="No new step for this long (stale rules).")
    action = models.CharField(max_length=16, choices=Action.choices, default=Action.NOTIFY)
    webhook_url = models.URLField(max_length=500, blank=True, help_text='POSTed {"text": ...} when it fires.')
    email = models.CharField(max_length=500, blank=True, help_text="Comma-separated addresses mailed when it fires.")
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+")
    created_at = models.DateTimeField(default=timezone.now)
    streak = models.PositiveIntegerField(default=0, help_text="Consecutive steps the condition has held so far.")
    tripped = models.BooleanField(default=False, help_text="Fired, and the condition has held ever since.")
    last_step_at = models.FloatField(null=True, blank=True, help_text="Unix time a new step last arrived.")
    fired_count = models.PositiveIntegerField(default=0)
    last_fired_at = models.DateTimeField(null=True, blank=True)
    last_fired_step = models.PositiveIntegerField(null=True, blank=True)
    last_delivery = models.CharField(max_length=500, blank=True, help_text="What became of the last notification.")

    class Meta:
        ordering = ["run", "id"]

    def __str__(self) -> str:
        return self.text

    @property
    def condition(self) -> str:
        """The rule as a person writes it, without its action: "kl/ref above 0.1 for 5 steps"."""
        if self.kind == self.Kind.STALE:
            return f"no new step for {self.stale_minutes:g} minutes"
        steps = f" for {self.for_steps} steps" if self.for_steps > 1 else ""
        return f"{self.metric} {self.direction} {self.threshold:g}{steps}"

    @property
    def text(self) -> str:
        """The rule as the watchdog field holds it (studio.watchdogs.parse_rules reads it back)."""
        return f"{self.condition} -> {self.get_action_display()}"


# --- workers: who consumes the queues (studio/workers.py; written by worker/presence.py) ----------


class WorkerPresence(models.Model):
    """One Celery worker process, as it reports itself every few seconds from a thread of its own
    (so a worker busy training, which answers no Celery broadcast, still shows as alive)."""

    name = models.CharField(max_length=200, unique=True, help_text="host:pid, the name its run leases carry.")
    node = models.CharField(max_length=200, help_text="The Celery node name, e.g. gpu-worker@host.")
    queues = models.JSONField(default=list, help_text="The queues it consumes.")
    gpus = models.CharField(max_length=200, blank=True, help_text="GPUs it declared (PRORL_WORKER_GPUS).")
    started_at = models.DateTimeField(default=timezone.now)
    last_seen = models.FloatField(help_text="Unix time of its last report.")
    stopped_at = models.DateTimeField(null=True, blank=True, help_text="When it shut down cleanly.")

    class Meta:
        ordering = ["node", "name"]

    def __str__(self) -> str:
        return self.node or self.name

    def is_alive(self, now: float | None = None) -> bool:
        """Reported within WORKER_LEASE_S (the run lease's own limit) and not shut down."""
        return self.stopped_at is None and (now or time.time()) - self.last_seen <= settings.WORKER_LEASE_S
