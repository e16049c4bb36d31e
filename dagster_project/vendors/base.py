"""The contract every labeling workforce implements.

Why a protocol: vendors differ (a simulated workforce, Label Studio, a BPO's REST API), but the pipeline only
needs to submit a batch's tasks idempotently, ask how far along it is, and fetch judgements in one long
format. Real integrations slot in by implementing these three calls.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import pandas as pd

TASK_COLUMNS = ["task_id", "item_id", "replica", "vendor", "text"]
ANNOTATION_COLUMNS = ["task_id", "item_id", "annotator_id", "label", "vendor", "submitted_at", "completed_at",
                      "cost_usd"]


@dataclass(frozen=True)
class SubmissionStatus:
    submission_id: str
    total_tasks: int
    completed_tasks: int

    @property
    def done(self) -> bool:
        return self.completed_tasks >= self.total_tasks


class VendorClient(Protocol):
    name: str

    def submit(self, submission_id: str, tasks: pd.DataFrame, labels: list[str]) -> SubmissionStatus:
        """Hand tasks (``TASK_COLUMNS``) to the workforce. Submitting the same id twice does not duplicate work."""
        ...

    def status(self, submission_id: str) -> SubmissionStatus: ...

    def fetch(self, submission_id: str) -> pd.DataFrame:
        """Judgements so far, one row per judgement (``ANNOTATION_COLUMNS``)."""
        ...
