"""A simulated labeling workforce: the embedded default vendor for the demo and the tests.

Each item has a hidden true label derived from a hash of its text (the same for every simulated vendor),
and each annotator returns it with the configured accuracy (``annotator_accuracy`` overrides single
annotators, e.g. to plant a spammer), otherwise a uniformly chosen wrong label, with a latency drawn from an
exponential distribution. Every random draw is a hash of (seed, task, purpose), so the same tasks always get the same
judgements, whichever process or batch order asks -- which is what makes demo runs and tests reproducible.
Submissions are persisted under the state directory like a vendor's own backlog, so ``submit`` is idempotent.
"""

from __future__ import annotations

import hashlib
import math
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd

from dagster_project.tenants import VendorConfig
from dagster_project.vendors.base import ANNOTATION_COLUMNS, TASK_COLUMNS, SubmissionStatus


def _uniform(*parts: object) -> float:
    digest = hashlib.sha256(":".join(map(str, parts)).encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def simulated_truth(text: str, labels: list[str]) -> str:
    """The hidden true label of an item in the simulation: a property of the text, shared by every simulated
    vendor (so gold sets built from it are right for all of them)."""
    return labels[int(_uniform("truth", text) * len(labels))]


class SimulatedWorkforce:
    """Deterministic annotators with configurable accuracy, latency and price."""

    def __init__(self, config: VendorConfig, state_dir: Path) -> None:
        self.name = config.name
        self.config = config
        self.state_dir = Path(state_dir) / "simulated" / config.name

    def accuracy_of(self, annotator_id: str) -> float:
        number = int(annotator_id.rsplit("-a", 1)[1])
        return self.config.annotator_accuracy.get(number, self.config.accuracy)

    def annotator_ids(self) -> list[str]:
        return [f"{self.name}-a{index:02d}" for index in range(1, self.config.annotators + 1)]

    def _dir(self, submission_id: str) -> Path:
        return self.state_dir / hashlib.sha256(submission_id.encode("utf-8")).hexdigest()[:24]

    def submit(self, submission_id: str, tasks: pd.DataFrame, labels: list[str]) -> SubmissionStatus:
        directory = self._dir(submission_id)
        if not (directory / "tasks.parquet").exists():
            directory.mkdir(parents=True, exist_ok=True)
            staged = directory / "tasks.parquet.tmp"
            tasks[TASK_COLUMNS].to_parquet(staged, index=False)
            pd.DataFrame({"label": labels}).to_parquet(directory / "labels.parquet", index=False)
            pd.DataFrame({"submitted_at": [datetime.now(UTC)]}).to_parquet(directory / "submitted.parquet")
            staged.rename(directory / "tasks.parquet")
        return self.status(submission_id)

    def status(self, submission_id: str) -> SubmissionStatus:
        tasks = self._tasks(submission_id)
        # Latency is simulated in the judgement timestamps, not by sleeping: work is complete once fetched.
        return SubmissionStatus(submission_id, len(tasks), len(tasks))

    def _tasks(self, submission_id: str) -> pd.DataFrame:
        path = self._dir(submission_id) / "tasks.parquet"
        if not path.exists():
            raise LookupError(f"vendor '{self.name}' has no submission '{submission_id}'")
        return pd.read_parquet(path)

    def true_label(self, text: str, labels: list[str]) -> str:
        return simulated_truth(text, labels)

    def fetch(self, submission_id: str) -> pd.DataFrame:
        directory = self._dir(submission_id)
        tasks = self._tasks(submission_id)
        labels = pd.read_parquet(directory / "labels.parquet")["label"].tolist()
        submitted_at = pd.read_parquet(directory / "submitted.parquet")["submitted_at"].iloc[0]
        annotators = self.annotator_ids()
        seed = self.config.seed
        rows = []
        assignments: dict[str, list[str]] = {}
        for task in tasks.itertuples(index=False):
            crew = assignments.get(task.item_id)
            if crew is None:  # k distinct annotators per item, chosen by hash order
                crew = sorted(annotators, key=lambda a, item=task.item_id: _uniform(seed, "assign", item, a))
                assignments[task.item_id] = crew
            annotator = crew[int(task.replica) % len(crew)]
            truth = self.true_label(task.text, labels)
            if _uniform(seed, "correct", task.task_id) < self.accuracy_of(annotator):
                label = truth
            else:
                wrong = [label for label in labels if label != truth]
                label = wrong[int(_uniform(seed, "wrong", task.task_id) * len(wrong))]
            delay = -math.log(1.0 - _uniform(seed, "latency", task.task_id)) * self.config.latency_seconds
            rows.append((task.task_id, task.item_id, annotator, label, self.name, submitted_at,
                         submitted_at + timedelta(seconds=delay), self.config.price_per_judgement))
        return pd.DataFrame(rows, columns=ANNOTATION_COLUMNS)
