"""The sandbox a scorer helper runs in: its command line, limits, interpreter and site-packages.

`HelperSandbox.start(script, arguments)` starts one helper (scorer_helper.py, for scorer_pool.py) as
a bubblewrap sandbox of the same family as the code verifier's (sandbox.py, built from isolation.py):

    [as uid 65534 when the worker is root] prlimit --as --fsize --nofile --core=0 -- bwrap
        --unshare-all ... -- PYTHON -S -s -B -P /sandbox/helper.py PROFILE NPROC /sandbox/site-packages/0 ...

- namespaces: all new: no network, its own PIDs, no further user namespaces, no capabilities;
- files: read-only /usr, the interpreter's own prefix when it lives elsewhere (read-only, at its own
  path), the trainer's site-packages folders read-only at /sandbox/site-packages/N, the helper
  script, a bounded /tmp tmpfs; nothing else: no project files, no run folders, no home, no /etc;
- environment: only PATH, HOME=/tmp, LANG, PYTHONHASHSEED=0 and one thread for the BLAS libraries;
- limits (`HelperLimits`): address space, file size, open files and process count for the helper;
  and per call, in the helper's forked child, the wall-clock timeout (SIGKILL) and CPU seconds.

When the worker runs as root, the helper runs as nobody, who may not be able to read the trainer's
interpreter (pyenv under a 0700 /root): then the system's `/usr/bin/pythonX.Y` of the same version
runs the same site-packages (one minor version, one ABI), or `start` says why it cannot. A
site-packages folder nobody cannot reach by path is handed over as an open directory descriptor,
but only when that shows nothing beyond the trainer's own environment.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import sysconfig
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from prorl_engine.verifiers.isolation import (
    MIB,
    SANDBOX_ENV,
    SandboxUnavailable,
    find_tools,
    isolation_arguments,
    memory_file,
    prlimit_arguments,
    unprivileged_options,
)

GIB = 1024 * MIB
HELPER_PATH = "/sandbox/helper.py"
SITE_ROOT = "/sandbox/site-packages"
HELPER_ENV = {**SANDBOX_ENV, "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


@dataclass(frozen=True)
class HelperLimits:
    """Resource limits of each scorer helper and the children it forks for calls."""

    memory_bytes: int = 2 * GIB
    """RLIMIT_AS: the helper's imports use about 250 MB of it; sympy on a hostile answer gets
    MemoryError beyond it, not the machine's RAM."""
    processes: int = 8
    """RLIMIT_NPROC in the sandbox's user namespace: the helper, one child per call, and spare."""
    file_bytes: int = 1 * MIB
    """RLIMIT_FSIZE: scorers write no files; this bounds one in the /tmp tmpfs."""
    open_files: int = 256
    """RLIMIT_NOFILE: reasoning-gym's imports open data files."""
    tmpfs_bytes: int = 16 * MIB
    """Size of the writable /tmp."""


@dataclass(frozen=True)
class Started:
    """A started helper: the process (stdin and stdout are pipes), its stderr (an anonymous file to
    read when it fails to start) and bwrap's info pipe (JSON with the sandbox's PID 1)."""

    process: subprocess.Popen
    log: IO[bytes]
    info: IO[bytes]

    def namespace_pid(self) -> int | None:
        """The host PID of the sandbox's PID 1 (bwrap has written it once the helper runs), or None."""
        try:
            return int(json.loads(self.info.read())["child-pid"])
        except (ValueError, KeyError, TypeError, OSError):
            return None
        finally:
            self.info.close()


