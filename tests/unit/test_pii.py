"""PII detection: every kind found with its checksum, no false positives on the numbers of ordinary tickets."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from dagster_project.devservices.sample_data import FIRST, LAST, PII_SNIPPETS, synthetic_records
from dagster_project.stages.pii import (
    FINDINGS_COLUMNS,
    KINDS,
    PiiMatch,
    apply_policy,
    candidate_kinds,
    detect_pii,
    is_valid_card,
    is_valid_iban,
    redact,
    scan_frame,
)
from dagster_project.tenants import TenantsConfig


def found(text: str) -> list[tuple[str, str]]:
    return [(m.kind, m.value) for m in detect_pii(text)]


# ------------------------------------------------------------------------------------------ each kind


def test_sample_data_snippets_are_all_detected() -> None:
    expected = ["email", "phone", "iban", "card", "email"]
    for snippet, kind in zip(PII_SNIPPETS, expected, strict=True):
        for first, last, n in [(FIRST[0], LAST[0], 0), (FIRST[-1], LAST[-1], 999), (FIRST[3], LAST[5], 42)]:
            text = f"Hello, Ticket 12: this looks like a card issue case (ref 000123). {snippet}".format(
                first=first, last=last, n=n
            )
            assert [m.kind for m in detect_pii(text)] == [kind], text


def test_generated_records_with_pii_are_exactly_those_detected(example_config: TenantsConfig) -> None:
    dataset = example_config.tenant("northbank").dataset("support_intents")
    records, with_pii = synthetic_records(dataset, 300, seed=7, pii_share=0.3)
    text_field = dataset.record_schema.text_field
    frame = pd.DataFrame(records)
    findings = scan_frame(frame, text_field, id_field=dataset.record_schema.id_field)
    assert findings["record_id"].nunique() == with_pii > 0


def test_email() -> None:
    assert found("Contact me at alex.smith@example.co.uk.") == [("email", "alex.smith@example.co.uk")]
    assert found("mail first.last+tag@sub.example.com, thanks") == [("email", "first.last+tag@sub.example.com")]
    assert found("the @handle and a@b are not addresses, nor is user@localhost") == []


@pytest.mark.parametrize(
    "text",
    ["+44 7700 900123", "07700 900123", "+49 30 1234567", "0049 30 1234567", "+44 (0)20 7946 0958",
     "020 7946 0958", "+447700900123", "+33 1 23 45 67 89", "0151 23456789", "+1 415 555 2671"],
)  # fmt: skip
def test_phone_formats(text: str) -> None:
    assert found(f"Call me on {text} after five.") == [("phone", text)]


@pytest.mark.parametrize(
    "text",
    ["in 2024", "2019-2023", "on 2024-01-15", "on 15/01/2024", "on 15.01.2024 09:15", "on 01.02.2024 10:30",
     "order 12345678", "order 01234567", "ref 000123", "#00012345", "£1,234.56", "€0,99", "v2.3.1", "10:30:00",
     "0.5%", "0 items", "call 0800"],
)  # fmt: skip
def test_phone_does_not_match_years_dates_or_short_numbers(text: str) -> None:
    assert found(f"Seen {text} here.") == []


def test_iban_validated_by_mod97() -> None:
    assert found("My IBAN is GB82 WEST 1234 5698 7654 32.") == [("iban", "GB82 WEST 1234 5698 7654 32")]
    assert found("IBAN DE89370400440532013000 please") == [("iban", "DE89370400440532013000")]
    # A following capitalised word is not swallowed: BE IBANs are 16 characters, four groups of four.
    assert found("BE68 5390 0754 7034 NOTE") == [("iban", "BE68 5390 0754 7034")]


def test_every_single_digit_change_breaks_the_iban() -> None:
    # mod 97 detects every single-character substitution, so no one-digit variant may be reported.
    valid = "GB82WEST12345698765432"
    assert is_valid_iban(valid)
    for position, char in enumerate(valid):
        if char.isdigit():
            variant = valid[:position] + str((int(char) + 1) % 10) + valid[position + 1 :]
            assert not is_valid_iban(variant), variant
            assert detect_pii(f"IBAN {variant}.") == []


def test_iban_needs_the_countrys_length() -> None:
    # GB IBANs are 22 characters; the same check digits over a shorter or longer BBAN are rejected.
    assert found("GB82 WEST 1234 5698 7654") == []
    assert not is_valid_iban("GB82WEST1234569876543")


def test_card_luhn_and_issuer() -> None:
    assert found("Card ending 4111 1111 1111 1111 was used.") == [("card", "4111 1111 1111 1111")]
    assert found("Card 4111 1111 1111 1112 was used.") == []  # Luhn: check digit must be 1
    assert found("mc 5555-5555-5555-4444, amex 3782 822463 10005") == [
        ("card", "5555-5555-5555-4444"),
        ("card", "3782 822463 10005"),
    ]
    # 1234 5678 9012 3452 passes Luhn but no scheme issues cards starting with 1.
    assert not is_valid_card("1234567890123452")
    assert found("serial 1234567890123452") == []
    # A trailing group that breaks Luhn (a CVV, a year) does not hide the card before it.
    assert found("4111 1111 1111 1111 123") == [("card", "4111 1111 1111 1111")]


def test_uk_nino_with_prefix_rules() -> None:
    assert found("NI number AB 12 34 56 C.") == [("uk_nino", "AB 12 34 56 C")]
    assert found("ni ce123456a") == [("uk_nino", "ce123456a")]
    for invalid in ["QQ123456C", "DA123456A", "AO123456A", "GB123456A", "NK123456B", "TN123456A", "AB123456E"]:
        assert found(f"NI {invalid}") == [], invalid


def test_de_tax_id_checksum() -> None:
    assert found("Steuer-IdNr 36 574 261 809.") == [("de_tax_id", "36 574 261 809")]
    assert found("IdNr 36574261809") == [("de_tax_id", "36574261809")]
    assert found("IdNr 36574261890") == []  # check digit wrong
    assert found("IdNr 36554266806") == []  # a digit repeated more than the rules allow


def test_ip_addresses() -> None:
    assert found("from 192.168.0.1. and 10.0.0.254") == [("ipv4", "192.168.0.1"), ("ipv4", "10.0.0.254")]
    assert found("from 2001:db8::1 and ::ffff:192.0.2.1") == [("ipv6", "2001:db8::1"), ("ipv6", "::ffff:192.0.2.1")]
    assert found("256.1.1.1, 1.2.3, v1.2.3.4, 10:30:00, a::b::c") == []


# ------------------------------------------------------------------------------------------ no false positives


def support_sentences(n: int, seed: int = 0) -> list[str]:
    """Tickets full of numbers that are not PII: ids, refs, dates, times, amounts, versions, counts."""
    rng = np.random.default_rng(seed)
    months = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"]

    def r(low: int, high: int) -> int:
        return int(rng.integers(low, high))

    def day() -> str:
        return f"{r(1, 29):02d}"

    def month() -> str:
        return f"{r(1, 13):02d}"

    def year() -> int:
        return r(2019, 2027)

    def clock() -> str:
        return f"{r(0, 24):02d}:{r(0, 60):02d}"

    templates = [
        lambda: f"Ticket {r(1, 99999)}: order {r(10**5, 10**8)} (ref {r(0, 10**6):06d}) arrived late.",
        lambda: f"Refund of £{r(1, 9999):,}.{r(0, 100):02d} requested on {day()}/{month()}/{year()}.",
        lambda: f"Charged €{r(1, 999)},{r(0, 100):02d} on {year()}-{month()}-{day()} at {clock()}.",
        lambda: f"App v{r(1, 20)}.{r(0, 30)}.{r(0, 100)} crashed at {clock()}:{r(0, 60):02d} twice.",
        lambda: f"Invoice #{r(0, 10**7):07d} of {r(1, 29)} {months[r(0, 12)]} {year()}: ${r(1, 99999) / 100:.2f}.",
        lambda: f"Delivered {day()}.{month()}.{year()} {clock()}, {r(1, 500)} items, {r(0, 100)}% done.",
        lambda: f"In {r(2000, 2015)}-{r(2016, 2027)} we shipped {r(1000, 99999):,} parcels; batch {r(0, 10**4):04d}.",
        lambda: f"Build {r(1, 9)}.{r(0, 99)} on port {r(1024, 65536)}, retry {r(1, 9)}/{r(1, 9)}, code E{r(100, 999)}.",
        lambda: f"Order 0{r(10**5, 10**7)} waited {r(1, 72)}h {r(0, 60)}m; ticket {r(1, 99)} of {r(1, 99)}.",
    ]
    return [templates[r(0, len(templates))]() for _ in range(n)]


def test_no_false_positives_on_ordinary_tickets() -> None:
    frame = pd.DataFrame({"record_id": range(1000), "text": support_sentences(1000)})
    findings = scan_frame(frame, "text")
    offenders = frame.loc[frame["record_id"].isin(findings["record_id"]), "text"].head().tolist()
    assert findings.empty, offenders


# ------------------------------------------------------------------------------------------ redaction and frames


def test_redact_tags_each_kind() -> None:
    text = "Mail alex@example.com or call +44 7700 900123; IBAN GB82 WEST 1234 5698 7654 32."
    assert redact(text) == "Mail [EMAIL] or call [PHONE]; IBAN [IBAN]."
    # "mask" keeps the length, so positions computed on the redacted text still line up.
    masked = redact("call +44 7700 900123 now", style="mask")
    assert masked == "call " + "*" * 15 + " now"


def test_redact_resolves_overlaps_longest_first() -> None:
    text = "0123456789 abcdef"
    matches = [PiiMatch("phone", 0, 4, "0123"), PiiMatch("card", 0, 10, "0123456789"), PiiMatch("email", 8, 13, "")]
    # card (10 chars) wins; phone and email overlap it and are dropped.
    assert redact(text, matches) == "[CARD] abcdef"
    assert redact(text, []) == text
    with pytest.raises(ValueError, match="style"):
        redact(text, style="blur")  # type: ignore[arg-type]


def frame_with_pii() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "record_id": ["r1", "r2", "r3", "r4"],
            "text": [
                "Contact me at alex.smith@example.co.uk.",  # email at 14..38
                "Nothing personal here, order 12345678.",
                "Card 4111 1111 1111 1111 or call 07700 900123.",  # card 5..24, phone 33..45
                None,
            ],
            "label": ["a", "b", "c", "d"],
        }
    )


def test_scan_frame_positions_without_values() -> None:
    frame = frame_with_pii()
    findings = scan_frame(frame, "text")
    assert list(findings.columns) == FINDINGS_COLUMNS
    assert findings.values.tolist() == [["r1", "email", 14, 38], ["r3", "card", 5, 24], ["r3", "phone", 33, 45]]
    as_text = findings.to_csv()
    assert "example.co.uk" not in as_text and "4111" not in as_text and "900123" not in as_text


def test_scan_frame_of_clean_frame_is_empty_with_columns() -> None:
    findings = scan_frame(pd.DataFrame({"record_id": [1], "text": ["hello"]}), "text")
    assert findings.empty and list(findings.columns) == FINDINGS_COLUMNS


def test_apply_policy_redact() -> None:
    frame = frame_with_pii()
    result = apply_policy(frame, "text", "redact")
    assert result.records["text"].tolist()[:3] == [
        "Contact me at [EMAIL].",
        "Nothing personal here, order 12345678.",
        "Card [CARD] or call [PHONE].",
    ]
    assert pd.isna(result.records["text"].iloc[3])  # a missing text stays missing
    assert result.records["label"].tolist() == ["a", "b", "c", "d"]
    assert result.dropped.empty and list(result.dropped.columns) == list(frame.columns)
    assert result.counts == {kind: 0 for kind in KINDS} | {"email": 1, "card": 1, "phone": 1}
    assert len(result.findings) == 3
    assert frame.loc[0, "text"].startswith("Contact me at alex")  # the input is not modified
    assert scan_frame(result.records, "text").empty


def test_apply_policy_drop() -> None:
    result = apply_policy(frame_with_pii(), "text", "drop")
    assert result.records["record_id"].tolist() == ["r2", "r4"]
    assert result.dropped["record_id"].tolist() == ["r1", "r3"]
    assert sum(result.counts.values()) == 3
    with pytest.raises(ValueError, match="policy"):
        apply_policy(frame_with_pii(), "text", "keep")  # type: ignore[arg-type]


# ------------------------------------------------------------------------------------------------------- prefilter


def _texts_of_this_module() -> list[str]:
    """Every string literal in this file: the PII unit tests' own texts, positive and negative."""
    import ast
    from pathlib import Path

    tree = ast.parse(Path(__file__).read_text(encoding="utf-8"))
    return sorted({node.value for node in ast.walk(tree) if isinstance(node, ast.Constant)
                   and isinstance(node.value, str) and any(ch.isdigit() or ch == "@" for ch in node.value)})


