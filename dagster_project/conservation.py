"""Record conservation: every raw record ends in exactly one terminal state, and the counts reconcile.

This is the platform's core invariant. Records in (parsed rows plus rows quarantined at parse time) must
equal published + quarantined + duplicates, and it is checked record by record, not just by totals: a record
that vanished or that ended in two states is named, and the batch is not published.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pandas as pd


class ConservationError(RuntimeError):
    """A batch whose records do not reconcile must never be published."""


@dataclass(frozen=True)
class ConservationReport:
    records_in: int
    published: int
    quarantined: int
    duplicates: int
    missing: list[str] = field(default_factory=list)
    """Record ids that reached no terminal state."""
    multiple: list[str] = field(default_factory=list)
    """Record ids that reached more than one terminal state (or are unknown to the raw stage)."""

    @property
    def balanced(self) -> bool:
        return not self.missing and not self.multiple and (
            self.records_in == self.published + self.quarantined + self.duplicates
        )

    def as_dict(self) -> dict[str, int | bool]:
        return {"records_in": self.records_in, "published": self.published, "quarantined": self.quarantined,
                "duplicates": self.duplicates, "balanced": self.balanced}

    def describe(self) -> str:
        text = (f"records in {self.records_in} = published {self.published} + quarantined {self.quarantined}"
                f" + duplicates {self.duplicates}")
        if self.missing:
            text += f"; {len(self.missing)} records without a terminal state (e.g. {', '.join(self.missing[:5])})"
        if self.multiple:
            text += f"; {len(self.multiple)} records in several states (e.g. {', '.join(self.multiple[:5])})"
        return text


def reconcile(raw_ids: pd.Series, published_ids: pd.Series, quarantined_ids: pd.Series,
              duplicate_ids: pd.Series) -> ConservationReport:
    """Compare the raw record ids with the ids in each terminal state."""
    terminal = pd.concat([published_ids, quarantined_ids, duplicate_ids], ignore_index=True)
    counts = terminal.value_counts()
    expected = pd.Index(raw_ids.unique())
    missing = expected.difference(counts.index)
    multiple = counts[counts > 1].index.union(counts.index.difference(expected))
    return ConservationReport(
        records_in=len(raw_ids),
        published=len(published_ids),
        quarantined=len(quarantined_ids),
        duplicates=len(duplicate_ids),
        missing=sorted(map(str, missing)),
        multiple=sorted(map(str, multiple)),
    )
