"""Quality measures as plain functions over long-format annotation frames (``item_id``, ``annotator_id``, ``label``).

They know nothing of Dagster or storage, so gates, reports and tests all call the same code.
"""

from dagster_project.quality.aggregation import majority_vote
from dagster_project.quality.agreement import percent_agreement

__all__ = ["majority_vote", "percent_agreement"]
