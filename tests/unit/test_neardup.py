"""The near-duplicate engine: what it finds, what it reports as the original, and that its signatures and index
are stable -- a text's signature is a function of the text alone, and an index survives a round trip to bytes."""

from __future__ import annotations

import json
import random
import re
import unicodedata

import numpy as np
import pandas as pd
import pytest

from dagster_project.cli import main
from dagster_project.stages import minhash, neardup
from dagster_project.stages.neardup import (
    MIN_RECALL_AT_THRESHOLD,
    NearDupParams,
    SignatureIndex,
    band_keys,
    canonical_text,
    find_near_duplicates,
    normalised_texts,
    signatures,
    text_keys,
)

PARAMS = NearDupParams()
WORDS = ["".join(random.Random(i).choices("abcdefghiklmnoprstuvwy", k=random.Random(-i).randint(2, 9)))
         for i in range(3000)]


def prose(seed: int, words: int = 55) -> str:
    rng = random.Random(seed)
    picked = rng.choices(WORDS, k=words)
    for i in range(4, words - 1, 9):
        picked[i] += rng.choice([",", ".", "?"])
    return " ".join(picked).capitalize() + "."


def ids(n: int) -> list[str]:
    return [f"{i:032x}" for i in range(n)]


def typo(text: str) -> str:
    return text[:40] + text[41] + text[40] + text[42:100] + "x" + text[101:]


def exact(a: str, b: str) -> float:
    """The similarity by definition, computed independently of the engine: 5-gram sets of the normalised texts."""
    x, y = normalised_texts([a, b], PARAMS)
    grams = [{t[i:i + 5] for i in range(max(len(t) - 4, 1))} for t in (x, y)]
    return len(grams[0] & grams[1]) / len(grams[0] | grams[1])


BASE = prose(1)
VARIANTS = {
    "typo": typo(BASE),
    "spacing": BASE.replace(" ", "  ", 6).replace(" ", "\n", 2).replace(", ", ",", 3),
    "punctuation": BASE.replace(",", ";").replace(".", "!").replace("?", " - "),
    "insertion": BASE[:120] + " and then some words " + BASE[120:],
    "rotation": BASE[BASE.index(" ", 80) + 1:] + " " + BASE[:BASE.index(" ", 80)],
}


def test_canonical_text_is_exact_dedups_normalisation_and_the_vectorised_one_agrees() -> None:
    whitespace = re.compile(r"\s+")
    rng = random.Random(3)
    alphabet = list("ab cdE\t\n\r\x0b\x0c\x1c\x85\xa0\u2003\u3000.,!?-'\"😀ﬁＡßİ\u0301e\u00e9\x00")
    for _ in range(200):
        texts = ["".join(rng.choices(alphabet, k=rng.randint(0, 25))) for _ in range(rng.randint(1, 12))]
        expected = [whitespace.sub(" ", unicodedata.normalize("NFKC", t).casefold()).strip() for t in texts]
        assert [canonical_text(t) for t in texts] == expected
        assert minhash.normalised_texts(texts, strip_punctuation=False) == expected


def test_punctuation_and_symbols_count_as_spaces_unless_they_are_the_whole_text() -> None:
    assert normalised_texts(["a,b", "a, b", " a ,b. ", "A — B!"], PARAMS) == ["a b"] * 4
    assert normalised_texts(["👍", "👎", "!!  ?", ""], PARAMS) == ["👍", "👎", "!! ?", ""]


def test_planted_variants_are_found_and_unrelated_texts_are_not() -> None:
    texts = [BASE, *[prose(100 + i) for i in range(40)], *VARIANTS.values()]
    record_ids = ids(len(texts))
    found = {d.record_id: d for d in find_near_duplicates(record_ids, texts, PARAMS)}
    variants = record_ids[-len(VARIANTS):]
    assert set(found) == set(variants)
    for record_id, (kind, text) in zip(variants, VARIANTS.items(), strict=True):
        assert found[record_id].duplicate_of == record_ids[0], kind
        assert found[record_id].similarity == pytest.approx(exact(BASE, text)), kind


