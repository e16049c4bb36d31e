"""The lakeFS port's contract, written once and run against every implementation.

Why a shared suite: unit tests of gates, publishing, approvals and versions trust the in-memory fake to behave
like lakeFS. ``tests/unit/test_lakefs_memory.py`` runs these tests on the fake and
``tests/integration/test_lakefs_port_emulator.py`` on the lakefs-sdk adapter against the emulator (with a small
page size, so every listing pages), so the two cannot drift apart. Where they disagree, the emulator is right.

Not collected by itself (no ``test_`` prefix): a subclass provides ``make_repo(name)`` for a repository that does
not exist yet.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime

import pandas as pd
import pytest

from dagster_project.lakefs import Commit, LakeFSError, LakeFSPort, MergeConflict, RefNotFound, Tag

NAMESPACE = "local://contract"
META = {"trainyard.stage": "clean", "trainyard.batch_id": "b1"}

MakeRepo = Callable[[str], LakeFSPort]


def committed(repo: LakeFSPort, branch: str, files: dict[str, bytes], message: str = "change") -> str:
    for path, data in files.items():
        repo.put_bytes(branch, path, data)
    return repo.commit(branch, message, {})


class LakeFSPortContract:
    @pytest.fixture
    def make_repo(self) -> MakeRepo:
        raise NotImplementedError("a subclass provides make_repo(name) -> a LakeFSPort not created yet")

    @pytest.fixture
    def repo(self, make_repo: MakeRepo) -> LakeFSPort:
        repo = make_repo("contract")
        repo.ensure_exists(NAMESPACE)
        return repo

    # -- repository and branches ---------------------------------------------------------------------------------
    def test_is_a_port_and_a_new_repository_has_main_with_one_root_commit(self, repo: LakeFSPort) -> None:
        assert isinstance(repo, LakeFSPort) and repo.name == "contract"
        [root] = repo.log("main")
        assert isinstance(root, Commit) and root.parents == () and root.id == repo.branch_head("main")
        repo.ensure_exists(NAMESPACE)  # idempotent
        assert repo.log("main") == [root]
        assert repo.list_paths("main", "") == [] and not repo.has_uncommitted_changes("main")

    def test_a_repository_that_does_not_exist(self, make_repo: MakeRepo) -> None:
        repo = make_repo("absent")
        for read in (lambda: repo.branch_head("main"), lambda: list(repo.iter_tags()),
                     lambda: repo.get_commit("main"), lambda: repo.ensure_branch("b")):
            with pytest.raises(RefNotFound):
                read()
        assert not repo.branch_exists("main") and repo.get_bytes("main", "a") is None
        assert repo.delete_branch("b") is False

    def test_branches_start_at_the_source_head_and_ensure_branch_is_idempotent(self, repo: LakeFSPort) -> None:
        main_head = committed(repo, "main", {"a": b"1"})
        repo.put_bytes("main", "staged-on-main", b"x")
        assert repo.ensure_branch("feature") == main_head and repo.branch_exists("feature")
        assert repo.get_bytes("feature", "a") == b"1" and repo.get_bytes("feature", "staged-on-main") is None
        feature_head = committed(repo, "feature", {"b": b"2"})
        assert repo.ensure_branch("feature") == feature_head  # exists: kept, not reset to main
        assert repo.ensure_branch("from-feature", source="feature") == feature_head
        assert repo.ensure_branch("from-commit", source=main_head) == main_head
        with pytest.raises(LakeFSError) as invalid:
            repo.ensure_branch("batch/with-a-slash")
        assert invalid.value.status == 400

    def test_delete_branch(self, repo: LakeFSPort) -> None:
        repo.ensure_branch("gone")
        head = committed(repo, "gone", {"a": b"1"})
        assert repo.delete_branch("gone") is True and not repo.branch_exists("gone")
        assert repo.delete_branch("gone") is False
        assert repo.get_commit(head).id == head  # commits outlive their branch
        with pytest.raises(LakeFSError) as refused:
            repo.delete_branch("main")
        assert refused.value.status == 403 and repo.branch_exists("main")

    # -- objects -------------------------------------------------------------------------------------------------
    def test_branch_reads_see_staged_changes_and_commit_reads_the_committed_tree(self, repo: LakeFSPort) -> None:
        repo.ensure_branch("b")
        first = committed(repo, "b", {"d/a": b"one"})
        repo.put_bytes("b", "d/a", b"two")
        repo.put_bytes("b", "d/b", b"new")
        repo.put_bytes("b", "other/c", b"c")
        assert repo.get_bytes("b", "d/a") == b"two" and repo.get_bytes(first, "d/a") == b"one"
        assert repo.get_bytes(first, "d/b") is None and repo.get_bytes("main", "d/a") is None
        assert repo.list_paths("b", "d/") == ["d/a", "d/b"] and repo.list_paths(first, "") == ["d/a"]
        second = repo.commit("b", "second", {})
        assert repo.get_bytes(second, "d/a") == b"two" and repo.get_bytes(first, "d/a") == b"one"
        assert repo.list_paths(second, "") == ["d/a", "d/b", "other/c"]
        assert repo.get_bytes("b", "missing") is None and repo.get_bytes("no-such-branch", "d/a") is None

    def test_delete_paths_stages_removals_and_ignores_missing_paths(self, repo: LakeFSPort) -> None:
        repo.ensure_branch("b")
        first = committed(repo, "b", {"d/a": b"a", "d/b": b"b", "d/c": b"c"})
        repo.delete_paths("b", ["d/a", "d/c", "d/never-there"])
        assert repo.list_paths("b", "d/") == ["d/b"] and repo.has_uncommitted_changes("b")
        second = repo.commit("b", "drop two", {})
        assert repo.list_paths(second, "") == ["d/b"] and repo.list_paths(first, "") == ["d/a", "d/b", "d/c"]
        repo.delete_paths("b", [])
        assert not repo.has_uncommitted_changes("b")

    def test_frames_and_json_round_trip(self, repo: LakeFSPort) -> None:
        frame = pd.DataFrame({"record_id": ["r1", "r2"], "label": ["a", None], "score": [0.5, 1.0]})
        repo.put_frame("main", "t/data.parquet", frame)
        pd.testing.assert_frame_equal(repo.get_frame("main", "t/data.parquet"), frame)
        pd.testing.assert_frame_equal(repo.require_frame("main", "t/data.parquet"), frame)
        assert repo.get_frame("main", "t/none.parquet") is None
        with pytest.raises(FileNotFoundError, match="lakefs://contract/main/t/none.parquet"):
            repo.require_frame("main", "t/none.parquet")

        value = {"b": [1, 2], "a": {"when": datetime(2026, 1, 2, tzinfo=UTC)}}
        repo.put_json("main", "t/summary.json", value)
        assert repo.get_bytes("main", "t/summary.json") == json.dumps(
            value, indent=2, sort_keys=True, default=str).encode()
        assert repo.get_json("main", "t/summary.json") == {"a": {"when": "2026-01-02 00:00:00+00:00"}, "b": [1, 2]}
        assert repo.get_json("main", "t/none.json") is None

    # -- commits -------------------------------------------------------------------------------------------------
    def test_commit_is_idempotent_and_carries_its_message_and_metadata(self, repo: LakeFSPort) -> None:
        repo.ensure_branch("b")
        before = repo.branch_head("b")
        assert repo.commit("b", "nothing staged", META) == before and len(repo.log("b")) == 1
        repo.put_bytes("b", "a", b"1")
        assert repo.has_uncommitted_changes("b") and not repo.has_uncommitted_changes("main")
        head = repo.commit("b", "stage clean", META)
        assert head != before and repo.branch_head("b") == head and not repo.has_uncommitted_changes("b")
        assert repo.commit("b", "again", META) == head
        repo.put_bytes("b", "a", b"1")  # the same bytes again: no change
        assert not repo.has_uncommitted_changes("b") and repo.commit("b", "same", {}) == head

        commit = repo.get_commit(head)
        assert (commit.id, commit.parents, commit.message, commit.metadata) == (head, (before,), "stage clean", META)
        root = repo.get_commit(before)
        assert isinstance(commit.creation_date, int) and commit.creation_date >= root.creation_date > 0

    def test_get_commit_takes_a_branch_a_tag_a_commit_id_or_its_prefix(self, repo: LakeFSPort) -> None:
        head = committed(repo, "main", {"a": b"1"})
        assert repo.create_tag("ds/v1", "main")
        assert repo.get_commit("main").id == repo.get_commit("ds/v1").id == repo.get_commit(head).id == head
        assert repo.get_commit(head[:16]).id == head

    def test_log_is_newest_first_and_merge_commits_have_two_parents(self, repo: LakeFSPort) -> None:
        root = repo.branch_head("main")
        repo.ensure_branch("b")
        b1 = committed(repo, "b", {"x": b"1"}, "b1")
        b2 = committed(repo, "b", {"y": b"2"}, "b2")
        m1 = committed(repo, "main", {"z": b"3"}, "m1")
        merge = repo.merge("b", "main", "publish b", {"trainyard.stage": "merged"})
        assert repo.branch_head("main") == merge
        assert [c.id for c in repo.log("main")] == [merge, m1, b2, b1, root]
        assert [c.id for c in repo.log("main", amount=2)] == [merge, m1]
        assert [c.id for c in repo.log("main", amount=3)] == [merge, m1, b2]  # across pages of the adapter
        assert [c.id for c in repo.log("b")] == [b2, b1, root]
        commit = repo.get_commit(merge)
        assert commit.parents == (m1, b2) and commit.message == "publish b"
        assert commit.metadata == {"trainyard.stage": "merged"}
        assert repo.list_paths("main", "") == ["x", "y", "z"] and repo.list_paths(m1, "") == ["z"]

    def test_metadata_is_strings_only(self, repo: LakeFSPort) -> None:
        repo.put_bytes("main", "x", b"1")
        with pytest.raises(LakeFSError) as refused:
            repo.commit("main", "a count that is not a string", {"trainyard.records": 3})  # type: ignore[dict-item]
        assert refused.value.status == 400 and "trainyard.records" in str(refused.value)
        assert repo.has_uncommitted_changes("main")  # nothing was committed

    # -- diff and merge ------------------------------------------------------------------------------------------
    def test_diff_is_three_dot(self, repo: LakeFSPort) -> None:
        committed(repo, "main", {"shared": b"0"})
        repo.ensure_branch("b")
        committed(repo, "b", {"from-branch": b"1", "shared": b"1"})
        committed(repo, "main", {"from-main": b"2"})
        repo.put_bytes("b", "staged-only", b"3")
        assert repo.diff_paths("main", "b") == ["from-branch", "shared"]  # not main's own change, nor staging
        assert repo.diff_paths("b", "main") == ["from-main"]
        assert repo.diff_paths("main", "main") == []

    def test_a_conflict_merges_nothing_and_leaves_both_sides_unchanged(self, repo: LakeFSPort) -> None:
        committed(repo, "main", {"f": b"base"})
        repo.ensure_branch("b")
        branch_head = committed(repo, "b", {"f": b"theirs", "g": b"new"})
        main_head = committed(repo, "main", {"f": b"ours"})
        with pytest.raises(MergeConflict) as conflict:
            repo.merge("b", "main", "publish", {})
        assert isinstance(conflict.value, LakeFSError) and conflict.value.status == 409
        assert (repo.branch_head("main"), repo.branch_head("b")) == (main_head, branch_head)
        assert repo.get_bytes("main", "f") == b"ours" and repo.get_bytes("main", "g") is None
        assert repo.get_bytes("b", "f") == b"theirs" and not repo.has_uncommitted_changes("main")

    def test_the_same_change_on_both_sides_is_no_conflict(self, repo: LakeFSPort) -> None:
        repo.ensure_branch("b")
        committed(repo, "b", {"f": b"same", "g": b"only the branch"})
        committed(repo, "main", {"f": b"same"})
        merge = repo.merge("b", "main", "", {})
        assert repo.get_bytes(merge, "f") == b"same" and repo.get_bytes(merge, "g") == b"only the branch"
        assert repo.get_commit(merge).message == "Merge 'b' into 'main'"  # lakeFS's message when none is given

    def test_a_dirty_destination_or_a_merge_that_brings_nothing_is_refused(self, repo: LakeFSPort) -> None:
        repo.ensure_branch("b")
        committed(repo, "b", {"f": b"1"})
        repo.put_bytes("main", "dirty", b"x")
        with pytest.raises(LakeFSError) as dirty:
            repo.merge("b", "main", "publish", {})
        assert dirty.value.status == 400 and not isinstance(dirty.value, MergeConflict)
        assert repo.get_bytes("main", "dirty") == b"x" and repo.get_bytes("main", "f") is None

        repo.commit("main", "clean up", {})
        repo.merge("b", "main", "publish", {})
        head = repo.branch_head("main")
        with pytest.raises(LakeFSError) as nothing:  # already merged
            repo.merge("b", "main", "publish again", {})
        assert nothing.value.status == 400 and repo.branch_head("main") == head
        repo.ensure_branch("empty")
        with pytest.raises(LakeFSError) as empty:
            repo.merge("empty", "main", "publish", {})
        assert empty.value.status == 400 and repo.branch_head("main") == head
        with pytest.raises(RefNotFound):
            repo.merge("no-such-branch", "main", "publish", {})

    # -- tags ----------------------------------------------------------------------------------------------------
    def test_tags_are_immutable(self, repo: LakeFSPort) -> None:
        first = committed(repo, "main", {"a": b"1"})
        assert repo.create_tag("ds/v1", "main") is True
        committed(repo, "main", {"a": b"2"})
        assert repo.create_tag("ds/v1", "main") is False
        assert list(repo.iter_tags()) == [Tag("ds/v1", first)]
        assert repo.get_bytes("ds/v1", "a") == b"1"  # a tag reads its commit, not the branch
        with pytest.raises(RefNotFound):
            repo.create_tag("ds/v2", "no-such-ref")
        with pytest.raises(LakeFSError) as invalid:
            repo.create_tag("ds/v2:bad", "main")
        assert invalid.value.status == 400

    def test_iter_tags_lists_a_prefix_sorted_across_pages(self, repo: LakeFSPort) -> None:
        head = repo.branch_head("main")
        for tag in ("ds/v3", "ds/v1", "other/v1", "ds/v10", "ds/v2", "dsx/v1"):
            assert repo.create_tag(tag, head)
        assert [t.id for t in repo.iter_tags(prefix="ds/")] == ["ds/v1", "ds/v10", "ds/v2", "ds/v3"]
        assert {t.commit_id for t in repo.iter_tags()} == {head} and len(list(repo.iter_tags())) == 6
        assert list(repo.iter_tags(prefix="none/")) == []

    # -- protection ----------------------------------------------------------------------------------------------
    def test_protection_blocks_writes_and_commits_but_not_merges(self, repo: LakeFSPort) -> None:
        repo.put_bytes("main", "staged-before", b"x")
        repo.protect("main")
        repo.protect("main")
        repo.protect("release-*")
        assert repo.protected_patterns() == ["main", "release-*"]
        for write in (lambda: repo.put_bytes("main", "a", b"1"), lambda: repo.commit("main", "direct", {})):
            with pytest.raises(LakeFSError) as forbidden:
                write()
            assert forbidden.value.status == 403
        repo.ensure_branch("release-1")
        for write in (lambda: repo.put_bytes("release-1", "a", b"1"), lambda: repo.delete_branch("release-1")):
            with pytest.raises(LakeFSError) as forbidden:
                write()
            assert forbidden.value.status == 403

        repo.unprotect("main")
        repo.commit("main", "commit what was staged", {})
        repo.protect("main")
        assert repo.commit("main", "nothing staged", {}) == repo.branch_head("main")  # idempotent, even protected
        repo.ensure_branch("b")
        committed(repo, "b", {"a": b"1"})
        merge = repo.merge("b", "main", "publish", {})
        assert repo.get_bytes("main", "a") == b"1" and repo.branch_head("main") == merge
        repo.unprotect("main")
        assert repo.protected_patterns() == ["release-*"]
        repo.put_bytes("main", "a", b"2")
        assert repo.has_uncommitted_changes("main")

    # -- missing refs --------------------------------------------------------------------------------------------
    def test_missing_refs_raise_ref_not_found(self, repo: LakeFSPort) -> None:
        for call in (lambda: repo.branch_head("nope"), lambda: repo.get_commit("nope"),
                     lambda: repo.get_commit("0123456789abcdef" * 4), lambda: repo.log("nope"),
                     lambda: repo.list_paths("nope", ""), lambda: repo.diff_paths("main", "nope"),
                     lambda: repo.ensure_branch("b", source="nope"), lambda: repo.put_bytes("nope", "a", b"1"),
                     lambda: repo.has_uncommitted_changes("nope"), lambda: repo.commit("nope", "m", {})):
            with pytest.raises(RefNotFound) as missing:
                call()
            assert isinstance(missing.value, LookupError) and missing.value.status == 404
        assert not repo.branch_exists("b") and not repo.branch_exists("nope")
