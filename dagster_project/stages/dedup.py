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

import pandas as pd

DEDUP_INDEX_COLUMNS = ["text_hash", "record_id"]
DUPLICATE_COLUMNS = ["record_id", "batch_id", "duplicate_of", "text_hash", "scope"]
_WHITESPACE = re.compile(r"\s+")


def normalised_text_hash(text: str) -> str:
    """Hash of the text with case, Unicode compatibility forms and whitespace runs normalised away."""
    canonical = _WHITESPACE.sub(" ", unicodedata.normalize("NFKC", text).casefold()).strip()
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


@dataclass
class DedupResult:
    records: pd.DataFrame
    """Unique records, with a ``text_hash`` column added."""
    duplicates: pd.DataFrame
    """One row per duplicate: which record it duplicates and whether that one is in this batch or on main."""


def deduplicate(records: pd.DataFrame, text_field: str, published_index: pd.DataFrame) -> DedupResult:
    """Keep the first occurrence of each normalised text; ``published_index`` holds hashes already on main."""
    hashed = records.assign(text_hash=records[text_field].map(normalised_text_hash))
    on_main = hashed["text_hash"].map(
        published_index.drop_duplicates("text_hash").set_index("text_hash")["record_id"]
    )
    first_in_batch = hashed.groupby("text_hash", sort=False)["record_id"].transform("first")
    main_dupes = on_main.notna()
    batch_dupes = ~main_dupes & (first_in_batch != hashed["record_id"])
    def rows(mask: pd.Series, duplicate_of: pd.Series, scope: str) -> pd.DataFrame:
        selected = hashed.loc[mask]
        return pd.DataFrame({"record_id": selected["record_id"], "batch_id": selected["batch_id"],
                             "duplicate_of": duplicate_of[mask], "text_hash": selected["text_hash"], "scope": scope})

    duplicates = pd.concat(
        [rows(main_dupes, on_main, "main"), rows(batch_dupes, first_in_batch, "batch")], ignore_index=True
    )[DUPLICATE_COLUMNS]
    unique = hashed[~(main_dupes | batch_dupes)].reset_index(drop=True)
    return DedupResult(unique, duplicates.astype("string"))


def index_entries(unique: pd.DataFrame) -> pd.DataFrame:
    """The hash index rows a published batch adds to main."""
    return unique[DEDUP_INDEX_COLUMNS].reset_index(drop=True)
