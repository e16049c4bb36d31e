"""PII detection and redaction for text that is about to leave for a labeling vendor.

Why it exists: a client's export may carry emails, phone numbers, bank and card numbers or national ids in free
text, and once a task has been sent to a vendor it cannot be taken back. So every text is scanned, and either
redacted or dropped, *before* it is exported, and the quality gate checks that nothing is left
(:func:`dagster_project.quality.checks.pii_residual`).

Why this way: the detectors are precise rather than broad. Numbers are everywhere in support tickets (order
numbers, dates, amounts, versions), so each numeric kind is first found by a pattern and then confirmed by the
check the number carries or the rules it must obey:

- ``iban``: ISO 13616 mod-97 check digits and the country's registered BBAN structure and length
  (``python-stdnum``, which ships the IBAN registry).
- ``card``: Luhn (``python-stdnum``) and a known issuer (IIN) prefix with a length that issuer uses.
- ``de_tax_id``: the German Steuer-IdNr, ISO 7064 mod 11,10 and its digit-repetition rule (``python-stdnum``).
- ``uk_nino``: the UK National Insurance number has no check digit; the official prefix rules (HMRC NIM39110)
  are all there is, and they are written out here since no maintained library implements them.
- ``phone``: found and length-checked per country with Google's libphonenumber metadata (``phonenumbers``),
  then kept only if it starts like a phone number (``+`` or ``00`` and a country code, or a national ``0``) and
  has at least 9 digits after the international prefix (10 with the national ``0``). That is what keeps
  years, dates, times, amounts and short order numbers out.
- ``ipv4``/``ipv6``: a loose pattern confirmed by the standard library's :mod:`ipaddress`.
- ``email``: a pattern; there is no checksum to confirm, and validating libraries check one given address
  rather than find addresses in running text.

Microsoft Presidio is not used: its analyzer needs spaCy language models downloaded from a model hub, which these
machines cannot reach, and its recognisers for these kinds are the same patterns and checksums.

Findings never keep the matched values (:func:`scan_frame` stores positions and kinds only), so the scan's own
output can be logged and reported without leaking what it found.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Literal

import pandas as pd
from stdnum import iban as stdnum_iban
from stdnum import luhn
from stdnum.de import idnr

from dagster_project.layout import Stage
from dagster_project.records import quarantine_rows
from dagster_project.stages.parts import PartOutput, PartTask, frame_bytes, read_frame
from dagster_project.stages.phones import phone_spans

KINDS: tuple[str, ...] = ("email", "phone", "iban", "card", "uk_nino", "de_tax_id", "ipv4", "ipv6")
"""Every kind :func:`detect_pii` reports, in the order used for counts."""

# When two detectors claim overlapping text of the same length, the one whose finding is confirmed by a
# checksum wins (a card number is a card, even if libphonenumber would also accept its digits).
_PRIORITY = {"iban": 0, "card": 1, "de_tax_id": 2, "uk_nino": 3, "email": 4, "ipv6": 5, "ipv4": 6, "phone": 7}

PHONE_REGIONS: tuple[str, ...] = ("GB", "DE")
"""Regions whose national formats (leading trunk ``0``) are recognised; international formats work for all.

