"""Drive the lakeFS emulator through the official ``lakefs_sdk`` exactly as the platform does.

These tests guard the promise that swapping the emulator for a real lakeFS is only a URL change:
every call goes through the sdk and asserts real values (ids, contents, counts).
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Iterator
from pathlib import Path

import lakefs_sdk
import pytest
from lakefs_sdk.exceptions import (
    ApiException,
    BadRequestException,
    ForbiddenException,
    NotFoundException,
    UnauthorizedException,
)

from dagster_project.devservices.lakefs_emulator import RunningEmulator, start_emulator

KEY = "AKIAIOSFODNN7EXAMPLE"
SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
REPO = "tickets"


class Lake:
    """The sdk API objects bound to one emulator, plus small helpers used by many tests."""

    def __init__(self, client: lakefs_sdk.ApiClient, tmp: Path) -> None:
        self.client = client
        self.tmp = tmp
        self.repos = lakefs_sdk.RepositoriesApi(client)
        self.branches = lakefs_sdk.BranchesApi(client)
        self.objects = lakefs_sdk.ObjectsApi(client)
        self.commits = lakefs_sdk.CommitsApi(client)
        self.refs = lakefs_sdk.RefsApi(client)
        self.tags = lakefs_sdk.TagsApi(client)
        self.health = lakefs_sdk.HealthCheckApi(client)
        self._files = 0

    def upload(self, branch: str, path: str, content: bytes, **kwargs: object) -> lakefs_sdk.ObjectStats:
        """lakefs_sdk 1.86 reads ``content`` from a file path (it opens the value), so spill to a file."""
        self._files += 1
        source = self.tmp / f"upload-{self._files}.bin"
        source.write_bytes(content)
        return self.objects.upload_object(REPO, branch, path, content=str(source), **kwargs)

    def read(self, ref: str, path: str) -> bytes:
        return bytes(self.objects.get_object(REPO, ref, path))

    def commit(self, branch: str, message: str, **metadata: str) -> lakefs_sdk.Commit:
        return self.commits.commit(
            REPO, branch, lakefs_sdk.CommitCreation(message=message, metadata=metadata)
        )

    def branch(self, name: str, source: str) -> str:
        return self.branches.create_branch(REPO, lakefs_sdk.BranchCreation(name=name, source=source))

    def paths(self, ref: str, **kwargs: object) -> list[str]:
        return [o.path for o in self.objects.list_objects(REPO, ref, **kwargs).results]


def _client(emulator: RunningEmulator, key: str = KEY, secret: str = SECRET) -> lakefs_sdk.ApiClient:
    return lakefs_sdk.ApiClient(
        lakefs_sdk.Configuration(host=emulator.api_url, username=key, password=secret)
    )


@pytest.fixture
def emulator(tmp_path: Path) -> Iterator[RunningEmulator]:
    with start_emulator(tmp_path / "lakefs", KEY, SECRET) as running:
        yield running


@pytest.fixture
def lake(emulator: RunningEmulator, tmp_path: Path) -> Iterator[Lake]:
    with _client(emulator) as client:
        api = Lake(client, tmp_path)
        api.repos.create_repository(
            lakefs_sdk.RepositoryCreation(
                name=REPO, storage_namespace="local://tickets", default_branch="main"
            )
        )
        yield api


def test_healthcheck_and_config_need_no_presign(emulator: RunningEmulator) -> None:
    with _client(emulator) as client:
        lakefs_sdk.HealthCheckApi(client).health_check()
        storage = lakefs_sdk.ConfigApi(client).get_config().storage_config
        assert storage.pre_sign_support is False
        assert storage.import_support is False
        assert storage.blockstore_type == "local"
        with pytest.warns(DeprecationWarning, match="config/version is deprecated"):  # as on a real lakeFS
            assert lakefs_sdk.InternalApi(client).get_lake_fs_version().version == "1.84.0"


def test_repository_lifecycle(lake: Lake) -> None:
    repo = lake.repos.get_repository(REPO)
    assert (repo.id, repo.default_branch, repo.storage_namespace) == (REPO, "main", "local://tickets")
    with pytest.raises(ApiException) as conflict:
        lake.repos.create_repository(lakefs_sdk.RepositoryCreation(name=REPO, storage_namespace="local://x"))
    assert conflict.value.status == 409
    for name in ("alpha", "beta", "gamma"):
        lake.repos.create_repository(
            lakefs_sdk.RepositoryCreation(name=name, storage_namespace=f"local://{name}")
        )
    page = lake.repos.list_repositories(amount=2)
    assert [r.id for r in page.results] == ["alpha", "beta"]
    assert page.pagination.has_more and page.pagination.next_offset == "beta"
    rest = lake.repos.list_repositories(after=page.pagination.next_offset)
    assert [r.id for r in rest.results] == ["gamma", REPO]
    assert not rest.pagination.has_more
    assert [r.id for r in lake.repos.list_repositories(prefix="g").results] == ["gamma"]
    lake.repos.delete_repository("gamma")
    with pytest.raises(NotFoundException):
        lake.repos.get_repository("gamma")
    log = lake.refs.log_commits(REPO, "main").results
    assert [c.message for c in log] == ["Repository created"]
    assert len(log[0].id) == 64 and log[0].parents == []


def test_branches_from_branch_tag_and_commit(lake: Lake) -> None:
    lake.upload("main", "a.txt", b"A")
    first = lake.commit("main", "first")
    lake.tags.create_tag(REPO, lakefs_sdk.TagCreation(id="tickets/v1", ref="main"))
    assert lake.branch("from-main", "main") == first.id
    assert lake.branch("from-tag", "tickets/v1") == first.id
    assert lake.branch("from-commit", first.id[:12]) == first.id
    assert lake.branches.get_branch(REPO, "from-tag").commit_id == first.id
    with pytest.raises(ApiException) as conflict:
        lake.branch("from-main", "main")
    assert conflict.value.status == 409
    with pytest.raises(BadRequestException):
        lake.branch("batch/tickets/2026-11-22", "main")  # lakeFS branch ids match ^\w[-\w]*$
    with pytest.raises(NotFoundException):
        lake.branch("nowhere", "no-such-ref")
    names = [b.id for b in lake.branches.list_branches(REPO).results]
    assert names == ["from-commit", "from-main", "from-tag", "main"]
    page = lake.branches.list_branches(REPO, prefix="from-", amount=2)
    assert [b.id for b in page.results] == ["from-commit", "from-main"] and page.pagination.has_more
    lake.branches.delete_branch(REPO, "from-main")
    with pytest.raises(NotFoundException):
        lake.branches.get_branch(REPO, "from-main")


def test_objects_upload_get_stat_list(lake: Lake) -> None:
    stats = lake.upload("main", "raw/2026/11/22/t1.json", b'{"id": 1}')
    assert stats.path == "raw/2026/11/22/t1.json" and stats.path_type == "object"
    assert stats.size_bytes == 9 and stats.checksum == hashlib.md5(b'{"id": 1}').hexdigest()
    assert stats.physical_address.startswith("local://tickets/data/")
    for name in ("t2", "t3"):
        lake.upload("main", f"raw/2026/11/22/{name}.json", name.encode())
    lake.upload("main", "raw/2026/11/23/t4.json", b"t4")
    lake.upload("main", "README", b"hello")
    assert lake.read("main", "raw/2026/11/22/t1.json") == b'{"id": 1}'
    stat = lake.objects.stat_object(REPO, "main", "README")
    assert stat.size_bytes == 5 and isinstance(stat.mtime, int)
    with pytest.raises(NotFoundException):
        lake.objects.stat_object(REPO, "main", "missing")
    with pytest.raises(NotFoundException):
        lake.objects.get_object(REPO, "main", "missing")
    assert lake.paths("main", delimiter="/") == ["README", "raw/"]
    assert lake.paths("main", prefix="raw/2026/", delimiter="/") == ["raw/2026/11/"]
    assert lake.paths("main", prefix="raw/2026/11/", delimiter="/") == ["raw/2026/11/22/", "raw/2026/11/23/"]
    first = lake.objects.list_objects(REPO, "main", prefix="raw/", amount=2)
    assert [o.path for o in first.results] == ["raw/2026/11/22/t1.json", "raw/2026/11/22/t2.json"]
    assert first.pagination.has_more and first.pagination.next_offset == "raw/2026/11/22/t2.json"
    second = lake.objects.list_objects(REPO, "main", prefix="raw/", after=first.pagination.next_offset)
    assert [o.path for o in second.results] == ["raw/2026/11/22/t3.json", "raw/2026/11/23/t4.json"]
    assert lake.read("main", "README") == b"hello"
    partial = lake.objects.get_object(REPO, "main", "README", range="bytes=1-3")
    assert bytes(partial) == b"ell"
    with pytest.raises(ApiException) as exists:
        lake.upload("main", "README", b"again", if_none_match="*")
    assert exists.value.status == 412


def test_delete_and_bulk_delete(lake: Lake) -> None:
    for name in ("a", "b", "c", "d"):
        lake.upload("main", f"x/{name}", name.encode())
    lake.commit("main", "four files")
    lake.objects.delete_object(REPO, "main", "x/a")
    result = lake.objects.delete_objects(REPO, "main", lakefs_sdk.PathList(paths=["x/b", "x/c", "x/missing"]))
    assert result.errors == []
    assert lake.paths("main") == ["x/d"]
    assert lake.paths("main@") == ["x/a", "x/b", "x/c", "x/d"]
    diff = lake.branches.diff_branch(REPO, "main").results
    assert [(d.type, d.path) for d in diff] == [("removed", "x/a"), ("removed", "x/b"), ("removed", "x/c")]
    lake.commit("main", "deleted three")
    assert lake.paths("main") == ["x/d"]
    assert lake.paths("main~1") == ["x/a", "x/b", "x/c", "x/d"]


def test_commit_with_metadata_and_log(lake: Lake) -> None:
    with pytest.raises(BadRequestException):
        lake.commit("main", "nothing staged")
    lake.upload("main", "data/one.csv", b"1")
    first = lake.commit("main", "ingest one", batch="2026-11-22", tenant="acme")
    assert (
        len(first.id) == 64
        and first.committer == KEY
        and first.metadata
        == {
            "batch": "2026-11-22",
            "tenant": "acme",
        }
    )
    assert lake.commits.get_commit(REPO, first.id).message == "ingest one"
    lake.upload("main", "other/two.csv", b"2")
    second = lake.commit("main", "ingest two")
    assert second.parents == [first.id] and second.generation == first.generation + 1
    empty = lake.commits.commit(REPO, "main", lakefs_sdk.CommitCreation(message="marker", allow_empty=True))
    log = lake.refs.log_commits(REPO, "main")
    assert [c.id for c in log.results][:3] == [empty.id, second.id, first.id]
    assert [c.message for c in log.results] == ["marker", "ingest two", "ingest one", "Repository created"]
    page = lake.refs.log_commits(REPO, "main", amount=2)
    assert [c.id for c in page.results] == [empty.id, second.id] and page.pagination.has_more
    rest = lake.refs.log_commits(REPO, "main", after=page.pagination.next_offset)
    assert [c.id for c in rest.results][0] == first.id
    by_object = lake.refs.log_commits(REPO, "main", objects=["data/one.csv"])
    assert [c.id for c in by_object.results] == [first.id]
    by_prefix = lake.refs.log_commits(REPO, "main", prefixes=["other/"])
    assert [c.id for c in by_prefix.results] == [second.id]
    stopped = lake.refs.log_commits(REPO, "main", stop_at=second.id)
    assert [c.id for c in stopped.results] == [empty.id, second.id]
    assert lake.commits.get_commit(REPO, "main~2").id == first.id


def test_diffs(lake: Lake) -> None:
    lake.upload("main", "keep.txt", b"k")
    lake.upload("main", "change.txt", b"v1")
    lake.upload("main", "drop.txt", b"d")
    base = lake.commit("main", "base")
    lake.branch("feature", "main")
    lake.upload("feature", "change.txt", b"v2")
    lake.upload("feature", "dir/new.txt", b"new")
    lake.objects.delete_object(REPO, "feature", "drop.txt")
    uncommitted = lake.branches.diff_branch(REPO, "feature")
    expected = [("changed", "change.txt"), ("added", "dir/new.txt"), ("removed", "drop.txt")]
    assert [(d.type, d.path) for d in uncommitted.results] == expected
    assert uncommitted.pagination.results == 3
    lake.commit("feature", "feature work")
    lake.upload("main", "main-only.txt", b"m")
    lake.commit("main", "main moved on")
    three_dot = lake.refs.diff_refs(REPO, "main", "feature")
    assert [(d.type, d.path) for d in three_dot.results] == expected
    two_dot = lake.refs.diff_refs(REPO, "main", "feature", type="two_dot")
    assert [(d.type, d.path) for d in two_dot.results] == [*expected, ("removed", "main-only.txt")]
    grouped = lake.refs.diff_refs(REPO, base.id, "feature", delimiter="/")
    assert [(d.type, d.path, d.path_type) for d in grouped.results][1] == (
        "prefix_changed",
        "dir/",
        "common_prefix",
    )
    assert [d.size_bytes for d in three_dot.results] == [2, 3, 1]


def test_merge_clean_conflict_strategies_and_dirty(lake: Lake) -> None:
    lake.upload("main", "shared.txt", b"base")
    lake.commit("main", "base")
    lake.branch("feature", "main")
    lake.upload("feature", "feature.txt", b"f")
    feature_head = lake.commit("feature", "feature work")
    main_head = lake.branches.get_branch(REPO, "main").commit_id
    result = lake.refs.merge_into_branch(REPO, "feature", "main")
    merge = lake.commits.get_commit(REPO, result.reference)
    assert merge.parents == [main_head, feature_head.id]
    assert merge.message == "Merge 'feature' into 'main'"
    assert lake.read("main", "feature.txt") == b"f"
    with pytest.raises(BadRequestException):
        lake.refs.merge_into_branch(REPO, "feature", "main")  # nothing new to merge

    lake.upload("feature", "shared.txt", b"feature side")
    lake.commit("feature", "feature edit")
    lake.upload("main", "shared.txt", b"main side")
    lake.commit("main", "main edit")
    with pytest.raises(ApiException) as conflict:
        lake.refs.merge_into_branch(REPO, "feature", "main")
    assert conflict.value.status == 409
    assert "conflict" in conflict.value.body
    lake.upload("feature", "extra.txt", b"e")
    lake.commit("feature", "non-conflicting change")
    lake.refs.merge_into_branch(REPO, "feature", "main", merge=lakefs_sdk.Merge(strategy="dest-wins"))
    assert lake.read("main", "shared.txt") == b"main side"
    assert lake.read("main", "extra.txt") == b"e"
    lake.upload("feature", "shared.txt", b"feature again")
    lake.commit("feature", "feature edit 2")
    lake.upload("main", "shared.txt", b"main again")
    lake.commit("main", "main edit 2")
    source_wins = lakefs_sdk.Merge(strategy="source-wins", message="take feature", metadata={"run": "42"})
    merged = lake.refs.merge_into_branch(REPO, "feature", "main", merge=source_wins)
    assert lake.read("main", "shared.txt") == b"feature again"
    assert lake.commits.get_commit(REPO, merged.reference).metadata == {"run": "42"}

    lake.upload("main", "dirty.txt", b"uncommitted")
    lake.upload("feature", "more.txt", b"more")
    lake.commit("feature", "more")
    with pytest.raises(BadRequestException):
        lake.refs.merge_into_branch(REPO, "feature", "main")


def test_tags_with_slashes(lake: Lake) -> None:
    lake.upload("main", "a", b"1")
    first = lake.commit("main", "v1")
    lake.upload("main", "a", b"2")
    second = lake.commit("main", "v2")
    tag = lake.tags.create_tag(REPO, lakefs_sdk.TagCreation(id="tickets/v3", ref=first.id))
    assert (tag.id, tag.commit_id) == ("tickets/v3", first.id)
    lake.tags.create_tag(REPO, lakefs_sdk.TagCreation(id="tickets/v4", ref="main"))
    with pytest.raises(ApiException) as conflict:
        lake.tags.create_tag(REPO, lakefs_sdk.TagCreation(id="tickets/v3", ref="main"))
    assert conflict.value.status == 409
    assert lake.tags.get_tag(REPO, "tickets/v3").commit_id == first.id
    assert lake.read("tickets/v3", "a") == b"1"
    assert lake.read("tickets/v4", "a") == b"2"
    listed = lake.tags.list_tags(REPO, prefix="tickets/")
    assert [(t.id, t.commit_id) for t in listed.results] == [
        ("tickets/v3", first.id),
        ("tickets/v4", second.id),
    ]
    forced = lake.tags.create_tag(REPO, lakefs_sdk.TagCreation(id="tickets/v3", ref="main", force=True))
    assert forced.commit_id == second.id
    lake.tags.delete_tag(REPO, "tickets/v3")
    with pytest.raises(NotFoundException):
        lake.tags.get_tag(REPO, "tickets/v3")


def test_reset_and_branch_protection(lake: Lake) -> None:
    lake.upload("main", "a", b"1")
    lake.upload("main", "dir/b", b"2")
    lake.upload("main", "dir/c", b"3")
    lake.branches.reset_branch(REPO, "main", lakefs_sdk.ResetCreation(type="object", path="a"))
    assert lake.paths("main") == ["dir/b", "dir/c"]
    lake.branches.reset_branch(REPO, "main", lakefs_sdk.ResetCreation(type="common_prefix", path="dir/"))
    assert lake.paths("main") == []
    lake.upload("main", "a", b"1")
    lake.branches.reset_branch(REPO, "main", lakefs_sdk.ResetCreation(type="reset"))
    assert lake.branches.diff_branch(REPO, "main").results == []

    rules = [lakefs_sdk.BranchProtectionRule(pattern="main")]
    lake.repos.set_branch_protection_rules(REPO, rules)
    assert [r.pattern for r in lake.repos.get_branch_protection_rules(REPO)] == ["main"]
    with pytest.raises(ForbiddenException):
        lake.upload("main", "a", b"1")
    lake.branch("work", "main")
    lake.upload("work", "a", b"1")
    lake.commit("work", "on a branch")
    lake.refs.merge_into_branch(REPO, "work", "main")  # merges into protected branches stay allowed
    assert lake.read("main", "a") == b"1"


def test_bad_credentials_are_rejected(emulator: RunningEmulator) -> None:
    with _client(emulator, secret="wrong") as client:
        with pytest.raises(UnauthorizedException) as err:
            lakefs_sdk.RepositoriesApi(client).list_repositories()
        assert err.value.status == 401 and "authenticat" in (err.value.body or "")
        lakefs_sdk.HealthCheckApi(client).health_check()  # healthcheck is public, as in the spec


def test_concurrent_uploads(lake: Lake) -> None:
    def worker(index: int) -> None:
        for n in range(5):
            lake.upload("main", f"c/{index}/{n}", f"{index}-{n}".encode())

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(lake.paths("main", prefix="c/")) == 30
    assert lake.read("main", "c/3/4") == b"3-4"


def test_unknown_routes_answer_error_documents(emulator: RunningEmulator) -> None:
    with _client(emulator) as client:
        with pytest.raises(NotFoundException) as err:
            lakefs_sdk.AuthApi(client).list_users()  # user management is not emulated
        assert err.value.body == '{"message": "path not found"}'
        repos = lakefs_sdk.RepositoriesApi(client)
        with pytest.raises(ApiException) as unsupported:
            repos.create_repository(
                lakefs_sdk.RepositoryCreation(name="sample", storage_namespace="local://s", sample_data=True)
            )
        assert unsupported.value.status == 501


def test_stop_leaves_no_threads_behind(tmp_path: Path) -> None:
    before = set(threading.enumerate())
    running = start_emulator(tmp_path / "threads", KEY, SECRET)
    with _client(running) as client:  # keep-alive connections stay open until stop()
        lakefs_sdk.RepositoriesApi(client).list_repositories()
        running.stop()
    assert set(threading.enumerate()) - before == set()
    running.stop()  # idempotent


def test_persistence_across_restart(tmp_path: Path) -> None:
    data_dir = tmp_path / "persisted"
    with start_emulator(data_dir, KEY, SECRET) as first, _client(first) as client:
        lake = Lake(client, tmp_path)
        lake.repos.create_repository(lakefs_sdk.RepositoryCreation(name=REPO, storage_namespace="local://t"))
        lake.upload("main", "kept.txt", b"still here")
        commit = lake.commit("main", "persist me", batch="b1")
        lake.tags.create_tag(REPO, lakefs_sdk.TagCreation(id="tickets/v1", ref="main"))
        lake.branch("side", "main")
        lake.upload("side", "staged.txt", b"uncommitted")
    with start_emulator(data_dir, KEY, SECRET) as second, _client(second) as client:
        lake = Lake(client, tmp_path)
        assert [r.id for r in lake.repos.list_repositories().results] == [REPO]
        assert lake.branches.get_branch(REPO, "main").commit_id == commit.id
        assert lake.tags.get_tag(REPO, "tickets/v1").commit_id == commit.id
        assert lake.read("tickets/v1", "kept.txt") == b"still here"
        assert lake.read("side", "staged.txt") == b"uncommitted"
        assert lake.commits.get_commit(REPO, commit.id).metadata == {"batch": "b1"}