def test_the_threshold_is_the_exact_jaccard_similarity() -> None:
    rng = random.Random(5)
    words = BASE.split(" ")
    texts = [BASE]
    for replaced in range(1, 16):
        edited = list(words)
        for at in rng.sample(range(len(words)), replaced):
            edited[at] = rng.choice(WORDS)
        texts.append(" ".join(edited))
    similarity = [exact(BASE, t) for t in texts[1:]]
    assert min(similarity) < 0.8 < max(similarity)
    for threshold in (0.7, 0.8, 0.9):
        params = NearDupParams.for_threshold(threshold)
        # each edited text on its own against the base, so only the base can be the original
        for text, expected in zip(texts[1:], similarity, strict=True):
            found = find_near_duplicates(["base", "edited"], [BASE, text], params)
            assert bool(found) == (expected >= threshold), (threshold, expected)
            assert all(d.similarity >= threshold for d in found)


def _between() -> tuple[str, str, str]:
    """p (published), y1 and y2 with y2 close to both but y1 not close to p."""
    words = BASE.split(" ")
    changed = list(range(2, len(words), 4))[:6]
    y1 = [WORDS[100 + i] if i in changed else w for i, w in enumerate(words)]
    y2 = [WORDS[100 + i] if i in changed[:3] else w for i, w in enumerate(words)]
    return BASE, " ".join(y1), " ".join(y2)


def test_duplicates_point_at_the_earliest_survivor() -> None:
    a, b = prose(7), prose(8)
    texts = [a, b, typo(a), a.replace(",", ";"), b + " ok", typo(a) + " thanks"]
    record_ids = ["a", "b", "a-typo", "a-punct", "b-ok", "a-typo-thanks"]
    found = find_near_duplicates(record_ids, texts, PARAMS)
    assert [(d.record_id, d.duplicate_of) for d in found] == [
        ("a-typo", "a"), ("a-punct", "a"), ("b-ok", "b"), ("a-typo-thanks", "a")]  # input order
    p, y1, y2 = _between()
    # y1 is close to y2 only, and y2 is itself a duplicate of p: y1 survives (the kept texts hold no close pair)
    found = find_near_duplicates(["p", "y2", "y1"], [p, y2, y1], PARAMS)
    assert [(d.record_id, d.duplicate_of) for d in found] == [("y2", "p")]


def test_the_vectorised_exact_check_is_the_jaccard_of_python_sets() -> None:
    rng = random.Random(9)
    texts = [prose(400 + i, words=rng.randint(0, 70)) for i in range(150)] + ["", "ab", "a,b"]
    cjk = ["".join(chr(0x4E00 + rng.randrange(12000)) for _ in range(400)) for _ in range(60)]  # > 7131 characters
    for sample in (texts, cjk + texts[:20]):
        left = [rng.randrange(len(sample)) for _ in range(500)]
        right = [rng.randrange(len(sample)) for _ in range(500)]
        for strip in (True, False):
            normal = minhash.normalised_texts(sample, strip)
            expected = [minhash.jaccard(minhash.shingles(normal[a]), minhash.shingles(normal[b]))
                        for a, b in zip(left, right, strict=True)]
            assert minhash.pair_similarities(sample, left, right, strip).tolist() == expected


def test_block_size_does_not_change_the_answer(monkeypatch: pytest.MonkeyPatch) -> None:
    rng = random.Random(11)
    texts = [prose(500 + i) for i in range(30)]
    for _ in range(120):  # families of variants of variants, so records have many candidates
        source = rng.choice(texts)
        at = rng.randrange(len(source) - 10)
        texts.append(source[:at] + rng.choice(["", "x", " ok ", "."]) + source[at + rng.randint(0, 6):])
    p, y1, _ = _between()
    texts += [p, y1, typo(y1)]  # the last one's first candidate (p) fails, its second (y1) matches
    record_ids = ids(len(texts))
    expected = find_near_duplicates(record_ids, texts, PARAMS)
    assert len(expected) > 60 and expected[-1].record_id == record_ids[-1]
    assert expected[-1].duplicate_of == record_ids[-2]
    for block in (1, 3):
        monkeypatch.setattr(neardup, "RECORDS_PER_BLOCK", block)
        assert find_near_duplicates(record_ids, texts, PARAMS) == expected


def test_exact_duplicates_are_near_duplicates_of_similarity_one_even_in_a_crowd() -> None:
    texts = [BASE] * 3000 + [BASE.upper()]
    found = find_near_duplicates([str(i) for i in range(len(texts))], texts, PARAMS)
    assert len(found) == len(texts) - 1
    assert {d.duplicate_of for d in found} == {"0"} and {d.similarity for d in found} == {1.0}


