"""Real Redis and PostgreSQL servers for the ledger tests and benchmarks, on 127.0.0.1.

Each server runs from a fresh temporary directory on a free port and is stopped by its PID.
PostgreSQL is ``initdb``'d into that directory and, when we are root, run as an unprivileged
user (it refuses to run as root). Redis keeps an append-only file, so a restart (``restart``)
comes back with every acknowledged write, as a production ledger's Redis must be configured.

``start_postgres(durable=False)`` (the test session's shared server) still writes every
committed change to the OS before answering (a killed or restarted server loses nothing) but
never waits for the disk (``fsync=off``): only a power cut could tell the difference, and no
test makes one. Redis always fsyncs: the Redis ledger refuses any other set-up. Benchmarks and
the tests that restart their own server keep the default, durable set-up.

``python -m tests.ledger.servers`` starts both, prints their URLs and waits (Ctrl-C stops them).
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["Server", "ServerUnavailable", "start_postgres", "start_redis"]

_PG_BIN = sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True)


class ServerUnavailable(RuntimeError):
    """This machine cannot run the server (not installed, or it would not start)."""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _which(name: str) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    for directory in _PG_BIN:
        if (directory / name).exists():
            return str(directory / name)
    return None


def _wait_port(port: int, proc: subprocess.Popen[bytes], log: Path, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise ServerUnavailable(f"exited with {proc.returncode}: {log.read_text()[-800:]}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    proc.kill()
    raise ServerUnavailable(f"did not listen on 127.0.0.1:{port} within {timeout} s")


@dataclass
class Server:
    """One running server; ``url`` is what ``open_ledger`` takes."""

    name: str
    url: str
    port: int
    directory: Path
    argv: list[str]
    user: int | None = None
    proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)
    ready: str = ""

    def start(self) -> None:
        log = self.directory / f"{self.name}.log"
        offset = log.stat().st_size if log.exists() else 0
        with log.open("ab") as out:
            self.proc = subprocess.Popen(
                self.argv,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                cwd=self.directory,
                user=self.user,
                group=None if self.user is None else pwd.getpwuid(self.user).pw_gid,
                extra_groups=None if self.user is None else [],
                start_new_session=True,
            )
        try:
            _wait_port(self.port, self.proc, log)
            if self.ready:  # PostgreSQL listens before it accepts connections
                deadline = time.monotonic() + 30
                while self.ready not in log.read_text(errors="replace")[offset:]:
                    if time.monotonic() > deadline or self.proc.poll() is not None:
                        raise ServerUnavailable(f"{self.name} never became ready")
                    time.sleep(0.05)
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        """SIGTERM by PID (both servers then flush and exit cleanly), SIGKILL after 20 s."""
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM if self.name == "redis" else signal.SIGINT)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def restart(self) -> None:
        self.stop()
        self.start()

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.directory, ignore_errors=True)


def _workdir(name: str, user: int | None) -> Path:
    directory = Path(tempfile.mkdtemp(prefix=f"agentguard-{name}-"))
    if user is not None:
        os.chown(directory, user, pwd.getpwuid(user).pw_gid)
    return directory


def start_redis() -> Server:
    binary = _which("redis-server")
    if binary is None:
        raise ServerUnavailable(
            "redis-server is not installed (Debian: apt-get install redis-server)"
        )
    port = _free_port()
    directory = _workdir("redis", None)
    argv = [
        binary,
        "--bind", "127.0.0.1",
        "--port", str(port),
        "--dir", str(directory),
        "--save", "",
        "--appendonly", "yes",
        "--appendfsync", "always",
        "--daemonize", "no",
        "--protected-mode", "yes",
    ]  # fmt: skip
    server = Server("redis", f"redis://127.0.0.1:{port}/0", port, directory, argv)
    server.start()
    return server


def _unprivileged() -> int | None:
    """PostgreSQL's own account (or nobody) when we are root; None when we are not root."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        try:
            return pwd.getpwnam(name).pw_uid
        except KeyError:
            continue
    raise ServerUnavailable("running as root and no unprivileged user to run PostgreSQL as")


def start_postgres(*, durable: bool = True) -> Server:
    initdb, postgres = _which("initdb"), _which("postgres")
    if initdb is None or postgres is None:
        raise ServerUnavailable("PostgreSQL is not installed (Debian: apt-get install postgresql)")
    user = _unprivileged()
    directory = _workdir("postgres", user)
    data = directory / "data"
    group = None if user is None else pwd.getpwuid(user).pw_gid
    done = subprocess.run(
        [initdb, "-D", str(data), "-U", "agentguard", "--auth=trust", "-E", "UTF8", "--no-sync"],
        capture_output=True,
        cwd=directory,
        user=user,
        group=group,
        extra_groups=None if user is None else [],
        check=False,
    )
    if done.returncode != 0:
        shutil.rmtree(directory, ignore_errors=True)
        raise ServerUnavailable(f"initdb failed: {done.stderr.decode(errors='replace')[-800:]}")
    port = _free_port()
    argv = [
        postgres,
        "-D", str(data),
        "-p", str(port),
        "-h", "127.0.0.1",
        "-k", str(directory),
        "-c", "max_connections=300",
        "-c", "shared_buffers=64MB",
        *([] if durable else ["-c", "fsync=off"]),
    ]  # fmt: skip
    server = Server(
        "postgres",
        f"postgresql://agentguard@127.0.0.1:{port}/postgres",
        port,
        directory,
        argv,
        user=user,
        ready="ready to accept connections",
    )
    server.start()
    return server


if __name__ == "__main__":
    servers = [start_redis(), start_postgres()]
    try:
        for s in servers:
            print(f"{s.name}: {s.url} (pid {s.proc.pid if s.proc else '?'})", flush=True)
        signal.pause()
    except KeyboardInterrupt:
        pass
    finally:
        for s in servers:
            s.close()
