"""Crash safety of ``streamfold up``: ``kill -9`` at random moments during ingest, then restart.

Real processes: ``streamfold up`` runs as a subprocess on its own data directory (persistent DynamoDB
Local under it) and a free port; a sender thread posts batches and remembers which were acknowledged.
Every trial kills the process with SIGKILL at a random moment (during start-up or during ingest), checks
that its DynamoDB Local died with it, and starts the next one on the same data directory.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from base64 import b64encode
from pathlib import Path
from typing import IO, Any

import pytest

from tooling.dynamodb_local import free_port, is_dynamodb_local

pytestmark = pytest.mark.timeout(300)

ROOT = Path(__file__).resolve().parents[2]
TRIALS = int(os.environ.get("STREAMFOLD_CRASH_TRIALS", "6"))
ACCOUNT = "acme-crash"


def _env(data_dir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("STREAMFOLD_")}
    env.update(STREAMFOLD_DATA_DIR=str(data_dir), STREAMFOLD_TABLE_PREFIX="crash-", PYTHONUNBUFFERED="1")
    return env


def _up(data_dir: Path, port: int, log: IO[bytes]) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-m", "tooling.cli", "up", "--port", str(port)], cwd=ROOT,
                            env=_env(data_dir), stdout=log, stderr=subprocess.STDOUT)


def _request(url: str, body: Any = None, headers: dict[str, str] | None = None,
             timeout: float = 5.0) -> tuple[int, Any]:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method="POST" if data else "GET",
                                 headers={"Content-Type": "application/json", "Accept": "application/json",
                                          **(headers or {})})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, json.loads(resp.read() or b"null")
    except urllib.error.HTTPError as exc:
        return exc.code, None


def _ready(url: str, proc: subprocess.Popen[bytes], timeout: float = 60.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            if _request(f"{url}/api/openapi.json", timeout=2)[0] == 200:
                return True
        except OSError:
            pass
        time.sleep(0.1)
    return False


class Sender(threading.Thread):
    """Posts batches of 5 track events (fresh message ids) until stopped; counts acknowledged events."""

    def __init__(self, url: str, write_key: str) -> None:
        super().__init__(daemon=True)
        self.url = url
        self.auth = {"Authorization": "Basic " + b64encode(f"{write_key}:".encode()).decode()}
        self.acked = 0
        self.attempted = 0
        self.requests = 0
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            batch = [{"type": "track", "event": "Crash Test", "userId": f"u{random.randrange(20)}",
                      "messageId": uuid.uuid4().hex, "context": {"groupId": ACCOUNT}} for _ in range(5)]
            self.attempted += len(batch)
            self.requests += 1
            try:
                status, _ = _request(f"{self.url}/v1/batch", {"batch": batch}, self.auth, timeout=5)
            except OSError:
                time.sleep(0.05)
                continue
            if status == 200:
                self.acked += len(batch)


def _counted(url: str, token: str) -> int:
    try:
        status, body = _request(f"{url}/api/accounts/{ACCOUNT}/usage?days=2",
                                headers={"Authorization": f"Bearer {token}"})
    except OSError:
        return -1
    return sum(body["totals"]) if status == 200 else 0


def _dynamodb_locals_on(data_dir: Path) -> list[int]:
    """Live DynamoDB Local processes whose database is under ``data_dir`` (from /proc)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and is_dynamodb_local(int(entry.name)):
            try:
                if str(data_dir).encode() in (entry / "cmdline").read_bytes():
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


def _wait_gone(data_dir: Path, timeout: float = 10.0) -> list[int]:
    deadline = time.monotonic() + timeout
    while True:
        left = _dynamodb_locals_on(data_dir)
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.1)