def test_a_match_already_published_is_preferred_and_texts_are_fetched_once() -> None:
    p, y1, y2 = _between()
    assert exact(y1, p) < 0.8 <= min(exact(y2, p), exact(y2, y1))
    published_ids = ["f" * 32, "e" * 32]
    index = SignatureIndex.build(published_ids, [p, prose(99)], PARAMS)
    calls: list[list[str]] = []

    def fetch(wanted: list[str]) -> dict[str, str]:
        calls.append(wanted)
        return {"f" * 32: p}

    found = find_near_duplicates(["y1", "y2"], [y1, y2], PARAMS, against=index, against_texts=fetch)
    assert [(d.record_id, d.duplicate_of) for d in found] == [("y2", "f" * 32)]
    assert calls == [["f" * 32]]  # only candidates, in one call
    assert find_near_duplicates(["y1", "y2"], [y1, y2], PARAMS, against=index, against_texts={}) == [
        find_near_duplicates(["y1", "y2"], [y1, y2], PARAMS)[0]]  # an erased text is no match
    assert find_near_duplicates(["f" * 32], [p], PARAMS, against=index, against_texts=fetch) == []  # itself
    with pytest.raises(ValueError, match="against_texts"):
        find_near_duplicates(["y1"], [y1], PARAMS, against=index)
    with pytest.raises(ValueError, match="rebuild"):
        find_near_duplicates(["y1"], [y1], NearDupParams.for_threshold(0.9), against=index, against_texts=fetch)


def test_the_index_round_trips_through_compact_bytes_and_can_drop_records() -> None:
    texts = [prose(200 + i) for i in range(50)]
    record_ids = [f"{i:032x}" for i in range(50)]
    index = SignatureIndex.build(record_ids, texts, PARAMS)
    data = index.to_bytes()
    assert len(data) < 50 * (16 + 8 * PARAMS.bands) + 2500
    back = SignatureIndex.from_bytes(data)
    assert back.ids() == record_ids and back.params == PARAMS and np.array_equal(back.keys, index.keys)
    smaller = back.without([record_ids[3], "not-an-id", "0" * 31 + "z"])
    assert len(smaller) == 49 and record_ids[3] not in smaller.ids()
    both = SignatureIndex.concat([smaller, SignatureIndex.build(["ticket-7"], [BASE], PARAMS)])
    again = SignatureIndex.from_bytes(both.to_bytes())
    assert again.ids() == [*smaller.ids(), "ticket-7"] and np.array_equal(again.keys, both.keys)
    assert again.without(["ticket-7"]).ids() == smaller.ids()
    assert len(SignatureIndex.from_bytes(SignatureIndex.empty(PARAMS).to_bytes())) == 0
    for garbage in (b"", b"PK\x03\x04 not a zip", json.dumps({"a": 1}).encode()):
        with pytest.raises(ValueError, match="not a near-duplicate index"):
            SignatureIndex.from_bytes(garbage)


def test_a_signature_depends_on_its_text_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    texts = [prose(300 + i, words=random.Random(i).randint(0, 80)) for i in range(60)]
    texts += ["", "a", "abcd", "abcde", "nul\x00inside a text", "👍", "   "]
    whole = signatures(texts, PARAMS)
    assert whole.shape == (len(texts), PARAMS.num_bins) and whole.dtype == np.uint32
    alone = np.vstack([signatures([t], PARAMS) for t in texts])
    order = list(reversed(range(len(texts))))
    monkeypatch.setattr(minhash, "_CHUNK_CHARS", 97)  # many small chunks, some with the NUL text
    chunked = signatures(texts, PARAMS)
    shuffled = signatures([texts[i] for i in order], PARAMS)
    assert np.array_equal(whole, alone) and np.array_equal(whole, chunked)
    assert np.array_equal(shuffled, whole[order])
    assert np.array_equal(band_keys(whole, PARAMS), band_keys(alone, PARAMS))
    keys = text_keys(texts, PARAMS)
    assert keys.shape == (len(texts), PARAMS.width)
    assert np.array_equal(keys[:, :PARAMS.bands], band_keys(whole, PARAMS))
    assert np.array_equal(keys[:, PARAMS.bands:], minhash.sketch(whole))
    assert (whole != 0xFFFFFFFF).all()  # every bin filled (densified)
    assert not np.array_equal(whole[-2], whole[-3])  # "👍" and "" differ


