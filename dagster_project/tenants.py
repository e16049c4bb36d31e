"""Tenant and dataset configuration: one YAML file, validated by pydantic models.

Why a typed model: the asset graph, the gates, the vendors and the publish policy are all generated from
this file, so a mistake in it must stop the code location at load time with one message that names the
file, the tenant, the dataset and the field -- not surface hours later as a failed run.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import Annotated, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator, model_validator

NAME_PATTERN = r"^[a-z][a-z0-9_]{1,40}$"
"""Tenant and dataset names become Dagster asset-key parts, group names and lakeFS path segments."""

EMAIL_PATTERN = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
SLACK_ID_PATTERN = r"^[USW][A-Z0-9]{2,20}$"
"""A Slack member (``U``/``W``) or user group (``S``) id."""

FieldType = Literal["string", "integer", "number", "boolean", "datetime"]


def _repeated(names: Iterable[str]) -> str:
    """Names that occur more than once, for error messages ('' when all are unique)."""
    counts = Counter(names)
    return ", ".join(f"'{name}' appears {n} times" for name, n in counts.items() if n > 1)


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class FieldSpec(Strict):
    """One field of a dataset's record schema."""

    type: FieldType = "string"
    allowed: list[str] | None = None
    minimum: float | None = None
    maximum: float | None = None
    max_length: int | None = Field(default=None, gt=0)


class RecordSchema(Strict):
    fields: dict[str, FieldSpec]
    required: list[str] = []
    text_field: str
    """The field annotators read; normalised, deduplicated and scanned for PII."""
    id_field: str
    """The client's own record identifier, kept as lineage next to Trainyard's ``record_id``."""

    @field_validator("required", "text_field", "id_field")
    @classmethod
    def _declared(cls, value: str | list[str], info: ValidationInfo) -> str | list[str]:
        declared = info.data.get("fields", {})
        missing = [name for name in ([value] if isinstance(value, str) else value) if name not in declared]
        if missing:
            raise ValueError(f"{', '.join(repr(m) for m in missing)} is used but not declared under fields")
        if info.field_name == "text_field" and declared[value].type != "string":
            raise ValueError(f"text_field '{value}' must be of type string")
        return value


class VendorConfig(Strict):
    """A labeling workforce assigned to a dataset. ``kind`` selects the integration."""

    name: Annotated[str, Field(pattern=NAME_PATTERN)]
    kind: Literal["simulated"] = "simulated"
    share: float = Field(default=1.0, gt=0)
    """Relative share of the batch's items routed to this vendor."""
    price_per_judgement: float = Field(default=0.0, ge=0)
    # Simulated workforce parameters (deterministic given the seed).
    annotators: int = Field(default=5, ge=1)
    accuracy: float = Field(default=0.95, ge=0, le=1)
    latency_seconds: float = Field(default=60.0, ge=0)
    seed: int = 0
    annotator_accuracy: dict[int, float] = {}
    """Per-annotator accuracy overrides by annotator number (1-based), e.g. ``{3: 0.2}`` for a spammer."""

    @field_validator("annotator_accuracy")
    @classmethod
    def _known_annotators(cls, overrides: dict[int, float], info: ValidationInfo) -> dict[int, float]:
        count = info.data.get("annotators", 0)
        bad = [n for n, acc in overrides.items() if not 1 <= n <= count or not 0 <= acc <= 1]
        if bad:
            raise ValueError(f"annotator numbers must be 1..{count} with accuracy in [0, 1]; got {bad}")
        return overrides


class GateThresholds(Strict):
    """Blocking gate thresholds for a dataset (defaults follow the platform's quality policy)."""

    min_agreement: float = Field(default=0.85, ge=0, le=1)
    min_gold_accuracy: float = Field(default=0.95, ge=0, le=1)
    min_completeness: float = Field(default=0.99, ge=0, le=1)
    min_class_share: float = Field(default=0.0, ge=0, le=1)
    max_drift_psi: float = Field(default=0.2, ge=0)
    max_pii_residual: int = Field(default=0, ge=0)
    max_duplicate_rate: float = Field(default=0.5, ge=0, le=1)
    max_synthetic_share: float = Field(default=0.0, ge=0, le=1)


class PublishPolicy(Strict):
    policy: Literal["auto", "owner"] = "owner"
    """``auto`` merges as soon as every gate passed; ``owner`` waits for data-owner approval."""
    required_approvals: int = Field(default=1, ge=1, le=2)


