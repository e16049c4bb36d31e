"""Conservation starts at the landing prefix: every object under a drop is ingested or quarantined with a reason
-- a marker file, an empty file, a file that arrived after the manifest -- never skipped without a trace."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from dagster_project.layout import incoming_prefix
from dagster_project.stages.ingest import ingest_drop
from dagster_project.stages.landing import ARRIVED_LATE, EMPTY_FILE, IGNORED_NAME, list_drops

from .fakes import VALID_MANIFEST

T0 = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)
BASE = incoming_prefix("northbank", "support_intents")


class ListingS3:
    """A landing bucket with explicit modification times (what ``list_objects_v2`` reports)."""

    def __init__(self, objects: dict[str, tuple[bytes, datetime]]) -> None:
        self.objects = objects

    def get_paginator(self, name: str):
        objects = self.objects

        class Paginator:
            def paginate(self, Bucket: str, Prefix: str):  # noqa: N803 - boto3's spelling
                yield {"Contents": [{"Key": k, "Size": len(b), "LastModified": t}
                                    for k, (b, t) in sorted(objects.items()) if k.startswith(Prefix)]}

        return Paginator()

    def get_object(self, Bucket: str, Key: str):  # noqa: N803 - boto3's spelling
        import io

        return {"Body": io.BytesIO(self.objects[Key][0])}


def test_every_object_under_a_drop_ends_in_a_visible_state() -> None:
    import json

    drop_dir = f"{BASE}wk49/"
    s3 = ListingS3({
        f"{drop_dir}records.jsonl": (b'{"ticket_id": "a", "text": "x"}\n', T0),
        f"{drop_dir}_SUCCESS": (b"", T0),
        f"{drop_dir}.DS_Store": (b"\0\0", T0),
        f"{drop_dir}empty.jsonl": (b"", T0),
        f"{drop_dir}manifest.json": (json.dumps(VALID_MANIFEST).encode(), T0 + timedelta(minutes=1)),
        f"{drop_dir}corrected.jsonl": (b'{"ticket_id": "b", "text": "y"}\n', T0 + timedelta(minutes=7)),
    })
    [drop] = list_drops(s3, "landing", "northbank", "support_intents")
    assert [f.key.rsplit("/", 1)[1] for f in drop.data_files] == ["records.jsonl"]
    result = ingest_drop(s3, drop, "wk49", T0)
    held = dict(zip(result.quarantine["source_uri"].str.rsplit("/", n=1).str[1], result.quarantine["reason"],
                    strict=True))
    assert held == {".DS_Store": IGNORED_NAME, "_SUCCESS": IGNORED_NAME, "empty.jsonl": EMPTY_FILE,
                    "corrected.jsonl": ARRIVED_LATE}
    assert len(result.records) == 1 and result.records_in == 5  # one record + four objects, none silent


def test_a_drop_is_the_directory_that_holds_its_manifest_at_any_depth() -> None:
    import json

    manifest = json.dumps(VALID_MANIFEST).encode()
    s3 = ListingS3({
        f"{BASE}2026/11/01/manifest.json": (manifest, T0),
        f"{BASE}2026/11/01/records.jsonl": (b'{"ticket_id": "a", "text": "x"}\n', T0),
        f"{BASE}2026/11/01/part-2/more.jsonl": (b'{"ticket_id": "b", "text": "y"}\n', T0),
        f"{BASE}2026/11/02/records.jsonl": (b'{"ticket_id": "c", "text": "z"}\n', T0),  # waits for its manifest
        f"{BASE}wk49/records.jsonl": (b'{"ticket_id": "d", "text": "w"}\n', T0),
        f"{BASE}wk49/sub/extra.jsonl": (b'{"ticket_id": "e", "text": "v"}\n', T0),
    })
    drops = {d.name: d for d in list_drops(s3, "landing", "northbank", "support_intents")}
    assert set(drops) == {"2026/11/01", "2026/11/02", "wk49"}
    first = drops["2026/11/01"]
    assert first.manifest_file is not None and first.manifest_file.key.endswith("2026/11/01/manifest.json")
    assert [f.key.rsplit("/", 2)[-2:] for f in first.data_files] == [["part-2", "more.jsonl"], ["01", "records.jsonl"]]
    assert drops["2026/11/02"].manifest_file is None
    assert len(drops["wk49"].data_files) == 2  # a manifest-less drop keeps its subfolders, as before
    assert first.batch_id != drops["2026/11/02"].batch_id and "/" not in first.batch_id  # branch-safe ids
    result = ingest_drop(s3, first, first.batch_id, T0)
    assert len(result.records) == 2 and result.quarantine.empty  # the manifest is never read as a record


def test_objects_outside_every_drop_are_named_with_their_reason() -> None:
    import json

    from dagster_project.stages.landing import IGNORED_FOLDER, OUTSIDE_DROP, scan_incoming

    manifest = json.dumps(VALID_MANIFEST).encode()
    record = b'{"ticket_id": "a", "text": "x"}\n'
    s3 = ListingS3({
        BASE: (b"", T0),  # the folder marker some S3 consoles create: holds nothing
        f"{BASE}stray.jsonl": (record, T0),
        f"{BASE}_tmp/manifest.json": (manifest, T0),
        f"{BASE}_tmp/records.jsonl": (record, T0),
        f"{BASE}../escape/records.jsonl": (record, T0),
        f"{BASE}wk\u200b49/records.jsonl": (record, T0),  # a zero-width space: invisible in every listing
        f"{BASE}a//b/records.jsonl": (record, T0),
        f"{BASE}week 49 – Zürich/manifest.json": (manifest, T0),  # spaces and unicode are a fine drop name
        f"{BASE}week 49 – Zürich/records.jsonl": (record, T0),
        f"{BASE}week 49 – Zürich/.hidden/records.jsonl": (record, T0),
        f"{BASE}week 49 – Zürich/.git/manifest.json": (manifest, T0),  # a manifest in a hidden folder is no drop
    })
    scan = scan_incoming(s3, "landing", "northbank", "support_intents")
    [drop] = scan.drops
    assert drop.name == "week 49 – Zürich" and drop.manifest_file is not None
    assert [f.key.rsplit("/", 1)[1] for f in drop.data_files] == ["records.jsonl"]
    assert sorted(f.key[len(drop.prefix):] for f, reason in drop.held_back if reason == IGNORED_NAME) == [
        ".git/manifest.json", ".hidden/records.jsonl"]
    reasons = {n.file.key[len(BASE):]: n.reason for n in scan.outside}
    assert reasons["stray.jsonl"] == OUTSIDE_DROP
    assert reasons["_tmp/manifest.json"] == reasons["_tmp/records.jsonl"] == IGNORED_FOLDER
    assert "'..' segment" in reasons["../escape/records.jsonl"] and "empty" in reasons["a//b/records.jsonl"]
    assert "invisible" in reasons["wk\u200b49/records.jsonl"]
    assert len(scan.outside) == 6 and all(n.drop is None for n in scan.outside)  # the marker is not an object
    assert len(scan.outside) + len(drop.data_files) + len(drop.held_back) + 1 == len(s3.objects) - 1


def test_files_newer_than_the_batch_are_named_as_not_part_of_it() -> None:
    import json

    from dagster_project.stages.landing import arrived_after, not_ingested_alert, scan_incoming

    drop_dir = f"{BASE}wk49/"
    s3 = ListingS3({
        f"{drop_dir}records.jsonl": (b'{"ticket_id": "a", "text": "x"}\n', T0),
        f"{drop_dir}manifest.json": (json.dumps(VALID_MANIFEST).encode(), T0 + timedelta(minutes=1)),
        f"{drop_dir}corrected.jsonl": (b'{"ticket_id": "b", "text": "y"}\n', T0 + timedelta(hours=2)),
    })
    [drop] = scan_incoming(s3, "landing", "northbank", "support_intents").drops
    late = arrived_after(drop, registered_at=T0 + timedelta(minutes=5))
    assert [(n.file.key, n.drop) for n in late] == [(f"{drop_dir}corrected.jsonl", "wk49")]
    assert drop.batch_id in late[0].reason and "new drop" in late[0].reason
    assert arrived_after(drop, registered_at=T0 + timedelta(hours=3)) == []
    # S3 lists whole seconds: in the second of registration, newer than the manifest is late, the manifest's own
    # second is not (the drop was uploaded and registered at once).
    in_that_second = T0 + timedelta(hours=2, microseconds=400_000)
    assert [n.file.key for n in arrived_after(drop, in_that_second)] == [f"{drop_dir}corrected.jsonl"]
    same_as_manifest = T0 + timedelta(minutes=1, microseconds=700_000)
    assert [n.file.key for n in arrived_after(drop, same_as_manifest)] == [f"{drop_dir}corrected.jsonl"]

    alert = not_ingested_alert("northbank", "support_intents", "#oncall", late, "s3://landing/x/",
                               "https://example.test/playbooks")
    assert alert.value == 1 and alert.details["drops_with_late_files"] == ["wk49"]
    assert alert.playbook_url.endswith("object_not_ingested.md")
    again = not_ingested_alert("northbank", "support_intents", "#oncall", late, "s3://landing/x/", "https://e.test")
    assert again.dedupe_key == alert.dedupe_key  # the same objects are one incident
