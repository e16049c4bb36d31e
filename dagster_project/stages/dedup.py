"""The ``dedup`` stage: exact and near-duplicates, within the batch and against everything on ``main``.

Duplicates waste labeling budget and leak between train and evaluation splits, so each record whose text was
already seen -- earlier in the same batch, or in any batch already published on ``main`` -- ends as
``duplicate_of(<record_id of the first occurrence>)``. Exact copies (same canonical text: case, Unicode forms and
spacing folded) take the cheap path: a 16-byte digest, looked up in the hash index each published batch leaves on
``main`` (``datasets/<dataset>/dedup_index/``). Near copies (a typo, punctuation, an inserted or replaced word,
rotated text) are found by MinHash/LSH (:mod:`~dagster_project.stages.neardup`) against the band keys each
published batch leaves there too (``datasets/<dataset>/neardup_index/``), so a new batch never recomputes an old
signature and reads a published text only when it is a candidate.

Both decisions need the whole batch, so the stage makes two passes over its parts: workers compute digests and
band keys part by part, the decisions are made on those (bytes per record, not texts), and workers then write
each part without its duplicates.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyarrow as pa

from dagster_project.stages.neardup import (
    NearDupParams,
    SignatureIndex,
    canonical_text,
    find_near_duplicates,
    text_keys,
)
from dagster_project.stages.parts import PartOutput, PartTask, frame_bytes, read_frame

DEDUP_INDEX_COLUMNS = ["text_hash", "record_id"]
DUPLICATE_COLUMNS = ["record_id", "batch_id", "duplicate_of", "text_hash", "scope", "similarity"]
SIGNATURES_FILE = "signatures.npz"
"""The near-duplicate band keys of the batch's unique records, on its branch; published as the batch's index."""
DIGEST_BYTES = 16
"""A 128-bit digest: collisions are out of reach for any number of records a dataset will hold (~2^64 needed),
at half the bytes of a full SHA-256 and a quarter of its hex string."""


def normalised_text_hash(text: str) -> bytes:
    """The first 16 bytes of the SHA-256 of the canonical text (an index written with hex digests before
    reads the same way: see :func:`as_digests`)."""
    return hashlib.sha256(canonical_text(text).encode("utf-8")).digest()[:DIGEST_BYTES]


def as_digests(values: pd.Series) -> pd.Series:
    """Digests from an index column, reading hex SHA-256 strings of older indexes as their first 16 bytes."""
    return values.map(lambda v: bytes.fromhex(v[: 2 * DIGEST_BYTES]) if isinstance(v, str) else bytes(v))


@dataclass
class DedupResult:
    records: pd.DataFrame
    """Unique records, with a ``text_hash`` column added."""
    duplicates: pd.DataFrame
    """One row per duplicate: which record it duplicates and whether that one is in this batch or on main."""


def exact_duplicates(keys: pd.DataFrame, published_index: pd.DataFrame) -> pd.DataFrame:
    """Duplicates among ``keys`` (``record_id``, ``batch_id``, ``text_hash``, in batch order): a record whose text
    is on main duplicates the record on main; otherwise a later copy duplicates the batch's first occurrence.

    On fixed-width digest arrays (numpy sorts and searches, 16 bytes a record), not on a column of Python bytes
    objects: a million-record batch is decided in a second, without a hash table of a million objects."""
    digests = _digest_array(keys["text_hash"])
    known = published_index.assign(text_hash=as_digests(published_index["text_hash"]))
    known = known.drop_duplicates("text_hash")  # the first record on main with that text
    known_digests = _digest_array(known["text_hash"])
    order = np.argsort(known_digests, kind="stable")
    known_sorted = known_digests[order]
    at = np.minimum(np.searchsorted(known_sorted, digests), max(len(order) - 1, 0))
    main_dupes = known_sorted[at] == digests if len(order) else np.zeros(len(digests), dtype=bool)
    _, first, inverse = np.unique(digests, return_index=True, return_inverse=True)
    first_of = first[inverse.ravel()]
    batch_dupes = ~main_dupes & (first_of != np.arange(len(digests)))

    def rows(mask: np.ndarray, duplicate_of: np.ndarray, scope: str) -> pd.DataFrame:
        picked = keys.loc[mask]  # only the duplicates' ids become Python objects, not the batch's
        return pd.DataFrame({"record_id": picked["record_id"].to_numpy(), "batch_id": picked["batch_id"].to_numpy(),
                             "duplicate_of": duplicate_of, "text_hash": picked["text_hash"].to_numpy(),
                             "scope": scope, "similarity": 1.0})

    on_main = known["record_id"].to_numpy()[order][at[main_dupes]] if main_dupes.any() else np.array([], object)
    first_ids = keys["record_id"].iloc[first_of[batch_dupes]].to_numpy()
    found = pd.concat([rows(main_dupes, on_main, "main"), rows(batch_dupes, first_ids, "batch")],
                      ignore_index=True)[DUPLICATE_COLUMNS]
    return duplicates_frame(found)


def digest_column(digests: list[bytes]) -> pd.arrays.ArrowExtensionArray:
    """Digests as one Arrow fixed-width binary column: 16 bytes a record where a column of Python ``bytes`` costs
    ~70, which for the millions of records dedup decides on at once is most of its memory."""
    return pd.arrays.ArrowExtensionArray(pa.array(digests, type=pa.binary(DIGEST_BYTES)))


def _digest_array(values: pd.Series) -> np.ndarray:
    if isinstance(values.dtype, pd.ArrowDtype) and values.dtype.pyarrow_dtype == pa.binary(DIGEST_BYTES):
        column = pa.array(values)  # through pandas' Arrow protocol: no copy, no Python objects
        column = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
        if column.null_count == 0:  # the fixed-width values, as they lie in Arrow's buffer
            return np.frombuffer(column.buffers()[1], dtype=f"S{DIGEST_BYTES}", count=len(column),
                                 offset=column.offset * DIGEST_BYTES)
    return np.array(values.tolist(), dtype=f"S{DIGEST_BYTES}") if len(values) else np.array([], f"S{DIGEST_BYTES}")


def duplicates_frame(found: pd.DataFrame) -> pd.DataFrame:
    """The duplicates table as written: ids and scope as strings, the digest as bytes, the similarity (1.0 for an
    exact duplicate, the 5-gram Jaccard for a near one) as a float."""
    text = [c for c in DUPLICATE_COLUMNS if c not in ("text_hash", "similarity")]
    return found[DUPLICATE_COLUMNS].astype({c: "string" for c in text}).astype(
        {"text_hash": object, "similarity": "float64"})


def near_duplicates(keys: pd.DataFrame, rows: np.ndarray, texts: Sequence[str], band_keys, params: NearDupParams,
                    against: SignatureIndex,
                    against_texts: Callable[[list[str]], Mapping[str, str]]) -> pd.DataFrame:
    """Near-duplicates among the records at ``rows`` of ``keys`` (those that are not exact duplicates; ``keys`` as
    for :func:`exact_duplicates`), given their ``texts`` and band keys, against each other and against the
    published records in ``against``. ``keys`` is not copied: only the duplicates' rows are read from it."""
    found = find_near_duplicates(keys["record_id"].array[rows], texts, params, against, against_texts,
                                 keys=band_keys)
    if not found:
        return duplicates_frame(pd.DataFrame(columns=DUPLICATE_COLUMNS))
    rows = rows[[f.position for f in found]]
    return duplicates_frame(pd.DataFrame({
        "record_id": [f.record_id for f in found], "batch_id": keys["batch_id"].iloc[rows].to_numpy(),
        "duplicate_of": [f.duplicate_of for f in found], "text_hash": keys["text_hash"].iloc[rows].to_numpy(),
        "scope": ["main" if f.published else "batch" for f in found],
        "similarity": [f.similarity for f in found]}))