class HelperSandbox:
    """Builds and starts the sandboxed helper command; one instance serves any number of helpers.

    bwrap, prlimit    the executables (looked up on PATH).
    limits            the helper's resource limits.
    unprivileged_uid  the user a root worker drops to before starting the sandbox.
    """

    def __init__(
        self,
        bwrap: str = "bwrap",
        prlimit: str = "prlimit",
        limits: HelperLimits = HelperLimits(),
        unprivileged_uid: int = 65534,
    ) -> None:
        self.bwrap = bwrap
        self.prlimit = prlimit
        self.limits = limits
        self.unprivileged_uid = unprivileged_uid

    def start(self, script: bytes, arguments: list[str]) -> Started:
        """Start `script` as /sandbox/helper.py with `arguments`, then the site-packages folders'
        paths inside the sandbox, as its command-line arguments.

        Raises SandboxUnavailable when the sandbox cannot be set up here.
        """
        bwrap, prlimit = find_tools(self.bwrap, self.prlimit)
        python, binds = self.interpreter()
        sites, site_fds = self._site_arguments()
        script_fd = memory_file("helper.py", script)
        info_read, info_write = os.pipe()
        log = tempfile.TemporaryFile()
        limits = self.limits
        command = [
            *prlimit_arguments(
                prlimit, memory_bytes=limits.memory_bytes, file_bytes=limits.file_bytes, open_files=limits.open_files
            ),
            *isolation_arguments(
                bwrap,
                HELPER_ENV,
                limits.tmpfs_bytes,
                {"helper.py": script_fd},
                read_only=(*binds, *sites),
                die_with_parent=False,
                info_fd=info_write,
            ),
            "--",
            python,
            "-S",
            "-s",
            "-B",
            "-P",
            HELPER_PATH,
            *arguments,
            *(inside for _, inside in sites),
            *(f"/proc/self/fd/{fd}" for fd in site_fds),
        ]
        try:
            process = subprocess.Popen(
                command,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=log,
                pass_fds=(script_fd, info_write, *site_fds),
                env=HELPER_ENV,  # bwrap's own process is PID 1 inside: its /proc/1/environ must hold no secrets
                process_group=0,  # no terminal Ctrl-C; the pool kills the whole group
                **unprivileged_options(self.unprivileged_uid),
            )
        except OSError as error:
            log.close()
            os.close(info_read)
            raise SandboxUnavailable(f"cannot start {bwrap}: {error}") from error
        finally:
            for fd in (script_fd, info_write, *site_fds):
                os.close(fd)
        return Started(process, log, os.fdopen(info_read, "rb"))

    def _site_arguments(self) -> tuple[list[tuple[str, str]], list[int]]:
        """The site-packages folders as read-only binds at /sandbox/site-packages/N, and, for those
        the unprivileged user cannot reach by path (a project cloned under a 0700 folder, such as
        `mktemp -d` or /root), open directory descriptors that the helper imports from as
        /proc/self/fd/N. bwrap resolves a bind's source as that user, so it cannot bind them.

        A descriptor shows more than a bind: `..` from it climbs the host's tree until a folder the
        user may not search. So it is used only when that climb stays inside the trainer's own
        environment (sys.prefix: the virtualenv, the same software the helper imports anyway);
        a climb that would reach the project's files (its var/ folder, its database) is refused."""
        binds, fds = [], []
        environment = Path(os.path.realpath(sys.prefix))
        for path in self.site_packages():
            if self._drops_privileges() and not _others_can_read(path):
                exposed = _reachable_from(path)
                if exposed != environment and environment not in exposed.parents:
                    raise SandboxUnavailable(
                        f"uid {self.unprivileged_uid} cannot read the site-packages folder {path}, and "
                        f"handing it over would show {exposed} to the sandbox; make the folders above "
                        f"{environment} searchable by others (chmod o+x) or move the environment"
                    )
                fds.append(os.open(path, os.O_RDONLY | os.O_DIRECTORY))
            else:
                binds.append((path, f"{SITE_ROOT}/{len(binds)}"))
        return binds, fds

    def interpreter(self) -> tuple[str, tuple[tuple[str, str], ...]]:
        """The Python the helper runs and the folders to bind for it (read-only, at their own path)."""
        version = f"python{sys.version_info.major}.{sys.version_info.minor}"
        prefix = os.path.realpath(sys.base_prefix)
        own = os.path.realpath(os.path.join(prefix, "bin", version))
        if own.startswith("/usr/") and os.access(own, os.X_OK):
            return own, ()
        if os.access(own, os.X_OK) and (not self._drops_privileges() or _others_can_read(prefix)):
            return own, ((prefix, prefix),)
        system = f"/usr/bin/{version}"
        if os.access(system, os.X_OK):
            return system, ()
        raise SandboxUnavailable(
            f"the scorer helper's Python: uid {self.unprivileged_uid} cannot read {prefix}, and there is no "
            f"{system} of the same version; install {version} under /usr or make {prefix} world-readable"
        )

    def site_packages(self) -> list[str]:
        """The trainer's site-packages folders (what the scorers import)."""
        paths = []
        for key in ("purelib", "platlib"):
            path = os.path.realpath(sysconfig.get_path(key))
            if path not in paths and os.path.isdir(path):
                paths.append(path)
        return paths

    def _drops_privileges(self) -> bool:
        return bool(unprivileged_options(self.unprivileged_uid))


def _reachable_from(path: str) -> Path:
    """The highest folder that a user with no relation to the owner reaches from an open descriptor
    of `path` by `..` (each step needs search permission on the folder it starts from)."""
    top = Path(path)
    while top.parent != top and os.stat(top.parent).st_mode & stat.S_IXOTH:
        top = top.parent
    return top


def _others_can_read(path: str) -> bool:
    """Whether a user with no relation to the owner can reach `path` and list it (mode bits only)."""
    current = Path(path)
    for folder in (current, *current.parents):
        mode = os.stat(folder).st_mode
        if not mode & stat.S_IXOTH:
            return False
    return bool(os.stat(current).st_mode & stat.S_IROTH)
