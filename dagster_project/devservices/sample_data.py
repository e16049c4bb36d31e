"""Seeded synthetic drops for any configured dataset: the demo's data, the tests' fixtures, the benchmark's load.

Records follow the dataset's schema; texts are built from phrases about the dataset's own labels, and a share
of them carry PII (emails, UK phone numbers, IBANs, card numbers) the way real support tickets do. With
``plant_defects`` a drop also gets the defects the pipeline must survive: exact and near-exact duplicate
texts, a broken JSON line, a JSON line that is not an object, a non-UTF-8 line, a record missing a required
field, an out-of-range value and a CSV row with the wrong number of columns. :class:`DropPlan` says what was
planted, so tests can assert on exact counts.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from itertools import accumulate
from typing import Any

import numpy as np
import pandas as pd

from dagster_project.layout import MANIFEST_NAME, incoming_prefix
from dagster_project.stages.gold_set import gold_prefix
from dagster_project.tenants import DatasetConfig, TenantConfig
from dagster_project.vendors.simulated import simulated_truth

OPENERS = ["Hello,", "Hi team,", "Urgent:", "Good morning.", "Report:", "Please help -", "Following up:", ""]
DETAILS = ["It happened twice this week.", "Reference attached.", "Seen on the night shift.",
           "Still not resolved after two days.", "First time this has happened.", "Please advise on next steps.",
           "The customer is waiting for an answer.", "Logged by the supervisor."]
PII_SNIPPETS = ["Contact me at {first}.{last}@example.co.uk.", "Call me back on +44 7700 900{n:03d}.",
                "My IBAN is GB82 WEST 1234 5698 7654 32.", "Card ending 4111 1111 1111 1111 was used.",
                "Email {first}{n}@mail.example.com with the update."]
FIRST = ["alex", "sam", "priya", "tom", "anna", "lukas", "maria", "chen"]
LAST = ["smith", "okafor", "becker", "rossi", "nguyen", "kowalski", "murphy", "silva"]
BASE_TIME = datetime(2026, 11, 1, 8, 0, tzinfo=UTC)


@dataclass
class DropPlan:
    """What a generated drop contains, for assertions."""

    drop_prefix: str
    files: dict[str, bytes] = field(default_factory=dict)
    records: int = 0
    """Data rows written (each becomes one raw record or one quarantined line)."""
    unparsable: int = 0
    """Lines planted to fail parsing (quarantined at raw)."""
    invalid: int = 0
    """Parsable records planted to fail the schema (quarantined at clean)."""
    duplicates: int = 0
    """Records whose normalised text repeats an earlier record in the drop."""
    with_pii: int = 0
    manifest: dict[str, Any] | None = None


def _text(rng: np.random.Generator, labels: list[str], index: int, pii_share: float,
          text_chars: int = 0) -> tuple[str, bool]:
    label = labels[int(rng.integers(len(labels)))].replace("_", " ")
    parts = [OPENERS[int(rng.integers(len(OPENERS)))],
             f"Ticket {index}: this looks like a {label} case", f"(ref {int(rng.integers(10**6)):06d}).",
             DETAILS[int(rng.integers(len(DETAILS)))]]
    length = sum(len(p) + 1 for p in parts)
    while length < text_chars:  # longer tickets: free text, different in every ticket as real ones are
        words = FILLER_WORDS[np.searchsorted(_FILLER_CDF, rng.random(max(4, (text_chars - length) // 5)))]
        for word in words.tolist():
            if length >= text_chars:
                break
            parts.append(word)
            length += len(word) + 1
    has_pii = bool(rng.random() < pii_share)
    if has_pii:
        snippet = PII_SNIPPETS[int(rng.integers(len(PII_SNIPPETS)))]
        parts.append(snippet.format(first=FIRST[int(rng.integers(len(FIRST)))],
                                    last=LAST[int(rng.integers(len(LAST)))], n=int(rng.integers(1000))))
    return " ".join(p for p in parts if p), has_pii


_COMMON = ("account balance card payment transfer branch app login password statement fee refund charge limit "
           "loan mortgage rate interest overdraft savings deposit cheque direct debit standing order merchant "
           "online mobile phone email letter address name customer agent manager complaint delay error screen "
           "message code reset locked blocked missing wrong twice yesterday today morning evening week month "
           "urgent please help again still waiting since because after before when while although however also "
           "only never always ")
_SYLLABLES = [a + b for a in "bcdfghklmnprstvwz" for b in ("a", "e", "i", "o", "u", "ai", "ou", "ee")]


def zipf_vocabulary(rng: random.Random, size: int = 8000, common: Sequence[str] = ()) -> tuple[list[str], list[float]]:
    """``size`` words, ``common`` first, then made-up words of one to four syllables, with cumulative Zipf weights
    (rank ** -1.05, for ``random.choices(cum_weights=...)``): the shape of a real vocabulary, where the hundred
    commonest words make about half the text and the long tail makes texts differ. A few hundred words drawn
    uniformly instead make any two long texts share most of their 5-grams: every pair looks like a near-duplicate
    candidate, which real text does not."""
    words = list(dict.fromkeys(common))
    made_up = sorted({"".join(rng.choice(_SYLLABLES) for _ in range(rng.choice((1, 2, 2, 3, 3, 4))))
                      for _ in range(size * 2)} - set(words))[:size - len(words)]
    rng.shuffle(made_up)
    words += made_up
    return words, list(accumulate(1 / (rank + 1) ** 1.05 for rank in range(len(words))))


_FILLER, _FILLER_WEIGHTS = zipf_vocabulary(random.Random(20261202), common=_COMMON.split())
FILLER_WORDS = np.array(_FILLER)
_FILLER_CDF = np.array(_FILLER_WEIGHTS) / _FILLER_WEIGHTS[-1]
"""Words for padding benchmark tickets to a length (``text_chars``), drawn by Zipf weight: long tickets differ
from each other the way real free text does, instead of repeating the same few sentences."""


SHIFTED_WORDS = ["Regarding", "the", "matter", "of", "quarterly", "synergy", "alignment", "deliverables",
                 "stakeholder", "bandwidth", "leverage", "roadmap", "paradigm", "holistic", "scalable"]


def _shifted_text(rng: np.random.Generator) -> str:
    """Text from a different distribution (vocabulary and length): what a badly prompted generator produces."""
    return " ".join(SHIFTED_WORDS[int(i)] for i in rng.integers(len(SHIFTED_WORDS), size=int(rng.integers(30, 60))))


def default_pii_share(dataset: DatasetConfig) -> float:
    """Datasets declared PII-free (``pii_policy: none``) get clean texts; others get PII in a fifth of them."""
    return 0.0 if dataset.pii_policy == "none" else 0.2


def synthetic_records(dataset: DatasetConfig, n: int, seed: int = 0, pii_share: float | None = None,
                      start: int = 0, synthetic_share: float = 0.0,
                      synthetic_shifted: bool = False, text_chars: int = 0) -> tuple[list[dict[str, Any]], int]:
    """``n`` valid records for the dataset's schema, and how many carry PII.

    With a ``synthetic_field``, a ``synthetic_share`` of records are flagged synthetic; ``synthetic_shifted``
    makes those come from a visibly different distribution (for the synthetic-vs-real test); ``text_chars`` pads
    texts with more sentences to at least that many characters (for benchmarks).
    """
    rng = np.random.default_rng(seed)
    pii_share = default_pii_share(dataset) if pii_share is None else pii_share
    synthetic_field = dataset.synthetic_field
    schema = dataset.record_schema
    records: list[dict[str, Any]] = []
    with_pii = 0
    for offset in range(n):
        index = start + offset
        record: dict[str, Any] = {}
        is_synthetic = bool(synthetic_field) and rng.random() < synthetic_share
        for name, spec in schema.fields.items():
            if name == synthetic_field:
                record[name] = is_synthetic
            elif name == schema.text_field and is_synthetic and synthetic_shifted:
                record[name] = f"{index} " + _shifted_text(rng)
            elif name == schema.id_field:
                record[name] = f"{dataset.name[:3].upper()}-{seed:03d}-{index:07d}"
            elif name == schema.text_field:
                record[name], has_pii = _text(rng, dataset.labels, index, pii_share, text_chars)
                with_pii += has_pii
            elif spec.allowed:
                record[name] = spec.allowed[int(rng.integers(len(spec.allowed)))]
            elif spec.type == "integer":
                low, high = int(spec.minimum if spec.minimum is not None else 0), int(spec.maximum or 100)
                record[name] = int(rng.integers(low, high + 1))
            elif spec.type == "number":
                low, high = spec.minimum or 0.0, spec.maximum or 1.0
                record[name] = round(float(rng.uniform(low, high)), 4)
            elif spec.type == "boolean":
                record[name] = bool(rng.random() < 0.5)
            elif spec.type == "datetime":
                record[name] = (BASE_TIME + timedelta(minutes=index)).isoformat()
            else:
                record[name] = f"{name}-{int(rng.integers(1, 6))}"
        records.append(record)
    return records, with_pii


def default_manifest(tenant: TenantConfig, dataset: DatasetConfig, contains_pii: bool = True) -> dict[str, Any]:
    return {"source": f"{tenant.name} export of {dataset.name}", "license": "client-owned, processing agreement",
            "consent_basis": "contract", "collected_at": BASE_TIME.isoformat(), "contains_pii": contains_pii}


def _jsonl(records: list[dict[str, Any]]) -> bytes:
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records).encode("utf-8")


def _csv(records: list[dict[str, Any]], columns: list[str]) -> bytes:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(records)
    return buffer.getvalue().encode("utf-8")


def _parquet(records: list[dict[str, Any]]) -> bytes:
    buffer = io.BytesIO()
    pd.DataFrame(records).to_parquet(buffer, index=False)
    return buffer.getvalue()


def build_drop(tenant: TenantConfig, dataset: DatasetConfig, drop_name: str, n: int, seed: int = 0,
               formats: tuple[str, ...] = ("jsonl", "csv", "parquet"), plant_defects: bool = True,
               with_manifest: bool = True, duplicate_share: float = 0.05, pii_share: float | None = None,
               synthetic_share: float = 0.0, synthetic_shifted: bool = False, text_chars: int = 0) -> DropPlan:
    """Generate a drop's files in memory (see :func:`upload_drop`)."""
    schema = dataset.record_schema
    records, with_pii = synthetic_records(dataset, n, seed, pii_share, synthetic_share=synthetic_share,
                                          synthetic_shifted=synthetic_shifted, text_chars=text_chars)
    plan = DropPlan(drop_prefix=incoming_prefix(tenant.landing_prefix, dataset.name) + drop_name + "/",
                    with_pii=with_pii)
    rng = np.random.default_rng(seed + 1)
    if plant_defects and n >= 20:
        targets = rng.choice(np.arange(10, n), size=max(1, int(n * duplicate_share)), replace=False)
        for target in targets:
            source = records[int(rng.integers(0, 10))]
            variant = source[schema.text_field]
            if rng.random() < 0.5:  # same text up to case and whitespace: still an exact normalised duplicate
                variant = "  " + variant.upper().replace(" ", "   ") + " "
            records[int(target)] = {**records[int(target)], schema.text_field: variant}
        plan.duplicates = len(targets)
    chunks = np.array_split(np.arange(len(records)), len(formats))
    columns = list(schema.fields)
    for fmt, chunk in zip(formats, chunks, strict=True):
        part = [records[i] for i in chunk]
        plan.records += len(part)
        name = f"{dataset.name}-part-{fmt}.{fmt}"
        if fmt == "jsonl":
            body = _jsonl(part)
            if plant_defects:
                missing = {k: v for k, v in part[0].items() if k != schema.required[-1]} if schema.required else {}
                body += (b'{"broken json": \n' + b"[1, 2, 3]\n" + b'{"text": "caf\xe9 latin-1 bytes"}\n'
                         + json.dumps({**missing, "_note": "missing required field"}).encode() + b"\n")
                plan.records += 4
                plan.unparsable += 3
                plan.invalid += 1
        elif fmt == "csv":
            body = _csv(part, columns)
            if plant_defects:
                body += b"only,two\n"
                plan.records += 1
                plan.unparsable += 1
                range_field = next((f for f, s in schema.fields.items() if s.maximum is not None), None)
                if range_field is not None:
                    bad = {**part[0], range_field: int(schema.fields[range_field].maximum or 0) + 100,
                           schema.text_field: "A unique record with an out-of-range value."}
                    body += _csv([bad], columns).split(b"\n", 1)[1]
                    plan.records += 1
                    plan.invalid += 1
        else:
            body = _parquet(part)
        plan.files[name] = body
    if with_manifest:
        plan.manifest = default_manifest(tenant, dataset)
    return plan