def deduplicate(records: pd.DataFrame, text_field: str, published_index: pd.DataFrame) -> DedupResult:
    """Keep the first occurrence of each normalised text; ``published_index`` holds hashes already on main."""
    hashed = records.assign(text_hash=records[text_field].map(normalised_text_hash))
    duplicates = exact_duplicates(hashed[["record_id", "batch_id", "text_hash"]], published_index)
    unique = hashed[~hashed["record_id"].isin(duplicates["record_id"])].reset_index(drop=True)
    return DedupResult(unique, duplicates)


def index_entries(unique: pd.DataFrame) -> pd.DataFrame:
    """The hash index rows a published batch adds to main."""
    return unique[DEDUP_INDEX_COLUMNS].reset_index(drop=True)


@dataclass(frozen=True)
class DedupOptions:
    text_field: str
    near: NearDupParams | None
    """None: exact duplicates only."""


def dedup_keys_part(task: PartTask) -> PartOutput:
    """Worker side of dedup's first pass: the digest and the near-duplicate band keys of every record's text
    (the decisions need the whole batch, so they are made afterwards, on these)."""
    options: DedupOptions = task.options
    frame = read_frame(task.data, ["record_id", "batch_id", options.text_field])
    texts = frame[options.text_field].fillna("").astype(str).tolist()
    keys = pd.DataFrame({"record_id": frame["record_id"], "batch_id": frame["batch_id"],
                         "text_hash": digest_column([normalised_text_hash(t) for t in texts])})
    bands = text_keys(texts, options.near) if options.near is not None else None
    return PartOutput(task.index, b"", side=keys, arrays=bands)


def dedup_filter_part(task: PartTask) -> PartOutput:
    """Worker side of dedup's second pass: the part without its duplicates, with each kept record's digest."""
    digests, keep = task.options
    frame = read_frame(task.data).assign(text_hash=list(digests))
    return PartOutput(task.index, frame_bytes(frame[np.asarray(keep)].reset_index(drop=True)))
