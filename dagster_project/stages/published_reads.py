"""What dedup reads besides its own keys: texts of its parts by position, and what is already on ``main``.

Why a module of its own: the near-duplicate decision sees every record of the batch, but must not hold every text.
:class:`PartTexts` reads a text only when the exact Jaccard check of a candidate pair needs it, from the part it is
in (the near-duplicate engine asks for them in row order, so each part is read once), and
:func:`published_texts` reads published texts only for the candidates found among published records. The band keys
of everything published come from the small per-batch signature indexes on ``main`` (:func:`published_signatures`),
so a new batch never recomputes an old signature.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from dagster_project import layout
from dagster_project.stages.batch import Batch
from dagster_project.stages.neardup import NearDupParams, SignatureIndex


class PartTexts(Sequence[str]):
    """The texts of the rows ``rows`` (global row numbers across ``paths``' parts), read lazily by position.

    The text column of the part last read is kept (as an Arrow array): the near-duplicate engine reads the texts
    of its candidates once, in row order, so each part is read once and only one is held at a time."""

    def __init__(self, batch: Batch, paths: list[str], bounds: list[tuple[int, int]], rows: np.ndarray,
                 text_field: str) -> None:
        self._batch, self._paths, self._rows, self._field = batch, paths, rows, text_field
        self._starts = np.array([start for start, _ in bounds], dtype=np.int64)
        self._part: tuple[int, pa.Array] | None = None

    def __len__(self) -> int:
        return len(self._rows)

    def __getitem__(self, position):  # type: ignore[override]
        if isinstance(position, slice):
            return [self[i] for i in range(*position.indices(len(self)))]
        row = int(self._rows[position])
        part = int(np.searchsorted(self._starts, row, side="right")) - 1
        value = self._texts(part)[row - int(self._starts[part])].as_py()
        return value if isinstance(value, str) else ""

    def _texts(self, part: int) -> pa.Array:
        if self._part is None or self._part[0] != part:
            table = pq.read_table(pa.BufferReader(self._batch.get_part(self._paths[part])), columns=[self._field])
            self._part = (part, table.column(0).combine_chunks())
        return self._part[1]


def published_signatures(batch: Batch, params: NearDupParams) -> SignatureIndex:
    """The band keys of every batch published on main except this one (a re-run must not see itself); indexes
    keyed another way (an older threshold) are skipped, since their keys cannot be compared."""
    own = layout.neardup_index_path(batch.dataset.name, batch.batch_id)
    indexes = []
    for path in batch.repo.list_paths(layout.MAIN_BRANCH, layout.neardup_index_prefix(batch.dataset.name)):
        data = batch.repo.get_bytes(layout.MAIN_BRANCH, path) if path != own else None
        if data is not None:
            index = SignatureIndex.from_bytes(data)
            if index.params.scheme == params.scheme:
                indexes.append(index)
    return SignatureIndex.concat(indexes, params)


def published_texts(batch: Batch, record_ids: list[str], text_field: str) -> dict[str, str]:
    """The published texts of ``record_ids`` on main (an erased record is simply not there)."""
    wanted = pa.array(record_ids, type=pa.string())
    found: dict[str, str] = {}
    for path in batch.repo.list_paths(layout.MAIN_BRANCH, layout.published_prefix(batch.dataset.name)):
        if not path.endswith(".parquet") or f"batch={batch.batch_id}/" in path:
            continue
        data = batch.repo.get_bytes(layout.MAIN_BRANCH, path)
        if data is None:
            continue
        table = pq.read_table(pa.BufferReader(data), columns=["record_id", text_field])
        table = table.filter(pc.is_in(table.column("record_id").cast(pa.string()), value_set=wanted))
        found.update(zip(table.column(0).to_pylist(), table.column(1).to_pylist(), strict=True))
    return found