Each region costs one pass of libphonenumber's matcher, so the list is kept to the platform's markets."""

FINDINGS_COLUMNS = ["record_id", "kind", "start", "end"]


@dataclass(frozen=True)
class PiiMatch:
    """One finding: its kind and the half-open span ``text[start:end]``, which is ``value``."""

    kind: str
    start: int
    end: int
    value: str = field(repr=False)  # kept out of repr so a logged match does not leak the value

    def __len__(self) -> int:
        return self.end - self.start


# ---------------------------------------------------------------------------------------------- patterns

_EMAIL = re.compile(
    r"(?<![\w.%+-])[A-Za-z0-9][A-Za-z0-9._%+-]*@(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z]{2,63}"
    r"(?![\w-])"
)
# Country code, check digits, then groups of four written together or with single spaces; the last group may
# be shorter. The candidate may run into a following word of capitals, so shorter prefixes are tried too.
_IBAN = re.compile(r"(?<![A-Za-z0-9])[A-Z]{2}\d{2}(?: ?[A-Z0-9]{4}){2,7}(?: ?[A-Z0-9]{1,3})?(?![A-Za-z0-9])")
# Card numbers as printed: one run of 13-19 digits, 4-4-4-4(-1..3) groups, or Amex/Diners 4-6-4/5 groups,
# with one kind of separator (space or dash).
_CARD = re.compile(
    r"(?<![\d-])(?:\d{13,19}|\d{4}([ -])\d{4}\1\d{4}\1\d{4}(?:\1\d{1,3})?|\d{4}([ -])\d{6}\2\d{4,5})(?![\d])"
)
# HMRC NIM39110: first letter not D, F, I, Q, U or V; second letter not D, F, I, O, Q, U or V; the prefixes
# BG, GB, KN, NK, NT, TN and ZZ are never allocated; six digits; suffix A-D. Commonly printed "AB 12 34 56 C".
_UK_NINO = re.compile(
    r"(?<![A-Za-z0-9])(?!(?:BG|GB|KN|NK|NT|TN|ZZ))[A-CEGHJ-PR-TW-Z][A-CEGHJ-NPR-TW-Z]"
    r" ?\d{2} ?\d{2} ?\d{2} ?[A-D](?![A-Za-z0-9])",
    re.IGNORECASE,
)
# Steuer-IdNr: 11 digits, first not 0, written together or as "12 345 678 901".
_DE_TAX_ID = re.compile(r"(?<![\d.,/-])[1-9]\d(?: ?\d{3}){3}(?![\d]|[ .,/-]\d)")
_IPV4 = re.compile(r"(?<![\w.])(?:\d{1,3}\.){3}\d{1,3}(?!\w|\.\d)")
_IPV6 = re.compile(r"(?<![\w:.])(?:[0-9A-Fa-f]{0,4}:){2,7}(?:(?:\d{1,3}\.){3}\d{1,3}|[0-9A-Fa-f]{1,4})?(?![\w:]|\.\d)")


# ---------------------------------------------------------------------------------------------- prefilter

# One candidate pattern per kind for RE2 (through pyarrow.compute, linear time, in C++ over a whole column): each
# is a *superset* of its detector's pattern -- lookarounds and back-references dropped (RE2 has neither), ``\d``
# widened to ``\p{Nd}`` (Python's ``\d`` matches every Unicode digit, RE2's only ASCII ones), and RE2's ASCII
# ``\b`` holds wherever Python's Unicode ``\b`` does. So a text no candidate pattern matches cannot hold a finding
# of that kind, and the exact detector runs only on texts that might: findings are identical, at a fraction of the
# cost (most texts carry no PII at all).
_D = r"\p{Nd}"
CANDIDATE_PATTERNS: dict[str, str] = {
    "email": r"[A-Za-z0-9._%+-]@[A-Za-z0-9]",
    "iban": rf"[A-Z]{{2}}{_D}{{2}} ?[A-Z0-9]{{4}}",
    "card": rf"{_D}{{13}}|{_D}{{4}}[ -]{_D}{{4}}[ -]{_D}{{4}}[ -]{_D}{{4}}|{_D}{{4}}[ -]{_D}{{6}}[ -]{_D}{{4}}",
    "uk_nino": rf"(?i)[a-z]{{2}} ?{_D}{{2}} ?{_D}{{2}} ?{_D}{{2}} ?[a-d]",
    "de_tax_id": rf"[1-9]{_D} ?{_D}{{3}} ?{_D}{{3}} ?{_D}{{3}}",
    "ipv4": rf"{_D}\.{_D}{{1,3}}\.{_D}{{1,3}}\.{_D}",
    "ipv6": r":[0-9A-Fa-f]{0,4}:",
    "phone": rf"\+{_D}|\b0{_D}",  # the detector's own hint (phones.PHONE_HINT)
}
_ANY_CANDIDATE = "|".join(f"(?:{p})" for p in CANDIDATE_PATTERNS.values())


def candidate_kinds(texts: list[object]) -> list[frozenset[str]]:
    """For each text, the PII kinds its candidate patterns allow (empty for most texts; non-strings: none)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    column = pa.array([t if isinstance(t, str) else None for t in texts], type=pa.large_string())
    hits = pc.match_substring_regex(column, _ANY_CANDIDATE).fill_null(False).to_numpy(zero_copy_only=False)
    kinds: list[frozenset[str]] = [frozenset()] * len(texts)
    positions = hits.nonzero()[0]
    if not len(positions):
        return kinds
    subset = column.take(pa.array(positions))
    per_kind = {kind: pc.match_substring_regex(subset, pattern).fill_null(False).to_numpy(zero_copy_only=False)
                for kind, pattern in CANDIDATE_PATTERNS.items()}
    for row, position in enumerate(positions):
        kinds[position] = frozenset(kind for kind, mask in per_kind.items() if mask[row])
    return kinds


