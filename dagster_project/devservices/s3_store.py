"""The embedded S3 with a memory: moto's server, whose buckets and objects are mirrored to a folder and restored
when it starts again.

Why: ``make demo`` uploads gold sets and drops and exports manifests to S3, and ``make dev`` must serve the UI over
that same world -- an operator who drops a new batch there expects the gold set to still be there. moto keeps state
in memory only (its recorder replays every request, reads included, so it grows without bound), so this process
wraps moto's WSGI application: after every successful write (PUT, POST, DELETE) it mirrors the affected bucket to
``<state dir>/<bucket>/`` -- per object a JSON file of metadata named by a hash of the key, written last and naming
its data file (named by a hash of the bytes), so a crash in between leaves the previous version whole --
and on start it loads the mirror back with each object's original ``LastModified`` (the landing sensor compares
arrival times, so a restart must not make every file look new). Reading and restoring objects uses moto's backend
objects directly: a dev stand-in, pinned with moto; production uses S3 or MinIO.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import threading
from datetime import datetime
from pathlib import Path
from typing import Any

from dagster_project.clock import as_utc

WRITE_METHODS = {"PUT", "POST", "DELETE"}


def _backend() -> Any:
    from moto.core import DEFAULT_ACCOUNT_ID
    from moto.s3.models import s3_backends

    return s3_backends[DEFAULT_ACCOUNT_ID]["aws"]


def _name(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


class Mirror:
    """The on-disk copy of every bucket (what survives a restart)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.root.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._etags: dict[str, dict[str, str]] = {}

    def restore(self) -> int:
        """Create the mirrored buckets and objects in moto; returns how many objects came back."""
        backend, restored = _backend(), 0
        for bucket_dir in sorted(p for p in self.root.iterdir() if p.is_dir()):
            bucket_name = bucket_dir.name
            if bucket_name not in backend.buckets:
                backend.create_bucket(bucket_name, "us-east-1")
            etags = self._etags.setdefault(bucket_name, {})
            for meta_file in bucket_dir.glob("*.json"):
                try:
                    meta = json.loads(meta_file.read_text("utf-8"))
                    data = (bucket_dir / meta["data"]).read_bytes()
                except (OSError, ValueError) as exc:  # one damaged entry must not keep the whole S3 down
                    print(f"s3_store: skipping {meta_file}: {exc}", file=sys.stderr, flush=True)
                    continue
                key = backend.put_object(bucket_name, meta["key"], data)
                key.set_metadata(meta.get("metadata", {}))
                if meta.get("content_type"):
                    key.set_metadata({"Content-Type": meta["content_type"]})
                key.last_modified = as_utc(datetime.fromisoformat(meta["last_modified"]))
                if meta.get("etag"):  # a multipart upload's ETag is not the MD5 of its bytes: keep the original
                    key._etag = meta["etag"].strip('"')
                etags[meta["key"]] = f"{key.etag}@{as_utc(key.last_modified).isoformat()}"
                restored += 1
        return restored

    def sync(self, bucket_name: str) -> None:
        """Make the mirror of ``bucket_name`` equal to moto's bucket (written files replaced atomically)."""
        with self._lock:
            backend = _backend()
            bucket = backend.buckets.get(bucket_name)
            folder = self.root / bucket_name
            if bucket is None:
                if folder.exists():
                    for path in folder.iterdir():
                        path.unlink()
                    folder.rmdir()
                self._etags.pop(bucket_name, None)
                return
            folder.mkdir(exist_ok=True)
            known = self._etags.setdefault(bucket_name, {})
            current = {name: key for name, key in bucket.keys.items() if key is not None}
            for name, key in current.items():
                version = f"{key.etag}@{as_utc(key.last_modified).isoformat()}"  # same bytes sent again: a new time
                if known.get(name) == version:
                    continue
                stem, value = _name(name), key.value
                data_name = f"{stem}-{hashlib.sha256(value).hexdigest()[:16]}.bin"  # new bytes, new file
                self._write(folder / data_name, value)
                meta = {"key": name, "data": data_name, "last_modified": as_utc(key.last_modified).isoformat(),
                        "etag": key.etag,
                        "content_type": key.metadata.get("Content-Type"),
                        "metadata": {k: v for k, v in key.metadata.items() if k != "Content-Type"}}
                self._write(folder / f"{stem}.json", json.dumps(meta).encode("utf-8"))  # last: names the data
                for old in folder.glob(f"{stem}-*.bin"):
                    if old.name != data_name:
                        old.unlink(missing_ok=True)
                known[name] = version
            for name in [n for n in known if n not in current]:
                (folder / f"{_name(name)}.json").unlink(missing_ok=True)  # first: no entry names the data any more
                for old in folder.glob(f"{_name(name)}-*.bin"):
                    old.unlink(missing_ok=True)
                del known[name]

    @staticmethod
    def _write(path: Path, data: bytes) -> None:
        tmp = path.with_suffix(path.suffix + ".tmp")
        tmp.write_bytes(data)
        os.replace(tmp, path)


class MirroringApp:
    """moto's WSGI application; every successful write is mirrored before the client hears it succeeded."""

    def __init__(self, app: Any, mirror: Mirror) -> None:
        self.app = app
        self.mirror = mirror

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Any:
        method = environ.get("REQUEST_METHOD", "GET")
        bucket = environ.get("PATH_INFO", "/").lstrip("/").split("/", 1)[0]
        if method not in WRITE_METHODS or not bucket or bucket.startswith("moto-api"):
            return self.app(environ, start_response)
        captured: dict[str, Any] = {}

        def capture(status: str, headers: list, exc_info: Any = None) -> Any:
            captured.update(status=status, headers=headers, exc_info=exc_info)
            return lambda data: None

        body = b"".join(self.app(environ, capture))  # moto answers in memory; hold the answer until mirrored
        if captured["status"][:1] == "2":
            self.mirror.sync(bucket)
        start_response(captured["status"], captured["headers"], captured["exc_info"])
        return [body]


def serve(host: str, port: int, state_dir: Path) -> None:
    from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app
    from moto.server import MotoRequestHandler
    from werkzeug.serving import run_simple

    os.environ.setdefault("MOTO_ALLOW_NONEXISTENT_REGION", "true")
    app = DomainDispatcherApplication(create_backend_app)
    mirror = Mirror(state_dir)
    mirror.restore()
    run_simple(host, port, MirroringApp(app, mirror), threaded=True, request_handler=MotoRequestHandler)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="moto S3 whose state survives restarts (embedded stack only)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9310)
    parser.add_argument("--state-dir", required=True)
    args = parser.parse_args(argv)
    serve(args.host, args.port, Path(args.state_dir))


if __name__ == "__main__":
    main()