class DatasetConfig(Strict):
    name: Annotated[str, Field(pattern=NAME_PATTERN)]
    description: str = ""
    record_schema: RecordSchema = Field(alias="schema")
    labels: list[str] = Field(min_length=2)
    overlap_k: int = Field(default=3, ge=1)
    """Independent judgements collected per item."""
    gold_rate: float = Field(default=0.05, ge=0, le=0.5)
    """Share of known-answer items (from the dataset's gold set) mixed into each batch's labeling tasks."""
    vendors: list[VendorConfig] = Field(min_length=1)
    gates: GateThresholds = GateThresholds()
    pii_policy: Literal["redact", "drop", "none"] = "redact"
    """What the ``pii`` stage does with detected PII before anything leaves for a vendor: ``redact`` it in
    place, ``drop`` (quarantine) the record, or ``none`` for datasets declared PII-free -- the PII residual gate
    still scans every labeling task, so a PII leak into a declared-clean dataset is blocked, not shipped."""
    near_duplicate_threshold: float | None = Field(default=0.8, gt=0, le=1)
    """Jaccard similarity of character 5-gram sets at or above which ``dedup`` removes a record as a
    near-duplicate of an earlier one (in the batch or on main); None: exact duplicates only."""
    synthetic_field: str | None = None
    """A boolean schema field marking synthetic records (their share is capped; they are tested against real)."""
    segment_fields: list[str] = []
    """Fields whose values define slices for the bias audit (agreement, accuracy, coverage per segment)."""
    freshness_sla_hours: float = Field(default=24.0, gt=0)
    publish: PublishPolicy = PublishPolicy()

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    @field_validator("labels")
    @classmethod
    def _labels_unique(cls, labels: list[str]) -> list[str]:
        if len(set(labels)) != len(labels):
            raise ValueError("labels must be unique")
        return labels

    @model_validator(mode="after")
    def _fields_exist(self) -> DatasetConfig:
        fields = self.record_schema.fields
        if self.synthetic_field is not None and fields.get(self.synthetic_field, FieldSpec()).type != "boolean":
            raise ValueError(f"synthetic_field '{self.synthetic_field}' must be a boolean field of the schema")
        unknown = [f for f in self.segment_fields if f not in fields]
        if unknown:
            raise ValueError(f"segment_fields {', '.join(map(repr, unknown))} are not declared in the schema")
        return self

    @model_validator(mode="after")
    def _workforce_fits_overlap(self) -> DatasetConfig:
        for vendor in self.vendors:
            if vendor.annotators < self.overlap_k:
                raise ValueError(
                    f"vendor '{vendor.name}' has {vendor.annotators} annotators, fewer than overlap_k={self.overlap_k}"
                )
        if repeated := _repeated(v.name for v in self.vendors):
            raise ValueError(f"vendor names must be unique within a dataset: {repeated}")
        return self


class TenantConfig(Strict):
    name: Annotated[str, Field(pattern=NAME_PATTERN)]
    display_name: str = ""
    lakefs_repository: Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9-]{2,62}$")]
    landing_prefix: str
    """Key prefix under the landing bucket: drops arrive at ``<prefix>/<dataset>/incoming/<drop>/``."""
    slack_channel: Annotated[str, Field(pattern=r"^#[a-z0-9._-]+$")]
    """On-call alerts for this tenant's batches."""
    data_owner_channel: Annotated[str | None, Field(pattern=r"^#[a-z0-9._-]+$")] = None
    """Where approval requests go (defaults to ``slack_channel``)."""
    data_owners: list[str] = Field(min_length=1)
    oncall_slack_id: Annotated[str | None, Field(pattern=SLACK_ID_PATTERN)] = None
    """Who on-call alerts mention: a Slack user (``U…``) or user group (``S…``) id."""
    slack_user_ids: dict[str, Annotated[str, Field(pattern=SLACK_ID_PATTERN)]] = {}
    """Data owner email -> Slack user id, so approval requests mention them."""
    monthly_budget_usd: float = Field(gt=0)
    datasets: list[DatasetConfig] = Field(min_length=1)

    @field_validator("data_owners")
    @classmethod
    def _owners_are_emails(cls, owners: list[str]) -> list[str]:
        bad = [o for o in owners if not EMAIL_PATTERN.match(o)]
        if bad:
            raise ValueError(f"not an email address: {', '.join(bad)}")
        return owners

    @model_validator(mode="after")
    def _slack_ids_are_owners(self) -> TenantConfig:
        owners = {o.lower() for o in self.data_owners}
        if unknown := sorted(e for e in self.slack_user_ids if e.lower() not in owners):
            raise ValueError(f"slack_user_ids: {', '.join(unknown)} not listed in data_owners")
        return self

    def mentions_for(self, approval: bool) -> tuple[str, ...]:
        """The Slack ids a message should notify: the data owners for an approval request, else on-call."""
        if approval:
            ids = {email.lower(): uid for email, uid in self.slack_user_ids.items()}
            return tuple(ids[o.lower()] for o in self.data_owners if o.lower() in ids)
        return (self.oncall_slack_id,) if self.oncall_slack_id else ()

    @field_validator("landing_prefix")
    @classmethod
    def _prefix_is_relative(cls, prefix: str) -> str:
        if not prefix or prefix.startswith("/") or prefix.endswith("/"):
            raise ValueError("must be a non-empty key prefix without leading or trailing '/'")
        return prefix

    @model_validator(mode="after")
    def _dataset_names_unique(self) -> TenantConfig:
        if repeated := _repeated(d.name for d in self.datasets):
            raise ValueError(f"dataset names must be unique within a tenant: {repeated}")
        return self

    @property
    def approvals_channel(self) -> str:
        return self.data_owner_channel or self.slack_channel

    def dataset(self, name: str) -> DatasetConfig:
        for dataset in self.datasets:
            if dataset.name == name:
                return dataset
        raise UnknownName(f"tenant '{self.name}' has no dataset '{name}'; its datasets: "
                          f"{', '.join(d.name for d in self.datasets)}")