# ---------------------------------------------------------------------------------------------- validators

# Issuer identification number ranges with the lengths each issuer uses: (first, last, prefix length, lengths).
# Written out because no maintained Python library keeps an IIN table; this one follows the card schemes'
# published ranges for the networks seen in Europe.
_IIN_RANGES: tuple[tuple[int, int, int, frozenset[int]], ...] = (
    (4, 4, 1, frozenset({13, 16, 19})),  # Visa
    (51, 55, 2, frozenset({16})),  # Mastercard
    (2221, 2720, 4, frozenset({16})),  # Mastercard 2-series
    (34, 34, 2, frozenset({15})),  # American Express
    (37, 37, 2, frozenset({15})),  # American Express
    (300, 305, 3, frozenset(range(14, 20))),  # Diners Club International
    (36, 36, 2, frozenset(range(14, 20))),  # Diners Club International
    (38, 39, 2, frozenset(range(16, 20))),  # Diners Club (Discover network)
    (6011, 6011, 4, frozenset(range(16, 20))),  # Discover
    (644, 649, 3, frozenset(range(16, 20))),  # Discover
    (65, 65, 2, frozenset(range(16, 20))),  # Discover
    (3528, 3589, 4, frozenset(range(16, 20))),  # JCB
    (62, 62, 2, frozenset(range(16, 20))),  # UnionPay
    (2200, 2204, 4, frozenset(range(16, 20))),  # Mir
    (5018, 5018, 4, frozenset(range(13, 20))),  # Maestro
    (5020, 5020, 4, frozenset(range(13, 20))),  # Maestro
    (5038, 5038, 4, frozenset(range(13, 20))),  # Maestro
    (5893, 5893, 4, frozenset(range(13, 20))),  # Maestro
    (6304, 6304, 4, frozenset(range(13, 20))),  # Maestro
    (6759, 6759, 4, frozenset(range(13, 20))),  # Maestro (UK)
    (6761, 6763, 4, frozenset(range(13, 20))),  # Maestro
)


def _known_issuer(digits: str) -> bool:
    return any(
        low <= int(digits[:width]) <= high and len(digits) in lengths for low, high, width, lengths in _IIN_RANGES
    )


def is_valid_card(number: str) -> bool:
    """13-19 digits (spaces and dashes ignored) from a known issuer, passing the Luhn check."""
    digits = re.sub(r"[ -]", "", number)
    return digits.isdigit() and 13 <= len(digits) <= 19 and _known_issuer(digits) and luhn.is_valid(digits)


def is_valid_iban(number: str) -> bool:
    """ISO 13616: mod-97 check digits, and the country's registered BBAN structure and length."""
    # check_country=False: the ISO check is what makes it an account number; some countries' extra national
    # check digits reject documentation examples without making the number any less personal.
    return stdnum_iban.is_valid(number, check_country=False)


def is_valid_de_tax_id(number: str) -> bool:
    """German Steuer-IdNr: 11 digits, digit-repetition rule and ISO 7064 mod 11,10 check digit."""
    return idnr.is_valid(number)


def _is_ip(candidate: str, version: int) -> bool:
    try:
        address = ipaddress.ip_address(candidate)
    except ValueError:
        return False
    return address.version == version


