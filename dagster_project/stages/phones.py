"""Phone numbers in running text: libphonenumber's matcher, behind two cheap gates, and the shape rules after it.

Why apart from :mod:`dagster_project.stages.pii`: the matcher (``phonenumbers``) is by far the most expensive
detector -- it parses every digit sequence it meets -- and support tickets are full of digits that are no phone
(order and reference numbers, dates, amounts). So a text reaches it only if it holds the hint (``+`` or a national
``0`` before a digit) and :func:`phone_shaped` says a reportable number could be in it; both are supersets of what
is reported (tests/unit/test_pii.py fuzzes them against the matcher), so findings are the same, at a fraction of
the cost. What the matcher finds is kept only if :func:`is_phone` accepts its shape.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator

import phonenumbers

PHONE_HINT = re.compile(r"(?:\+|\b0)\d")
_DATE_LIKE = re.compile(r"\d{1,4}[./-]\d{1,2}[./-]\d{1,4}")


def is_phone(raw: str) -> bool:
    """The shape rules that keep numbers which merely *could* be dialled (dates, refs, amounts) out."""
    lead = raw.lstrip("(")
    digits = re.sub(r"\D", "", raw)
    if lead.startswith("+"):
        enough = len(digits) >= 9
    elif lead.startswith("00"):
        enough = len(digits) > 2 and digits[2] != "0" and len(digits) - 2 >= 9
    elif lead.startswith("0"):
        enough = len(digits) >= 10 and digits[1] != "0"
    else:
        return False
    if not enough or _DATE_LIKE.search(raw):
        return False
    separators = set(re.sub(r"[\d+()]", "", raw))
    # Dots as separators ("030.1234567") only on their own: "01.02.2024 10" is a date and an hour.
    return not ("." in separators and len(separators) > 1)


_DIGIT_RUN = re.compile(r"\d+")  # Unicode digits, as the matcher's and is_phone's
_EXTENSION_GAP = re.compile(r"[ \t,\u00a0-]*[^\d\s]{0,10}[ \t,\u00a0-]*")
_SHORT_GAP = 4


def phone_shaped(text: str) -> bool:
    """Whether ``text`` could hold a number :func:`phone_spans` reports: a superset, and cheap (one pass over the digit
    runs) next to libphonenumber's matcher, which would otherwise parse every "ref 051182". A reported number
    starts with ``+`` and holds >= 9 digits, or with ``0`` and holds >= 10 (:func:`is_phone`); the matcher puts
    at most 4 punctuation characters between digit blocks, except once, before an extension (``ext. 12``,
    ``#12``, ``,,12``: blanks, a word of at most 10 characters, blanks)."""
    runs = [(m.start(), m.end()) for m in _DIGIT_RUN.finditer(text)]
    short = [0] * (len(runs) + 1)  # digits from run i on, through short gaps only
    one = [0] * (len(runs) + 1)  # ... through short gaps and at most one extension gap
    after = [0] * len(runs)  # the most digits that can follow run i's last digit
    for i in range(len(runs) - 1, -1, -1):
        start, end = runs[i]
        if i + 1 < len(runs):
            gap = text[end:runs[i + 1][0]]
            if len(gap) <= _SHORT_GAP:
                after[i] = one[i + 1]
                short[i] = end - start + short[i + 1]
            elif _EXTENSION_GAP.fullmatch(gap):
                after[i] = short[i + 1]
        short[i] = short[i] or end - start
        one[i] = end - start + after[i]
    for i, (start, end) in enumerate(runs):
        plus = text.rfind("+", max(0, start - 11), start)
        if plus >= 0 and not _DIGIT_RUN.search(text, plus, start) and one[i] >= 9:
            return True
        zero = text.find("0", start, end)
        if zero >= 0 and end - zero + after[i] >= 10:
            return True
    return False


def phone_spans(text: str, regions: Iterable[str]) -> Iterator[tuple[int, int, str]]:
    """(start, end, raw text) of each phone number in ``text``, per region's numbering plan."""
    if not PHONE_HINT.search(text) or not phone_shaped(text):
        return
    for region in regions:
        for found in phonenumbers.PhoneNumberMatcher(text, region, leniency=phonenumbers.Leniency.POSSIBLE):
            if is_phone(found.raw_string):
                yield found.start, found.end, found.raw_string
