"""`python manage.py import_run RUN_DIR [RUN_DIR ...] --owner USERNAME [--name NAME] [--tag TAG ...] [--again]`

Makes each CLI run folder (`prorl train --out RUN_DIR`, or the runs of `prorl ablate --runs DIR`) a
run of the studio, viewable and comparable like the runs it trained (studio/imports.py). One line
per imported run; a folder that is refused is said so on stderr and the others are still imported.
"""

from __future__ import annotations

from argparse import ArgumentParser
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError

from studio.imports import NAME_MAX_CHARS, ImportRefused, checked_tags, import_run_folder, owner_named


class Command(BaseCommand):
    help = "Import run folders written by the CLI (prorl train, prorl ablate) as studio runs."

    def add_arguments(self, parser: ArgumentParser) -> None:
        parser.add_argument(
            "folders", nargs="+", type=Path, metavar="RUN_DIR", help="a folder with config.yaml and metrics.jsonl"
        )
        parser.add_argument("--owner", required=True, help="username of the person whose runs they become")
        parser.add_argument("--name", default="", help="the run's name (one folder only; default: the folder's path)")
        parser.add_argument("--tag", action="append", default=[], dest="tags", help="a tag for every run (repeatable)")
        parser.add_argument(
            "--again", action="store_true", help="import folders imported before once more, as new runs"
        )

    def handle(
        self, *args: Any, folders: list[Path], owner: str, name: str, tags: list[str], again: bool, **options: Any
    ) -> None:
        if name and len(folders) > 1:
            raise CommandError(f"--name names one run, and {len(folders)} folders were given")
        if len(name) > NAME_MAX_CHARS:
            raise CommandError(f"--name: at most {NAME_MAX_CHARS} characters")
        try:
            user = owner_named(owner)
            tags = checked_tags(tags)
        except ImportRefused as exc:
            raise CommandError(str(exc)) from None
        refused = 0
        for folder in folders:
            try:
                run = import_run_folder(folder, user, name=name, tags=tags, again=again)
            except ImportRefused as exc:
                refused += 1
                self.stderr.write(f"not imported: {exc}")
                continue
            steps = run.points.count()
            self.stdout.write(f"run {run.pk} {run.name!r}: {steps} steps, {run.status}, {run.get_absolute_url()}")
        if refused:
            raise CommandError(f"{refused} of {len(folders)} folders not imported (see above)")