def test_kill_9_during_ingest_loses_no_acknowledged_event(tmp_path: Path, output_dir: Path) -> None:
    data_dir = tmp_path / "data"
    log = open(tmp_path / "up.log", "ab")
    rng = random.Random(int(os.environ.get("STREAMFOLD_CRASH_SEED", "9")))
    trials: list[dict[str, Any]] = []
    acked = attempted = requests = 0
    creds: dict[str, str] | None = None
    t_start = time.monotonic()
    procs: list[subprocess.Popen[bytes]] = []
    try:
        for trial in range(TRIALS):
            port = free_port()
            url = f"http://127.0.0.1:{port}"
            proc = _up(data_dir, port, log)
            procs.append(proc)
            # One trial in four dies during start-up; the others 0.5-4 s into ingest.
            during_startup = trial % 4 == 1
            kill_after = rng.uniform(1.0, 5.0) if during_startup else rng.uniform(0.5, 4.0)
            sender: Sender | None = None
            ready = False
            if during_startup:
                time.sleep(kill_after)
            else:
                assert _ready(url, proc), f"trial {trial}: streamfold up did not come up"
                ready = True
                if creds is None:
                    out = subprocess.run([sys.executable, "-m", "tooling.cli", "tenant", "create", "Crash Co"],
                                         cwd=ROOT, env=_env(data_dir), capture_output=True, text=True, check=True)
                    creds = json.loads(out.stdout.strip().splitlines()[-1])
                    auth = {"Authorization": "Basic " + b64encode(f"{creds['write_key']}:".encode()).decode()}
                    group = {"groupId": ACCOUNT, "userId": "u0", "traits": {"name": "Acme"}}
                    assert _request(f"{url}/v1/group", group, auth)[0] == 200
                sender = Sender(url, creds["write_key"])
                sender.start()
                time.sleep(kill_after)
            stack_json = data_dir / "stack.json"
            info = json.loads(stack_json.read_text()) if stack_json.exists() else {}
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(10)
            if sender is not None:
                sender.stop.set()
                sender.join(10)
                acked += sender.acked
                attempted += sender.attempted
                requests += sender.requests
            ddb_pid = info.get("dynamodb_pid") if info.get("pid") == proc.pid else None
            left = _wait_gone(data_dir)
            trials.append({"trial": trial, "killed_after_s": round(kill_after, 2),
                           "killed": "during ingest" if ready else "during start-up",
                           "acked_so_far": acked, "dynamodb_pid": ddb_pid, "orphans": left})
            assert not left, f"trial {trial}: DynamoDB Local {left} outlived kill -9 of streamfold up"
        crash_phase = time.monotonic() - t_start
        assert creds is not None, "no trial got as far as a ready stack"

        # Restart on the same data directory: everything acknowledged is counted, by itself.
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        proc = _up(data_dir, port, log)
        procs.append(proc)
        assert _ready(url, proc), "restart after the crashes did not come up"
        restarted = time.monotonic()
        second = subprocess.run([sys.executable, "-m", "tooling.cli", "up", "--port", str(free_port())], cwd=ROOT,
                                env=_env(data_dir), capture_output=True, text=True, timeout=60)
        assert second.returncode == 3 and "already running" in second.stderr, second.stderr
        counted = 0
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            counted = _counted(url, creds["api_token"])
            if counted >= acked:
                break
            time.sleep(0.5)
        catch_up = time.monotonic() - restarted
        figures = {"trials": TRIALS, "requests": requests, "events_attempted": attempted, "events_acked": acked,
                   "events_counted": counted, "catch_up_s": round(catch_up, 1), "crash_phase_s": round(crash_phase, 1),
                   "per_trial": trials}
        (output_dir / "crash.json").write_text(json.dumps(figures, indent=2))
        print(json.dumps(figures))
        assert acked > 0, figures
        assert acked <= counted <= attempted, figures
        assert _dynamodb_locals_on(data_dir)
        os.kill(proc.pid, signal.SIGINT)  # a clean stop also stops its DynamoDB Local
        proc.wait(30)
        assert _wait_gone(data_dir) == []
        assert not (data_dir / "stack.json").exists()
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait(10)
        log.close()
