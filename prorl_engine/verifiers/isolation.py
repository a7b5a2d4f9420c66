"""The parts every bubblewrap sandbox of the project is built from: the code verifier's `Sandbox`
(sandbox.py) and the scorer helpers (scorer_sandbox.py, for scorer_pool.py) alike.

- `find_tools`: bwrap and prlimit on PATH, or `SandboxUnavailable` saying what to install;
- `prlimit_arguments`: `prlimit --as --fsize --nofile --core=0 [--cpu] --`, the rlimits set before
  bwrap starts;
- `isolation_arguments`: the bwrap command line: every namespace new, only the given environment,
  read-only /usr and the system links into it, a fresh /proc and /dev, a bounded /tmp tmpfs, the
  given files (in-memory, from `memory_file`) read-only under /sandbox, and nothing else;
- `unprivileged_options`: the Popen options that drop a root worker to nobody;
- `kill_group`: SIGKILL to a sandbox's process group.

`SANDBOX_ENV` is the whole environment of a sandbox (and of the prlimit and bwrap processes that
start it, since bwrap's own process is PID 1 inside and its /proc/1/environ is readable there).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess

KIB = 1024
MIB = 1024 * KIB
SYSTEM_LINKS = ("/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")  # symlinks into /usr on merged-usr systems
SANDBOX_ENV = {"PATH": "/usr/bin:/bin", "HOME": "/tmp", "LANG": "C.UTF-8", "PYTHONHASHSEED": "0"}


class SandboxUnavailable(RuntimeError):
    """The sandbox cannot start here; the message says why (missing bwrap, no user namespaces, ...)."""


def find_tools(bwrap: str = "bwrap", prlimit: str = "prlimit") -> tuple[str, str]:
    """Absolute paths of bwrap and prlimit (looked up on PATH), or SandboxUnavailable naming the missing one."""
    found = []
    for name in (bwrap, prlimit):
        path = shutil.which(name)
        if path is None:
            raise SandboxUnavailable(
                f"{name!r} not found: install bubblewrap and util-linux (scripts/install_system.sh); "
                "model output is never run or parsed without the sandbox"
            )
        found.append(path)
    return found[0], found[1]


def prlimit_arguments(
    prlimit: str, *, memory_bytes: int, file_bytes: int, open_files: int, cpu_seconds: int | None = None
) -> list[str]:
    """`prlimit --as=... -- `: the rlimits set before bwrap starts (no core files; CPU only when given)."""
    cpu = [f"--cpu={cpu_seconds}"] if cpu_seconds is not None else []
    return [prlimit, *cpu, f"--as={memory_bytes}", f"--fsize={file_bytes}", f"--nofile={open_files}", "--core=0", "--"]


def isolation_arguments(
    bwrap: str,
    environment: dict[str, str],
    tmpfs_bytes: int,
    files: dict[str, int],
    read_only: tuple[tuple[str, str], ...] = (),
    die_with_parent: bool = True,
    info_fd: int | None = None,
) -> list[str]:
    """The bwrap command line up to (not including) its `--`: every namespace new, `environment` only,
    read-only /usr, a fresh /proc and /dev, a bounded /tmp tmpfs, each of `files` (name -> memfd)
    read-only at /sandbox/<name>, the `read_only` (source, destination) folders, and nothing else.

    `die_with_parent` ends the sandbox with the thread that started it: right for one run, wrong for
    a long-lived helper started from a short-lived thread (that one ends when its stdin closes, or
    when its caller kills the PID that bwrap writes to `info_fd`: PID 1 of the sandbox's namespace).
    """
    namespaces = [bwrap, "--unshare-all", "--unshare-user", "--disable-userns", "--new-session"]
    namespaces += ["--die-with-parent"] if die_with_parent else []
    namespaces += ["--info-fd", str(info_fd)] if info_fd is not None else []
    variables = ["--clearenv"] + [arg for name, value in environment.items() for arg in ("--setenv", name, value)]
    mounts = ["--ro-bind", "/usr", "/usr", *_system_links(), "--proc", "/proc", "--dev", "/dev"]
    mounts += ["--size", str(tmpfs_bytes), "--tmpfs", "/tmp"]
    for name, fd in files.items():
        mounts += ["--ro-bind-data", str(fd), f"/sandbox/{name}"]
    for source, destination in read_only:
        mounts += ["--ro-bind", source, destination]
    mounts += ["--remount-ro", "/dev", "--remount-ro", "/", "--chdir", "/tmp"]
    return [*namespaces, *variables, "--hostname", "sandbox", *mounts]


def unprivileged_options(uid: int = 65534) -> dict:
    """Popen options that drop a root worker to `uid` (done in C, thread-safe); none for other users.

    The kernel does not apply RLIMIT_NPROC to root, and `uid` (nobody) owns no files worth reading.
    """
    if os.geteuid() != 0:
        return {}
    return {"user": uid, "group": uid, "extra_groups": []}


def _system_links() -> list[str]:
    """bwrap arguments that recreate /bin, /lib, ...: the same symlink, or a read-only bind."""
    arguments = []
    for path in SYSTEM_LINKS:
        if os.path.islink(path):
            arguments += ["--symlink", os.readlink(path), path]
        elif os.path.isdir(path):
            arguments += ["--ro-bind", path, path]
    return arguments


def memory_file(name: str, data: bytes) -> int:
    """An anonymous in-memory file holding `data`, positioned at its start: nothing on disk."""
    fd = os.memfd_create(name)
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]
    os.lseek(fd, 0, os.SEEK_SET)
    return fd


def kill_group(process: subprocess.Popen) -> None:
    """SIGKILL the sandbox's process group (before it is reaped, so the group id cannot be reused)."""
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
