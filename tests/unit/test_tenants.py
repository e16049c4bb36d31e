"""The tenants file: the example loads, and every kind of mistake fails with one message that locates it."""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from dagster_project.settings import EXAMPLE_TENANTS_FILE
from dagster_project.tenants import GateThresholds, TenantsConfig, TenantsConfigError, load_tenants

Raw = dict[str, Any]
EXAMPLE: Raw = yaml.safe_load(EXAMPLE_TENANTS_FILE.read_text(encoding="utf-8"))


def write_mutated(tmp_path: Path, mutate: Callable[[Raw], None]) -> Path:
    """The example file with ``mutate(raw)`` applied, written as YAML under ``tmp_path``."""
    raw = copy.deepcopy(EXAMPLE)
    mutate(raw)
    path = tmp_path / "tenants.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False), encoding="utf-8")
    return path


def load_error(path: Path) -> str:
    """Load ``path`` expecting exactly one TenantsConfigError; return its message."""
    with pytest.raises(TenantsConfigError) as caught:
        load_tenants(path)
    return str(caught.value)


def problem_lines(message: str) -> list[str]:
    """The per-problem lines of a validation message (the first line is the 'invalid tenants file' header)."""
    return message.splitlines()[1:]


def northbank_dataset(raw: Raw) -> Raw:
    return raw["tenants"][0]["datasets"][0]


def stahlwerk_dataset(raw: Raw) -> Raw:
    return raw["tenants"][1]["datasets"][0]


# --------------------------------------------------------------------------------------------- the example file


def test_example_file_loads_two_tenants_with_their_datasets(example_config: TenantsConfig) -> None:
    assert [t.name for t in example_config.tenants] == ["northbank", "stahlwerk"]
    assert [(t.name, d.name) for t, d in example_config.datasets()] == [
        ("northbank", "support_intents"),
        ("northbank", "complaints"),
        ("stahlwerk", "defect_reports"),
    ]
    complaints = example_config.tenant("northbank").dataset("complaints")
    assert (complaints.publish.policy, complaints.publish.required_approvals) == ("owner", 1)
    assert example_config.tenant("stahlwerk").landing_prefix == "stahlwerk/drops"
    assert example_config.tenant("northbank").data_owners == [
        "priya.shah@northbank.example",
        "tom.okafor@northbank.example",
    ]


def test_example_dataset_details(example_config: TenantsConfig) -> None:
    support = example_config.tenant("northbank").dataset("support_intents")
    assert support.record_schema.text_field == "text"
    assert support.record_schema.id_field == "ticket_id"
    assert support.record_schema.required == ["ticket_id", "text", "created_at"]
    assert support.record_schema.fields["channel"].allowed == ["email", "chat", "phone"]
    assert support.overlap_k == 3
    assert [(v.name, v.annotators, v.accuracy, v.seed) for v in support.vendors] == [("simwork_uk", 6, 0.98, 11)]
    defects = example_config.tenant("stahlwerk").dataset("defect_reports")
    assert defects.record_schema.fields["severity"].type == "integer"
    assert (defects.record_schema.fields["severity"].minimum, defects.record_schema.fields["severity"].maximum) == (
        1,
        5,
    )
    assert defects.freshness_sla_hours == 48


def test_example_gate_thresholds(example_config: TenantsConfig) -> None:
    """The example sets its gates explicitly; what it leaves out takes the documented default."""
    support = example_config.tenant("northbank").dataset("support_intents")
    defects = example_config.tenant("stahlwerk").dataset("defect_reports")
    assert support.gates == GateThresholds(min_class_share=0.05, max_duplicate_rate=0.2)
    assert defects.gates == GateThresholds(min_class_share=0.05, max_duplicate_rate=0.2, max_synthetic_share=0.3)
    assert GateThresholds() == GateThresholds(
        min_agreement=0.85, min_gold_accuracy=0.95, min_completeness=0.99, min_class_share=0.0, max_drift_psi=0.2,
        max_pii_residual=0, max_duplicate_rate=0.5, max_synthetic_share=0.0)
    assert (support.pii_policy, defects.pii_policy) == ("redact", "none")
    assert defects.synthetic_field == "is_synthetic"


def test_lookup_of_unknown_names_raises_key_error(example_config: TenantsConfig) -> None:
    with pytest.raises(KeyError, match="no tenant 'nobody'"):
        example_config.tenant("nobody")
    with pytest.raises(KeyError, match="tenant 'northbank' has no dataset 'defect_reports'"):
        example_config.tenant("northbank").dataset("defect_reports")


def test_round_trip_of_unchanged_example_loads(tmp_path: Path) -> None:
    """Guards the helper: the unmodified dump must be valid, so every failure below is due to its mutation."""
    config = load_tenants(write_mutated(tmp_path, lambda raw: None))
    assert len(config.tenants) == 2


# ----------------------------------------------------------------------------------------------- invalid files


def test_overlap_k_not_an_int_names_file_tenant_dataset_and_field(tmp_path: Path) -> None:
    path = write_mutated(tmp_path, lambda raw: stahlwerk_dataset(raw).update(overlap_k="three"))
    message = load_error(path)
    assert problem_lines(message) == [
        f"{path}: tenant 'stahlwerk', dataset 'defect_reports', field 'overlap_k': "
        "Input should be a valid integer, unable to parse string as an integer"
    ]


def test_data_owner_that_is_not_an_email(tmp_path: Path) -> None:
    path = write_mutated(
        tmp_path, lambda raw: raw["tenants"][0].update(data_owners=["priya.shah@northbank.example", "priya"])
    )
    message = load_error(path)
    [problem] = problem_lines(message)
    assert problem.startswith(f"{path}: tenant 'northbank', field 'data_owners': ")
    assert problem.endswith("not an email address: priya")


