"""Uploaded data sets: the studio keeps each file in a folder of its own under the uploads folder, as
the path rules read it, and deleting the entry (in the admin, or with its owner's account) deletes
the file, unless another entry still names it; an entry pointing anywhere else deletes nothing."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from django.urls import reverse

from studio.models import RegisteredDataset, uploads_root

pytestmark = pytest.mark.django_db
REPO = Path(__file__).resolve().parents[2]
RECORDS = [{"prompt": "What is 2 + 2?", "answer": "4"}, {"prompt": "What is 3 + 4?", "answer": "7"}]


@pytest.fixture
def uploads(settings, tmp_path) -> Path:
    settings.UPLOADS_DIR = tmp_path / "uploads"
    return settings.UPLOADS_DIR


def upload(client, tmp_path: Path, name: str) -> RegisteredDataset:
    source = tmp_path / "src" / f"{name}.jsonl"
    source.parent.mkdir(exist_ok=True)
    source.write_text("".join(json.dumps(record) + "\n" for record in RECORDS))
    with open(source, "rb") as handle:
        response = client.post(reverse("registry-upload"), {"name": name, "domain": "math", "file": handle})
    assert response.status_code == 302
    return RegisteredDataset.objects.get(name=name)


def test_deleting_an_uploaded_data_set_deletes_its_file_and_folder(
    client, alice, uploads, tmp_path, django_capture_on_commit_callbacks
):
    client.force_login(alice)
    entry = upload(client, tmp_path, "sums")
    kept = upload(client, tmp_path, "other")
    file = Path(entry.path)
    assert file.is_file() and file.parent.parent == uploads / str(alice.pk)
    with django_capture_on_commit_callbacks(execute=True):
        entry.delete()
    assert not file.exists() and not file.parent.exists()
    assert Path(kept.path).is_file() and (uploads / str(alice.pk)).is_dir()


def test_a_file_another_entry_still_names_is_kept(client, alice, uploads, tmp_path, django_capture_on_commit_callbacks):
    client.force_login(alice)
    entry = upload(client, tmp_path, "sums")
    response = client.post(
        reverse("registry-register"), {"kind": "data", "name": "sums again", "path": entry.path, "domain": "math"}
    )
    assert response.status_code == 302 and RegisteredDataset.objects.get(name="sums again").path == entry.path
    with django_capture_on_commit_callbacks(execute=True):
        entry.delete()
    assert Path(entry.path).is_file()


def test_deleting_alices_account_deletes_her_uploads(
    client, alice, uploads, tmp_path, django_capture_on_commit_callbacks
):
    client.force_login(alice)
    files = [Path(upload(client, tmp_path, name).path) for name in ("a", "b")]
    with django_capture_on_commit_callbacks(execute=True):
        alice.delete()
    assert not RegisteredDataset.objects.exists() and not any(file.exists() for file in files)


def test_an_entry_that_points_outside_its_upload_folder_deletes_nothing(
    alice, uploads, tmp_path, django_capture_on_commit_callbacks
):
    elsewhere = tmp_path / "home" / "alice" / "thesis.jsonl"
    elsewhere.parent.mkdir(parents=True)
    elsewhere.write_text("{}\n")
    in_the_root = uploads / "loose.jsonl"  # no upload folder of its own: the root itself must survive
    in_the_root.parent.mkdir(parents=True)
    in_the_root.write_text("{}\n")
    escaping = uploads / "1" / ".." / ".." / "home" / "alice" / "thesis.jsonl"
    entries = [
        RegisteredDataset.objects.create(name=f"e{i}", owner=alice, path=str(path), domain="math", uploaded=True)
        for i, path in enumerate((elsewhere, in_the_root, escaping))
    ]
    registered = RegisteredDataset.objects.create(
        name="registered", owner=alice, domain="math", uploaded=False, path=str(uploads / "1" / "f00d" / "x.jsonl")
    )
    assert [entry.upload_folder() for entry in entries + [registered]] == [None, None, None, None]
    with django_capture_on_commit_callbacks(execute=True):
        RegisteredDataset.objects.all().delete()
    assert elsewhere.is_file() and in_the_root.is_file()


def test_the_upload_folder_is_read_from_the_project_folder_as_the_path_rules_read_paths(settings):
    settings.UPLOADS_DIR = Path("var/uploads")
    assert uploads_root() == REPO / "var" / "uploads"
    settings.UPLOADS_DIR = REPO / "var" / "x" / ".." / "uploads"
    assert uploads_root() == REPO / "var" / "uploads"
    entry = RegisteredDataset(path="var/uploads/3/f00d/a.jsonl", uploaded=True)
    assert entry.upload_folder() == REPO / "var" / "uploads" / "3" / "f00d"
