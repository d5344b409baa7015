"""Fixtures for the dashboard and team-server tests: seeded stores, an in-process client, real
server processes on loopback ports, and Debian's Chromium through Playwright."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from seed import seed_study  # noqa: E402

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                  "--disable-sync", "--no-first-run"]
LABFOLIO = str(Path(sys.executable).with_name("labfolio"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(port: int, proc: subprocess.Popen, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}: {proc.stdout.read() if proc.stdout else ''}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"nothing listened on port {port} within {timeout}s")


class ServerProcess:
    """`labfolio ui` or `labfolio server` in its own process, as a user starts it."""

    def __init__(self, args: list[str], port: int, env: dict | None = None, log: Path | None = None):
        self.args, self.port, self.env, self.log = args, port, env, log
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> "ServerProcess":
        env = {**os.environ, **(self.env or {})}
        env.pop("LABFOLIO_SERVER", None)
        out = open(self.log, "ab") if self.log else subprocess.DEVNULL
        self.proc = subprocess.Popen([LABFOLIO, *self.args, "--port", str(self.port), "--host", "127.0.0.1"],
                                     env=env, stdout=out, stderr=subprocess.STDOUT)
        wait_for_port(self.port, self.proc)
        return self

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.proc = None


@pytest.fixture
def seeded_store(tmp_path):
    from labfolio.store import open_store

    store = open_store(tmp_path / "lf")
    seed_study(store)
    yield store
    store.close()


@pytest.fixture
def client(seeded_store):
    from fastapi.testclient import TestClient

    from labfolio.web.app import WebSettings, create_app

    with TestClient(create_app(seeded_store, WebSettings())) as c:
        yield c


@pytest.fixture
def browser():
    """Headless Debian Chromium driven by Playwright (never a downloaded browser build)."""
    if not Path(CHROMIUM).exists() or shutil.which(CHROMIUM) is None:
        message = f"{CHROMIUM} is missing: apt-get install -y chromium"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)
    try:
        from playwright.sync_api import sync_playwright
    except ModuleNotFoundError:
        if IN_CI:
            pytest.fail("playwright is missing: pip install -e '.[dev]'")
        pytest.skip("playwright is not installed")
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_FLAGS)
        yield b
        b.close()