# ---------------------------------------------------------------------------------------------- detection


def _shorter_spans(candidate: re.Match[str], min_length: int) -> Iterator[tuple[int, int]]:
    """The candidate's span, then shorter spans that end where a space- or dash-separated group ends."""
    start, end = candidate.span()
    yield start, end
    text = candidate.group()
    for offset in range(len(text) - 1, 0, -1):
        if text[offset] in " -" and offset >= min_length:
            yield start, start + offset


def _checked(
    text: str, pattern: re.Pattern[str], kind: str, valid: Callable[[str], bool], min_length: int = 0
) -> Iterator[PiiMatch]:
    for candidate in pattern.finditer(text):
        for start, end in _shorter_spans(candidate, min_length) if min_length else [candidate.span()]:
            if valid(text[start:end]):
                yield PiiMatch(kind, start, end, text[start:end])
                break


def _phones(text: str, regions: Iterable[str]) -> Iterator[PiiMatch]:
    for start, end, raw in phone_spans(text, regions):
        yield PiiMatch("phone", start, end, raw)


def _emails(text: str) -> Iterator[PiiMatch]:
    for found in _EMAIL.finditer(text):
        yield PiiMatch("email", found.start(), found.end(), found.group())


def resolve_overlaps(matches: Iterable[PiiMatch]) -> list[PiiMatch]:
    """Keep the longest of any overlapping matches (checksum-confirmed kinds win ties), sorted by position."""
    kept: list[PiiMatch] = []
    for match in sorted(set(matches), key=lambda m: (-len(m), _PRIORITY.get(m.kind, 99), m.start)):
        if all(match.end <= other.start or match.start >= other.end for other in kept):
            kept.append(match)
    return sorted(kept, key=lambda m: m.start)


_DETECTORS: dict[str, Callable[[str, Iterable[str]], Iterator[PiiMatch]]] = {
    "email": lambda text, _: _emails(text),
    "iban": lambda text, _: _checked(text, _IBAN, "iban", is_valid_iban, min_length=15),
    "card": lambda text, _: _checked(text, _CARD, "card", is_valid_card, min_length=13),
    "uk_nino": lambda text, _: _checked(text, _UK_NINO, "uk_nino", lambda _: True),
    "de_tax_id": lambda text, _: _checked(text, _DE_TAX_ID, "de_tax_id", is_valid_de_tax_id),
    "ipv4": lambda text, _: _checked(text, _IPV4, "ipv4", lambda c: _is_ip(c, 4)),
    "ipv6": lambda text, _: _checked(text, _IPV6, "ipv6", lambda c: c != "::" and _is_ip(c, 6)),
    "phone": _phones,
}


def detect_pii(text: str, phone_regions: Iterable[str] = PHONE_REGIONS,
               kinds: Iterable[str] | None = None) -> list[PiiMatch]:
    """Every PII finding in ``text``, non-overlapping and in order of position.

    ``kinds`` limits the detectors run (what :func:`candidate_kinds` allows for the text); None runs them all.
    """
    if not isinstance(text, str) or not text:
        return []
    wanted = KINDS if kinds is None else kinds
    return resolve_overlaps([m for kind in wanted for m in _DETECTORS[kind](text, phone_regions)])


# ---------------------------------------------------------------------------------------------- redaction


def redact(text: str, matches: Iterable[PiiMatch] | None = None, style: Literal["tag", "mask"] = "tag") -> str:
    """Replace each match: ``style="tag"`` with ``[EMAIL]``, ``[PHONE]``...; ``"mask"`` with ``*`` of equal length.

    ``matches`` default to :func:`detect_pii`; overlapping matches are resolved longest first.
    """
    if style not in ("tag", "mask"):
        raise ValueError(f"unknown redaction style {style!r}: use 'tag' or 'mask'")
    chosen = resolve_overlaps(detect_pii(text) if matches is None else matches)
    pieces: list[str] = []
    cursor = 0
    for match in chosen:
        pieces.append(text[cursor : match.start])
        pieces.append(f"[{match.kind.upper()}]" if style == "tag" else "*" * len(match))
        cursor = match.end
    pieces.append(text[cursor:])
    return "".join(pieces)