def put_object(s3: Any, bucket: str, key: str, body: bytes, unchanged_ok: bool = False) -> bool:
    """Upload ``body``; with ``unchanged_ok``, not when the object already holds exactly these bytes -- a re-upload
    would give it a new ``LastModified``, and the landing sensor would see a file added to a registered drop.
    Returns whether it uploaded."""
    if unchanged_ok:
        try:
            etag = s3.head_object(Bucket=bucket, Key=key)["ETag"].strip('"')
        except s3.exceptions.ClientError:
            etag = None
        if etag == hashlib.md5(body, usedforsecurity=False).hexdigest():
            return False
    s3.put_object(Bucket=bucket, Key=key, Body=body)
    return True


def upload_drop(s3: Any, bucket: str, plan: DropPlan, unchanged_ok: bool = False) -> None:
    """Upload data files first and the manifest last, as clients are asked to (the manifest marks completion).
    ``unchanged_ok``: leave objects that already hold the same bytes alone (the demo run again)."""
    for name, body in plan.files.items():
        put_object(s3, bucket, plan.drop_prefix + name, body, unchanged_ok)
    if plan.manifest is not None:
        put_object(s3, bucket, plan.drop_prefix + MANIFEST_NAME,
                   json.dumps(plan.manifest, indent=2).encode("utf-8"), unchanged_ok)


