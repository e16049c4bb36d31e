"""The ``dedup`` stage: exact duplicates by normalised-text hash, within the batch and against ``main``.

Duplicates waste labeling budget and leak between train and evaluation splits, so each record whose
normalised text was already seen -- earlier in the same batch, or in any batch already published on ``main``
-- ends as ``duplicate_of(<record_id of the first occurrence>)``. ``main`` keeps a small hash index per
published batch (``datasets/<dataset>/dedup_index/``), so checking against everything published reads hashes,
not every published record. Near-duplicates (MinHash/LSH) build on the same index later.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from dataclasses import dataclass

import numpy as np
import pandas as pd

from dagster_project.stages.parts import PartOutput, PartTask, frame_bytes, read_frame

DEDUP_INDEX_COLUMNS = ["text_hash", "record_id"]
DUPLICATE_COLUMNS = ["record_id", "batch_id", "duplicate_of", "text_hash", "scope"]
DIGEST_BYTES = 16
"""A 128-bit digest: collisions are out of reach for any number of records a dataset will hold (~2^64 needed),
at half the bytes of a full SHA-256 and a quarter of its hex string."""
_WHITESPACE = re.compile(r"\s+")


def canonical_text(text: str) -> str:
    """The text with case, Unicode compatibility forms and whitespace runs normalised away."""
    return _WHITESPACE.sub(" ", unicodedata.normalize("NFKC", text).casefold()).strip()


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
    is on main duplicates the record on main; otherwise a later copy duplicates the batch's first occurrence."""
    known = published_index.assign(text_hash=as_digests(published_index["text_hash"]))
    on_main = keys["text_hash"].map(known.drop_duplicates("text_hash").set_index("text_hash")["record_id"])
    first_in_batch = keys.groupby("text_hash", sort=False)["record_id"].transform("first")
    main_dupes = on_main.notna()
    batch_dupes = ~main_dupes & (first_in_batch != keys["record_id"])

    def rows(mask: pd.Series, duplicate_of: pd.Series, scope: str) -> pd.DataFrame:
        selected = keys.loc[mask]
        return pd.DataFrame({"record_id": selected["record_id"], "batch_id": selected["batch_id"],
                             "duplicate_of": duplicate_of[mask], "text_hash": selected["text_hash"], "scope": scope})

    found = pd.concat([rows(main_dupes, on_main, "main"), rows(batch_dupes, first_in_batch, "batch")],
                      ignore_index=True)[DUPLICATE_COLUMNS]
    return duplicates_frame(found)


def duplicates_frame(found: pd.DataFrame) -> pd.DataFrame:
    """The duplicates table as written: text columns as strings, the digest as bytes."""
    text = [c for c in DUPLICATE_COLUMNS if c != "text_hash"]
    return found.astype({c: "string" for c in text}).astype({"text_hash": object})


def deduplicate(records: pd.DataFrame, text_field: str, published_index: pd.DataFrame) -> DedupResult:
    """Keep the first occurrence of each normalised text; ``published_index`` holds hashes already on main."""
    hashed = records.assign(text_hash=records[text_field].map(normalised_text_hash))
    duplicates = exact_duplicates(hashed[["record_id", "batch_id", "text_hash"]], published_index)
    unique = hashed[~hashed["record_id"].isin(duplicates["record_id"])].reset_index(drop=True)
    return DedupResult(unique, duplicates)


def index_entries(unique: pd.DataFrame) -> pd.DataFrame:
    """The hash index rows a published batch adds to main."""
    return unique[DEDUP_INDEX_COLUMNS].reset_index(drop=True)


def dedup_keys_part(task: PartTask) -> PartOutput:
    """Worker side of dedup's first pass: the digest of every record's text (the decision needs the whole batch)."""
    frame = read_frame(task.data, ["record_id", "batch_id", task.options])
    keys = pd.DataFrame({"record_id": frame["record_id"], "batch_id": frame["batch_id"],
                         "text_hash": frame[task.options].map(normalised_text_hash)})
    return PartOutput(task.index, b"", side=keys)


def dedup_filter_part(task: PartTask) -> PartOutput:
    """Worker side of dedup's second pass: the part without its duplicates, with each kept record's digest."""
    digests, keep = task.options
    frame = read_frame(task.data).assign(text_hash=list(digests))
    return PartOutput(task.index, frame_bytes(frame[np.asarray(keep)].reset_index(drop=True)))