def test_text_field_not_declared_in_fields(tmp_path: Path) -> None:
    """The message must say that ``text_field`` is the offending setting, not only the unknown name 'body'."""
    path = write_mutated(tmp_path, lambda raw: northbank_dataset(raw)["schema"].update(text_field="body"))
    message = load_error(path)
    [problem] = problem_lines(message)
    assert problem.startswith(f"{path}: tenant 'northbank', dataset 'support_intents', field ")
    location_and_reason = problem.removeprefix(f"{path}: ")  # tmp_path itself contains the test's name
    assert "'body'" in location_and_reason
    assert "text_field" in location_and_reason


def test_text_field_of_non_string_type(tmp_path: Path) -> None:
    path = write_mutated(
        tmp_path, lambda raw: northbank_dataset(raw)["schema"]["fields"]["text"].update(type="integer")
    )
    [problem] = problem_lines(load_error(path))
    assert problem.startswith(f"{path}: tenant 'northbank', dataset 'support_intents', field 'schema.text_field': ")
    assert problem.endswith("text_field 'text' must be of type string")


def test_vendor_with_fewer_annotators_than_overlap_k(tmp_path: Path) -> None:
    path = write_mutated(tmp_path, lambda raw: stahlwerk_dataset(raw)["vendors"][0].update(annotators=2))
    [problem] = problem_lines(load_error(path))
    assert problem.startswith(f"{path}: tenant 'stahlwerk', dataset 'defect_reports'")
    assert problem.endswith("vendor 'simwork_eu' has 2 annotators, fewer than overlap_k=3")


def test_duplicate_tenant_names_name_the_duplicated_tenant(tmp_path: Path) -> None:
    """Two tenants called 'northbank': the message must say which name is duplicated."""
    path = write_mutated(tmp_path, lambda raw: raw["tenants"][1].update(name="northbank"))
    [problem] = problem_lines(load_error(path))
    assert problem.startswith(f"{path}: ")
    reason = problem.removeprefix(f"{path}: ")
    assert "tenant names must be unique" in reason
    assert "northbank" in reason


def test_duplicate_lakefs_repository(tmp_path: Path) -> None:
    path = write_mutated(tmp_path, lambda raw: raw["tenants"][1].update(lakefs_repository="northbank"))
    [problem] = problem_lines(load_error(path))
    assert problem.startswith(f"{path}: ")
    assert problem.endswith("each tenant needs its own lakefs_repository: 'northbank' appears 2 times")


def test_unknown_extra_key_in_a_dataset(tmp_path: Path) -> None:
    path = write_mutated(tmp_path, lambda raw: northbank_dataset(raw).update(colour="blue"))
    assert problem_lines(load_error(path)) == [
        f"{path}: tenant 'northbank', dataset 'support_intents', field 'colour': Extra inputs are not permitted"
    ]


def test_misspelt_gate_threshold_is_an_unknown_key_with_its_full_path(tmp_path: Path) -> None:
    path = write_mutated(tmp_path, lambda raw: northbank_dataset(raw)["gates"].update(min_agreemnt=0.9))
    assert problem_lines(load_error(path)) == [
        f"{path}: tenant 'northbank', dataset 'support_intents', field 'gates.min_agreemnt': "
        "Extra inputs are not permitted"
    ]


def test_out_of_range_vendor_accuracy_names_the_vendor_position(tmp_path: Path) -> None:
    path = write_mutated(tmp_path, lambda raw: stahlwerk_dataset(raw)["vendors"][0].update(accuracy=1.5))
    assert problem_lines(load_error(path)) == [
        f"{path}: tenant 'stahlwerk', dataset 'defect_reports', field 'vendors.0.accuracy': "
        "Input should be less than or equal to 1"
    ]


def test_tenant_without_name_is_located_by_position(tmp_path: Path) -> None:
    path = write_mutated(tmp_path, lambda raw: raw["tenants"][1].pop("name"))
    assert problem_lines(load_error(path)) == [f"{path}: tenant #2, field 'name': Field required"]


def test_two_mistakes_give_one_error_with_two_lines(tmp_path: Path) -> None:
    def mutate(raw: Raw) -> None:
        northbank_dataset(raw).update(overlap_k="three")
        raw["tenants"][1].update(monthly_budget_usd=-1)

    message = load_error(write_mutated(tmp_path, mutate))
    assert message.splitlines()[0] == "invalid tenants file"
    lines = problem_lines(message)
    assert len(lines) == 2
    assert "tenant 'northbank', dataset 'support_intents', field 'overlap_k'" in lines[0]
    assert "tenant 'stahlwerk', field 'monthly_budget_usd'" in lines[1]


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "absent.yaml"
    assert load_error(path) == f"{path}: tenants file not found"


def test_invalid_yaml(tmp_path: Path) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text("tenants:\n  - name: [unclosed\n", encoding="utf-8")
    message = load_error(path)
    assert message.startswith(f"{path}: not valid YAML: ")


def test_empty_file(tmp_path: Path) -> None:
    path = tmp_path / "empty.yaml"
    path.write_text("", encoding="utf-8")
    assert problem_lines(load_error(path)) == [
        f"{path}: top level: Input should be a valid dictionary or instance of TenantsConfig"
    ]


def test_non_utf8_file_is_a_config_error_naming_the_file(tmp_path: Path) -> None:
    """A file saved as Latin-1 (e.g. an umlaut in a display name) must fail as TenantsConfigError, not crash."""
    path = tmp_path / "latin1.yaml"
    path.write_bytes(EXAMPLE_TENANTS_FILE.read_bytes().replace(b"Fertigung", b"F\xfchrung"))
    message = load_error(path)
    assert message.startswith(f"{path}: ")