def ensure_bucket(s3: Any, bucket: str) -> None:
    existing = {b["Name"] for b in s3.list_buckets().get("Buckets", [])}
    if bucket not in existing:
        s3.create_bucket(Bucket=bucket)


def build_gold_set(dataset: DatasetConfig, n: int = 200, seed: int = 999) -> bytes:
    """A JSONL gold set: texts from the dataset's generator with their true label in the simulation.

    Gold items are known-answer items; in the simulation the known answer is the simulated workforce's hidden
    truth, so measured gold accuracy is the annotators' real accuracy.
    """
    records, _ = synthetic_records(dataset, n, seed, pii_share=0.0, start=10_000_000)
    text_field = dataset.record_schema.text_field
    rows = [{"gold_id": f"g{seed}-{i:05d}", text_field: r[text_field],
             "label": simulated_truth(r[text_field], dataset.labels)} for i, r in enumerate(records)]
    return _jsonl(rows)


def upload_gold_set(s3: Any, bucket: str, tenant: TenantConfig, dataset: DatasetConfig, n: int = 200,
                    seed: int = 999, unchanged_ok: bool = False) -> str:
    key = f"{gold_prefix(tenant.landing_prefix, dataset.name)}gold.jsonl"
    put_object(s3, bucket, key, build_gold_set(dataset, n, seed), unchanged_ok)
    return key