def _unprefiltered(texts: list[str]) -> list[list[tuple[str, int, int]]]:
    return [[(m.kind, m.start, m.end) for m in detect_pii(t)] for t in texts]


def test_the_prefilter_changes_no_finding_on_the_unit_test_texts_and_the_generated_corpus(
        example_config: TenantsConfig) -> None:
    from dagster_project.devservices.sample_data import synthetic_records

    dataset = example_config.tenant("northbank").dataset("support_intents")
    generated = [r["text"] for r in synthetic_records(dataset, 3000, seed=11, pii_share=0.5, text_chars=300)[0]]
    # Unicode digits (Python's \d matches them, RE2's does not): the prefilter must still let them through.
    arabic = str.maketrans("0123456789", "٠١٢٣٤٥٦٧٨٩")
    unicode_digits = [t.translate(arabic) for t in _texts_of_this_module()]
    texts = [*_texts_of_this_module(), *generated, *unicode_digits, "", "no digits at all"]
    frame = pd.DataFrame({"record_id": [str(i) for i in range(len(texts))], "text": texts})
    findings = scan_frame(frame, "text")
    prefiltered = [[(k, s, e) for k, s, e in zip(group["kind"], group["start"], group["end"], strict=True)]
                   for _, group in findings.groupby(findings["record_id"].astype(int), sort=True)]
    by_record = dict(zip(sorted(set(findings["record_id"].astype(int))), prefiltered, strict=True))
    expected = _unprefiltered(texts)
    assert [by_record.get(i, []) for i in range(len(texts))] == expected
    assert sum(map(len, expected)) > 1500  # the corpus does hold findings of several kinds
    assert {k for found in expected for k, _, _ in found} >= {"email", "phone", "iban", "card"}


