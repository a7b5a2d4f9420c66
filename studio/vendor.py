"""Front-end libraries the pages load, fetched from the npm registry at setup rather than kept in the tree.

`make setup` runs `python -m studio.vendor`: each package's tarball comes from the npm registry, is checked
against the sha256 pinned below (a changed or tampered tarball is refused), and the files the pages need are
written to var/vendor/, which settings.STATICFILES_DIRS serves under /static/studio/. Only the standard library
is used, so this runs before the virtualenv exists. A file already present with its pinned hash is not fetched
again.
"""

from __future__ import annotations

import hashlib
import io
import sys
import tarfile
import urllib.request
from dataclasses import dataclass
from pathlib import Path

VENDOR_DIR = Path(__file__).resolve().parent.parent / "var" / "vendor"
STATIC_PREFIX = "studio"  # the files are served as /static/studio/<name>
REGISTRY = "https://registry.npmjs.org"


@dataclass(frozen=True)
class Asset:
    package: str
    version: str
    tarball_sha256: str
    member: str  # the file inside the tarball
    file_sha256: str

    @property
    def name(self) -> str:
        return Path(self.member).name

    @property
    def url(self) -> str:
        return f"{REGISTRY}/{self.package}/-/{self.package}-{self.version}.tgz"


# Plotly's "basic" bundle: scatter, bar and pie only, SVG traces (no WebGL trace type, so a page with many charts
# never runs out of WebGL contexts), 396 kB compressed against 1.47 MB for the full plotly.min.js.
ASSETS = (
    Asset(
        package="plotly.js-basic-dist-min",
        version="4.1.1",
        tarball_sha256="ea907f854b6cec4f6a2fa71540ec019a21ed2c61e6a109ddd5c072103a96eed0",
        member="package/plotly-basic.min.js",
        file_sha256="99784e3abfb07b142a15e521a439e6d9addceadb3f79553fd24c72774f0649ba",
    ),
)


class VendorError(RuntimeError):
    """A tarball that cannot be fetched, or whose content is not what this file pins."""


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def extract(asset: Asset, tarball: bytes) -> bytes:
    """The asset's file from its tarball, after both hashes are checked."""
    if sha256(tarball) != asset.tarball_sha256:
        raise VendorError(
            f"{asset.package}@{asset.version}: the tarball's sha256 is {sha256(tarball)}, "
            f"not the pinned {asset.tarball_sha256}; refusing it"
        )
    with tarfile.open(fileobj=io.BytesIO(tarball), mode="r:gz") as archive:
        try:
            member = archive.extractfile(asset.member)
        except KeyError:
            member = None
        if member is None:
            raise VendorError(f"{asset.package}@{asset.version}: the tarball has no file {asset.member}")
        data = member.read()
    if sha256(data) != asset.file_sha256:
        raise VendorError(f"{asset.package}@{asset.version}: {asset.member} does not match its pinned sha256")
    return data


def is_installed(asset: Asset, folder: Path) -> bool:
    path = folder / asset.name
    return path.is_file() and sha256(path.read_bytes()) == asset.file_sha256


def fetch(asset: Asset, timeout_s: float = 60) -> bytes:
    try:
        with urllib.request.urlopen(asset.url, timeout=timeout_s) as response:
            return response.read()
    except OSError as error:
        raise VendorError(f"cannot fetch {asset.url}: {error}") from error


def install(asset: Asset, tarball: bytes, folder: Path = VENDOR_DIR) -> Path:
    """Writes the asset's file into `folder` (through a temporary name, so a reader never sees half a file)."""
    data = extract(asset, tarball)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / asset.name
    partial = path.with_name(path.name + ".part")
    partial.write_bytes(data)
    partial.replace(path)
    return path


def missing(folder: Path | None = None) -> list[Asset]:
    return [asset for asset in ASSETS if not is_installed(asset, folder or VENDOR_DIR)]


def main() -> int:
    for asset in missing():
        try:
            path = install(asset, fetch(asset))
        except VendorError as error:
            print(f"studio.vendor: {error}", file=sys.stderr)
            return 1
        print(f"studio.vendor: {asset.package}@{asset.version} -> {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