# ---------------------------------------------------------------------------------------------- frames


def _matches_by_record(frame: pd.DataFrame, text_field: str) -> list[list[PiiMatch]]:
    if text_field not in frame.columns:
        raise KeyError(f"text field {text_field!r} is not a column of the frame")
    texts = frame[text_field].tolist()
    return [detect_pii(text, kinds=kinds) if kinds else []
            for text, kinds in zip(texts, candidate_kinds(texts), strict=True)]


def empty_findings() -> pd.DataFrame:
    return pd.DataFrame(columns=FINDINGS_COLUMNS).astype({"kind": "str", "start": "int64", "end": "int64"})


def _findings(frame: pd.DataFrame, id_field: str, per_record: list[list[PiiMatch]]) -> pd.DataFrame:
    ids = frame[id_field].tolist() if id_field in frame.columns else frame.index.tolist()
    rows = [(rid, m.kind, m.start, m.end) for rid, matches in zip(ids, per_record, strict=True) for m in matches]
    findings = pd.DataFrame(rows, columns=FINDINGS_COLUMNS)
    return findings.astype({"kind": "str", "start": "int64", "end": "int64"})


def scan_frame(frame: pd.DataFrame, text_field: str, id_field: str = "record_id") -> pd.DataFrame:
    """One row per finding: ``record_id``, ``kind``, ``start``, ``end``; never the matched value.

    Records are identified by ``id_field``, or by the frame's index when there is no such column.
    """
    return _findings(frame, id_field, _matches_by_record(frame, text_field))


@dataclass(frozen=True)
class PiiResult:
    """What :func:`apply_policy` did: the records to export, those held back, and what was found."""

    records: pd.DataFrame
    dropped: pd.DataFrame
    findings: pd.DataFrame
    counts: dict[str, int]


def apply_policy(
    frame: pd.DataFrame, text_field: str, policy: Literal["redact", "drop"], id_field: str = "record_id"
) -> PiiResult:
    """Redact PII in ``text_field`` in place of the text, or drop every record that has any.

    ``counts`` has every kind in :data:`KINDS` (zero when not found) and counts findings, not records.
    """
    if policy not in ("redact", "drop"):
        raise ValueError(f"unknown PII policy {policy!r}: use 'redact' or 'drop'")
    per_record = _matches_by_record(frame, text_field)
    findings = _findings(frame, id_field, per_record)
    counts = {kind: 0 for kind in KINDS} | findings["kind"].value_counts().astype(int).to_dict()
    has_pii = pd.Series([bool(m) for m in per_record], index=frame.index, dtype=bool)
    if policy == "drop":
        return PiiResult(frame[~has_pii].copy(), frame[has_pii].copy(), findings, counts)
    records = frame.copy()
    redacted = [
        redact(text, matches) if matches else text
        for text, matches in zip(frame[text_field].tolist(), per_record, strict=True)
    ]
    records[text_field] = pd.Series(redacted, index=frame.index, dtype=frame[text_field].dtype)
    return PiiResult(records, frame.iloc[0:0].copy(), findings, counts)


@dataclass(frozen=True)
class PiiOptions:
    text_field: str
    policy: Literal["redact", "drop", "none"]


def pii_part(task: PartTask) -> PartOutput:
    """Worker side of the pii stage: one clean part in; the records to export, those held back and the findings
    out. ``policy="none"`` (a dataset declared PII-free) is scanned for the record and passed on unchanged."""
    options: PiiOptions = task.options
    frame = read_frame(task.data)
    if options.policy == "none":
        result = PiiResult(frame, frame.iloc[0:0], scan_frame(frame, options.text_field), {})
    else:
        result = apply_policy(frame, options.text_field, options.policy)
    quarantine = quarantine_rows(result.dropped, Stage.PII, f"contains PII (dataset pii_policy={options.policy})",
                                 field=options.text_field)
    return PartOutput(task.index, frame_bytes(result.records), quarantine, result.findings)
