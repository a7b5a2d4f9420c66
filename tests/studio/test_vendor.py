"""The front-end libraries come from the npm registry at setup, pinned by hash (studio/vendor.py)."""

from __future__ import annotations

import hashlib
import io
import tarfile

import pytest
from django.core import checks

from studio import vendor
from studio.apps import vendored_assets


def tarball(files: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def asset_for(archive: bytes, member: str, content: bytes) -> vendor.Asset:
    return vendor.Asset(
        package="example",
        version="1.0.0",
        tarball_sha256=hashlib.sha256(archive).hexdigest(),
        member=member,
        file_sha256=hashlib.sha256(content).hexdigest(),
    )


def test_a_pinned_tarball_installs_its_file(tmp_path):
    archive = tarball({"package/lib.min.js": b"window.lib = 1;", "package/README.md": b"# lib"})
    asset = asset_for(archive, "package/lib.min.js", b"window.lib = 1;")
    path = vendor.install(asset, archive, tmp_path)
    assert path == tmp_path / "lib.min.js" and path.read_bytes() == b"window.lib = 1;"
    assert vendor.is_installed(asset, tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["lib.min.js"]  # no partial file left


def test_a_tarball_whose_hash_differs_is_refused(tmp_path):
    archive = tarball({"package/lib.min.js": b"window.lib = 1;"})
    asset = asset_for(archive, "package/lib.min.js", b"window.lib = 1;")
    tampered = tarball({"package/lib.min.js": b"window.lib = 'evil';"})
    with pytest.raises(vendor.VendorError, match="not the pinned"):
        vendor.install(asset, tampered, tmp_path)
    assert not (tmp_path / "lib.min.js").exists()


def test_a_missing_member_or_a_changed_file_is_refused(tmp_path):
    archive = tarball({"package/other.js": b"x"})
    with pytest.raises(vendor.VendorError, match="has no file package/lib.min.js"):
        vendor.extract(asset_for(archive, "package/lib.min.js", b"x"), archive)
    archive = tarball({"package/lib.min.js": b"x"})
    with pytest.raises(vendor.VendorError, match="does not match its pinned sha256"):
        vendor.extract(asset_for(archive, "package/lib.min.js", b"y"), archive)


def test_an_empty_vendor_folder_lists_every_asset_as_missing(tmp_path):
    assert vendor.missing(tmp_path) == list(vendor.ASSETS)
    (tmp_path / "plotly-basic.min.js").write_bytes(b"not plotly")
    assert vendor.missing(tmp_path) == list(vendor.ASSETS)


def test_setup_fetched_plotly_basic_and_the_studio_serves_it(client):
    assert vendored_assets() == []
    served = client.get("/static/studio/plotly-basic.min.js")
    assert served.status_code == 200
    data = b"".join(served.streaming_content) if served.streaming else served.content
    assert hashlib.sha256(data).hexdigest() == vendor.ASSETS[0].file_sha256


def test_the_system_check_names_a_missing_asset_and_the_fix(monkeypatch, tmp_path):
    monkeypatch.setattr(vendor, "VENDOR_DIR", tmp_path)
    (error,) = vendored_assets()
    assert error.level == checks.ERROR and error.id == "studio.E001"
    assert str(tmp_path / "plotly-basic.min.js") in error.msg and "make setup" in error.hint