def test_candidate_kinds_select_only_what_might_match() -> None:
    kinds = candidate_kinds(["Card was declined twice", "mail me at a.b@example.com", None,
                             "card 4111 1111 1111 1111 please", "call +44 20 7946 0958"])
    assert kinds[0] == frozenset() and kinds[2] == frozenset()
    assert "email" in kinds[1] and "card" in kinds[3] and "phone" in kinds[4]


def test_every_phone_number_the_matcher_reports_passes_the_prefilter_and_the_shape_check(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The RE2 hint and ``phone_shaped`` are supersets of what the phone detector reports, by construction; this
    fuzzes them with phone-shaped strings: leads, digit blocks, the separators the matcher accepts, extensions."""
    import random

    from dagster_project.stages import phones

    rng = random.Random(2026)
    separators = [" ", "-", ".", "/", " - ", "  ", "(", ")", " (", ") ", "\u00a0", "\u2010", "~", ""]
    extensions = [" ext. ", " ext ", " x", "#", ",,", ";ext=", " extension ", "   ext:  ", " доб "]
    leads = ["+", "+ ", "+(", "(+", "0", "00", "(0", "+ (", "0 ", ""]
    digits = "0123456789٠١٢٣٤٥٦٧٨٩"
    texts = []
    for _ in range(6000):
        blocks = [
            "".join(rng.choice(digits[:10] if rng.random() < 0.9 else digits) for _ in range(rng.randint(1, 5)))
            for _ in range(rng.randint(1, 5))]
        number = rng.choice(leads) + "".join(b + rng.choice(separators) for b in blocks)
        if rng.random() < 0.3:
            number += rng.choice(extensions) + "".join(rng.choice(digits[:10]) for _ in range(rng.randint(1, 6)))
        texts.append(rng.choice(["Call ", "ref ", "", "tel:", "on "]) + number + rng.choice(["", ".", " today", "x"]))
    shaped = [phones.phone_shaped(t) for t in texts]
    monkeypatch.setattr(phones, "phone_shaped", lambda text: True)
    phones = [i for i, t in enumerate(texts) if any(m.kind == "phone" for m in detect_pii(t, kinds=["phone"]))]
    assert len(phones) > 300  # the fuzz does reach the matcher
    assert all("phone" in kinds for kinds in candidate_kinds([texts[i] for i in phones]))
    assert all(shaped[i] for i in phones)
    assert sum(shaped) < len(texts) - 1000  # and the shape check does spare the matcher
