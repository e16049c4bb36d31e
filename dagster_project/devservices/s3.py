"""An S3 endpoint on loopback: a ``moto[server]`` process, for the demo and the integration tests.

A separate process (not moto's in-process mocks) so every client -- the Dagster daemon, run workers, the
tests -- talks real HTTP to it through boto3, exactly as they would to S3 or MinIO.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx


@dataclass
class RunningS3:
    url: str
    process: subprocess.Popen

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def __enter__(self) -> RunningS3:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def wait_until_healthy(url: str, timeout: float = 30.0, process: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"service for {url} exited with code {process.returncode}")
        try:
            if httpx.get(url, timeout=2).status_code < 500:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise TimeoutError(f"{url} did not become healthy within {timeout:.0f}s")


def start_s3(host: str = "127.0.0.1", port: int = 9310, state_dir: Path | None = None) -> RunningS3:
    """Start ``moto_server`` on host:port and wait until it answers; with ``state_dir``, buckets and objects are
    kept there across restarts (:mod:`dagster_project.devservices.s3_store`)."""
    moto = [sys.executable, "-m", "moto.server", "-H", host, "-p", str(port)] if state_dir is None else [
        sys.executable, "-m", "dagster_project.devservices.s3_store", "--host", host, "--port", str(port),
        "--state-dir", str(state_dir)]
    env = {**os.environ, "MOTO_ALLOW_NONEXISTENT_REGION": "true"}
    process = subprocess.Popen(moto, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    url = f"http://{host}:{port}"
    try:
        wait_until_healthy(f"{url}/moto-api/", process=process)
    except Exception:
        process.kill()
        raise
    return RunningS3(url, process)