class UnknownName(KeyError):
    """A tenant or dataset name that is not in the tenants file (the message lists the valid ones)."""

    def __str__(self) -> str:  # KeyError quotes its message; a person reads this one
        return str(self.args[0]) if self.args else ""


class TenantsConfig(Strict):
    tenants: list[TenantConfig] = Field(min_length=1)

    @model_validator(mode="after")
    def _tenants_unique(self) -> TenantsConfig:
        if repeated := _repeated(t.name for t in self.tenants):
            raise ValueError(f"tenant names must be unique: {repeated}")
        if repeated := _repeated(t.lakefs_repository for t in self.tenants):
            raise ValueError(f"each tenant needs its own lakefs_repository: {repeated}")
        return self

    def tenant(self, name: str) -> TenantConfig:
        for tenant in self.tenants:
            if tenant.name == name:
                return tenant
        raise UnknownName(f"no tenant '{name}'; tenants: {', '.join(t.name for t in self.tenants)}")

    def datasets(self) -> list[tuple[TenantConfig, DatasetConfig]]:
        return [(t, d) for t in self.tenants for d in t.datasets]


class TenantsConfigError(ValueError):
    """The tenants file is invalid; the message names file, tenant, dataset and field."""


def _describe_location(raw: object, loc: tuple[int | str, ...]) -> str:
    """Turn a pydantic error location into 'tenant X, dataset Y, field a.b' using the names in the file."""
    parts: list[str] = []
    node = raw
    fields: list[str] = []
    index = 0
    while index < len(loc):
        key = loc[index]
        if key in ("tenants", "datasets") and index + 1 < len(loc) and isinstance(loc[index + 1], int):
            position = int(loc[index + 1])
            items = node.get(key) if isinstance(node, dict) else None
            item = items[position] if isinstance(items, list) and position < len(items) else None
            name = item.get("name") if isinstance(item, dict) else None
            label = "tenant" if key == "tenants" else "dataset"
            parts.append(f"{label} '{name}'" if name else f"{label} #{position + 1}")
            node = item
            index += 2
            continue
        fields.append(str(key))
        node = node.get(key) if isinstance(node, dict) else None
        index += 1
    if fields:
        parts.append(f"field '{'.'.join(fields)}'")
    return ", ".join(parts) or "top level"


def load_tenants(path: Path | str) -> TenantsConfig:
    """Load and validate the tenants file, failing with one readable message per problem."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise TenantsConfigError(f"{path}: tenants file not found") from exc
    except UnicodeDecodeError as exc:
        byte = exc.object[exc.start]
        raise TenantsConfigError(f"{path}: not UTF-8 text (byte 0x{byte:02x} at offset {exc.start})") from exc
    except yaml.YAMLError as exc:
        raise TenantsConfigError(f"{path}: not valid YAML: {exc}") from exc
    try:
        return TenantsConfig.model_validate(raw)
    except ValidationError as exc:
        problems = [f"{path}: {_describe_location(raw, err['loc'])}: {err['msg']}" for err in exc.errors()]
        raise TenantsConfigError("invalid tenants file\n" + "\n".join(problems)) from None