def test_the_banding_keeps_recall_at_the_threshold() -> None:
    assert NearDupParams.for_threshold(0.8) == NearDupParams()
    for threshold in (0.5, 0.7, 0.8, 0.9, 0.95):
        params = NearDupParams.for_threshold(threshold)
        assert params.bands * params.rows <= params.num_bins
        assert 1 - (1 - threshold**params.rows) ** params.bands >= MIN_RECALL_AT_THRESHOLD
    with pytest.raises(ValueError):
        NearDupParams.for_threshold(1.5)


@pytest.mark.parametrize("suffix", ["jsonl", "csv", "parquet"])
def test_the_cli_reports_near_duplicates_of_a_file(tmp_path, capsys, suffix: str) -> None:
    rows = pd.DataFrame({"ticket": ["t1", "t2", "t3", "t4"],
                         "body": [BASE, prose(2), VARIANTS["punctuation"], VARIANTS["rotation"]]})
    published = pd.DataFrame({"ticket": ["p1"], "body": [prose(2) + " Regards."]})
    path, against = tmp_path / f"batch.{suffix}", tmp_path / "published.jsonl"
    {"jsonl": lambda: rows.to_json(path, orient="records", lines=True), "csv": lambda: rows.to_csv(path, index=False),
     "parquet": lambda: rows.to_parquet(path)}[suffix]()
    published.to_json(against, orient="records", lines=True)
    assert main(["near-dups", str(path), "--against", str(against), "--text-field", "body", "--id-field",
                 "ticket"]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [(d["id"], d["duplicate_of"]) for d in lines] == [("t2", "p1"), ("t3", "t1"), ("t4", "t1")]
    assert lines[1]["similarity"] == round(exact(BASE, VARIANTS["punctuation"]), 4)


def test_the_cli_names_the_file_line_and_field_of_a_bad_record(tmp_path, capsys) -> None:
    path = tmp_path / "batch.jsonl"
    path.write_text('{"id": 1, "text": "hello there"}\n{"id": 2, "body": "no text"}\n')
    assert main(["near-dups", str(path), "--text-field", "text", "--id-field", "id"]) == 2
    error = capsys.readouterr().err.strip()
    assert error == f"trainyard near-dups: {path} line 2: no field 'text' (its fields: body, id)"
    path.write_text('{"id": 1, "text": "hello there"}\n{"id": 1, "text": "again"}\n')
    assert main(["near-dups", str(path), "--text-field", "text", "--id-field", "id"]) == 2
    assert "line 2: id '1' (field 'id') repeats line 1" in capsys.readouterr().err


@pytest.mark.parametrize(("threshold", "bins"), [(0.8, 128), (0.5, 128), (0.95, 64), (0.8, 16)])
def test_the_sketch_bar_is_the_binomial_tail_at_the_threshold(threshold: float, bins: int) -> None:
    from scipy.stats import binom

    params = NearDupParams.for_threshold(threshold, num_bins=bins)
    sampled = min(bins, minhash.SKETCH_BYTES)
    need = params.min_agreement - (minhash.SKETCH_BYTES - sampled)  # the unsampled bytes always agree
    assert binom.cdf(need - 1, sampled, threshold) <= neardup.SKETCH_MISS < binom.cdf(need, sampled, threshold)


def test_the_sketch_drops_chance_collisions_of_templated_text_and_no_match(monkeypatch: pytest.MonkeyPatch) -> None:
    rng = random.Random(5)
    template = "Dear support, my card was declined at the shop and the app says error code. "
    texts = [template + " ".join(rng.choices(WORDS[:60], k=30)) for _ in range(1500)]  # alike, not duplicates
    texts += [typo(texts[i]) for i in range(0, 1500, 50)]
    record_ids = ids(len(texts))
    found = find_near_duplicates(record_ids, texts, PARAMS)
    none = np.empty((0, PARAMS.width), dtype=np.uint64)
    kept, _ = neardup._candidates(none, text_keys(texts, PARAMS), PARAMS)
    monkeypatch.setattr(NearDupParams, "min_agreement", property(lambda self: 0))
    everything, _ = neardup._candidates(none, text_keys(texts, PARAMS), PARAMS)
    assert find_near_duplicates(record_ids, texts, PARAMS) == found
    assert {d.record_id for d in found} == set(record_ids[1500:])
    assert len(everything) > 20 * len(kept) and len(kept) >= 30
