"""Quality gates on a batch: the measurements (:mod:`.evaluations`) and the registry that says which stage each
gate judges, whether it blocks, and how its results are recorded on the batch branch (:mod:`.registry`)."""

from dagster_project.gates.registry import (
    GATES,
    Gate,
    blocking_gate_names,
    evaluate,
    evaluate_and_record,
    gate,
    gates_for,
    read_gate_results,
    record_gate,
    sentence,
    stages_after,
)

__all__ = ["GATES", "Gate", "blocking_gate_names", "evaluate", "evaluate_and_record", "gate", "gates_for",
           "read_gate_results", "record_gate", "sentence", "stages_after"]
