"""One-permutation MinHash over character 5-grams, for many texts at once (numpy, no per-shingle Python).

Why hand-written rather than datasketch: throughput. datasketch hashes each shingle in Python (SHA-1) and then
applies num_perm permutations to it; here each chunk of texts is one array of UTF-32 code points, every 5-gram is
hashed once by a rolling polynomial and MurmurHash3's finaliser in a few whole-array passes, binned by the hash's
top bits, and the minimum per (text, bin) kept (one-permutation hashing, Li et al. 2012); empty bins are filled by
optimal densification (Shrivastava 2017). bench/dedup.py runs both on the same corpus (docs/BENCHMARKS.md):
datasketch is 28-40x slower per document -- its per-shingle Python alone is more than 10x -- and with its
default banding it finds ~91% of the duplicates at 0.8, this ~99.9%.

The exact check of candidates (:func:`pair_similarities`) is vectorised the same way: 5-grams as integers, sets
and intersections by sorting.

The texts are normalised as exact dedup's canonical text (NFKC, case-folded, whitespace runs as one space,
stripped), optionally with punctuation and symbols as spaces; the tables come from the running Python's
``unicodedata``, as exact dedup's normalisation does.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Sequence
from functools import cache

import numpy as np

SHINGLE = 5
"""Characters per shingle; a text shorter than this is one shingle."""
_CHUNK_CHARS = 1 << 17  # code points per chunk: the working arrays stay in the CPU cache
_PAD = 0x110000  # pads a short text to one shingle; not a code point, so it equals no real character
_EMPTY = np.uint32(0xFFFFFFFF)
_KEY_CHUNK = 1 << 14
_FEW_PAIRS = 16  # fewer pairs than this: Python sets are quicker than the set-up
_U32, _U64 = np.uint32, np.uint64
SKETCH_BYTES = 32
"""Bytes of a text's sketch (:func:`sketch`): one byte of each of up to 32 bins, spread over the signature."""


def _splitmix(i: int) -> int:
    z = (i * 0x9E3779B97F4A7C15 + 0x2545F4914F6CDD1D) & 0xFFFFFFFFFFFFFFFF
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & 0xFFFFFFFFFFFFFFFF
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & 0xFFFFFFFFFFFFFFFF
    return z ^ (z >> 31)


# Fixed seeds (a text's signature never depends on the run); derived with plain integer arithmetic so no library's
# random stream can change them. Changing any of them invalidates every published index (bump neardup.INDEX_FORMAT).
_MULT = _U32(_splitmix(1) & 0xFFFFFFFF | 1)
_MULT3 = _U32(int(_MULT) ** 3 & 0xFFFFFFFF)
_ROW_MULT = np.array([_splitmix(100 + i) | 1 for i in range(256)], dtype=_U64)
_BAND_SEED = np.array([_splitmix(1000 + i) for i in range(256)], dtype=_U64)
_PROBE_SEED = _splitmix(2) & 0xFFFFFFFF


def _fmix32(h: np.ndarray) -> np.ndarray:
    """MurmurHash3's finaliser, in place: every output bit depends on every input bit."""
    shifted = np.empty_like(h)
    for shift, multiplier in ((16, 0x85EBCA6B), (13, 0xC2B2AE35)):
        np.right_shift(h, _U32(shift), out=shifted)
        h ^= shifted
        h *= _U32(multiplier)
    np.right_shift(h, _U32(16), out=shifted)
    h ^= shifted
    return h


def _fmix64(h: np.ndarray) -> np.ndarray:
    h ^= h >> _U64(33)
    h *= _U64(0xFF51AFD7ED558CCD)
    h ^= h >> _U64(33)
    h *= _U64(0xC4CEB9FE1A85EC53)
    h ^= h >> _U64(33)
    return h


@cache
def _categories() -> tuple[np.ndarray, np.ndarray]:
    """Masks over all code points: whitespace (``str.isspace``, what ``str.split()`` and ``re``'s ``\\s`` split on)
    and punctuation or symbol (Unicode categories P* and S*)."""
    chars = [chr(c) for c in range(_PAD)]
    return (np.array([ch.isspace() for ch in chars]),
            np.array([unicodedata.category(ch)[0] in "PS" for ch in chars]))


@cache
def _spacing(strip_punctuation: bool) -> np.ndarray:
    """uint32 per code point: 32 (a space) for whitespace, and for punctuation and symbols if stripping; else the
    code point itself. One gather through it both folds the blanks and classifies them."""
    space, punctuation = _categories()
    table = np.arange(_PAD + 1, dtype=_U32)
    table[:_PAD][space | punctuation if strip_punctuation else space] = 32
    return table


def _folded_codepoints(texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """NFKC + casefold of every text as one uint32 array of code points: (code points, each text's start and
    length in it, positions of the NUL separators between texts, which belong to no text).

    One normalize() call for the whole chunk: NUL is a starter that composes with nothing, so normalising
    "a\\0b" equals normalising a and b apart; a chunk with a NUL inside a text is folded text by text."""
    cps = np.frombuffer(unicodedata.normalize("NFKC", "\x00".join(texts)).casefold().encode("utf-32-le"), dtype=_U32)
    separators = np.flatnonzero(cps == 0)
    if len(separators) == len(texts) - 1:
        starts = np.concatenate(([0], separators + 1))
        return cps, starts, np.append(separators, cps.size) - starts, separators
    folded = [unicodedata.normalize("NFKC", t).casefold() for t in texts]
    lengths = np.fromiter(map(len, folded), dtype=np.int64, count=len(folded))
    cps = np.frombuffer("".join(folded).encode("utf-32-le"), dtype=_U32)
    return cps, np.cumsum(lengths) - lengths, lengths, np.empty(0, dtype=np.int64)


def _normalised(texts: Sequence[str], strip_punctuation: bool) -> tuple[np.ndarray, np.ndarray]:
    """The code points the shingles are cut from (canonical_text, optionally without punctuation), and lengths."""
    cps, starts, lengths, separators = _folded_codepoints(texts)
    spaced = np.take(_spacing(strip_punctuation), cps, mode="clip")
    blank = spaced == 32
    nonempty = np.flatnonzero(lengths)
    if strip_punctuation and nonempty.size:
        content = ~blank
        content[separators] = False
        bare = nonempty[~np.logical_or.reduceat(content, starts[nonempty])]
        for text in bare.tolist():  # only punctuation and symbols: they stay (else "👍" would equal "👎")
            span = slice(starts[text], starts[text] + lengths[text])
            spaced[span] = np.take(_spacing(False), cps[span], mode="clip")
            blank[span] = spaced[span] == 32
    keep = np.ones_like(blank)
    keep[1:] = ~(blank[1:] & blank[:-1])  # the first blank of a run stays, ...
    keep[starts[nonempty]] = ~blank[starts[nonempty]]  # ... unless it starts the text
    run = (starts + lengths - 1)[nonempty]
    run, first = run[blank[run]], starts[nonempty][blank[run]]
    while run.size:  # ... or ends it: walk back from each text's end to the first blank of its last run
        at_first = ~blank[run - 1] | (run == first)
        keep[run[at_first]] = False
        run, first = run[~at_first] - 1, first[~at_first]
    dropped = np.flatnonzero(~keep)
    lengths = lengths - np.bincount(np.searchsorted(starts, dropped, side="right") - 1, minlength=len(lengths))
    keep[separators] = False
    spaced = spaced[keep]
    return spaced, lengths


def normalised_texts(texts: Sequence[str], strip_punctuation: bool) -> list[str]:
    """The texts as the shingles see them (for the exact check and for tests)."""
    cps, lengths = _normalised(texts, strip_punctuation)
    joined = cps.tobytes().decode("utf-32-le")
    ends = np.cumsum(lengths).tolist()
    return [joined[end - length:end] for end, length in zip(ends, lengths.tolist(), strict=True)]


def shingles(normalised: str) -> set[str]:
    """The character 5-grams of a normalised text; a shorter text is one shingle."""
    if len(normalised) < SHINGLE:
        return {normalised}
    return {normalised[i:i + SHINGLE] for i in range(len(normalised) - SHINGLE + 1)}


def _padded(cps: np.ndarray, lengths: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Texts shorter than a shingle padded to one with a value no character has."""
    short = lengths < SHINGLE
    if short.any():
        cps = np.insert(cps, np.repeat(np.cumsum(lengths)[short], SHINGLE - lengths[short]), _U32(_PAD))
        lengths = np.maximum(lengths, SHINGLE)
    return cps, lengths


def _ranges(starts: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """The indexes starts[i] .. starts[i] + counts[i] - 1 of every i, concatenated."""
    return np.repeat(starts - (np.cumsum(counts) - counts), counts) + np.arange(int(counts.sum()))


def pair_similarities(texts: Sequence[str], left: Sequence[int], right: Sequence[int],
                      strip_punctuation: bool) -> np.ndarray:
    """The exact Jaccard similarity of the 5-gram sets of ``texts[left[p]]`` and ``texts[right[p]]``, every p at
    once: a 5-gram is one integer (its characters' ranks among the texts' distinct characters, as five digits),
    tagged with its text's number in the spare high bits; one sort gives each text's set, another each pair's
    common 5-grams. Several times faster than Python sets, which remain for a few pairs (quicker than the set-up)
    and for texts with so many distinct characters that the numbers do not fit 64 bits."""
    cps, lengths = _padded(*_normalised(texts, strip_punctuation))
    present = np.zeros(_PAD + 1, dtype=bool)
    present[cps] = True
    alphabet = np.flatnonzero(present)
    key_bits = (len(alphabet) ** SHINGLE - 1).bit_length()
    if len(left) < _FEW_PAIRS or key_bits > 63 or max(len(texts), len(left)) >= 1 << (64 - key_bits):
        normal = normalised_texts(texts, strip_punctuation)
        return np.array([jaccard(shingles(normal[a]), shingles(normal[b])) for a, b in zip(left, right, strict=True)])
    rank_of = np.empty(_PAD + 1, dtype=_U64)  # only the alphabet's entries are written and read
    rank_of[alphabet] = np.arange(len(alphabet), dtype=_U64)
    rank = rank_of[cps]
    keys = rank[:1 - SHINGLE].copy()
    for k in range(1, SHINGLE):
        keys *= _U64(len(alphabet))
        keys += rank[k:len(rank) - SHINGLE + 1 + k]
    windows = lengths - SHINGLE + 1
    tagged = np.repeat(np.arange(len(texts), dtype=_U64) << _U64(key_bits), windows)
    tagged |= keys[_ranges(np.cumsum(lengths) - lengths, windows)]
    tagged.sort()
    tagged = tagged[np.concatenate(([True], tagged[1:] != tagged[:-1]))]  # each text's 5-gram set, sorted
    sizes = np.bincount((tagged >> _U64(key_bits)).astype(np.intp), minlength=len(texts))
    tagged &= _U64((1 << key_bits) - 1)
    first = np.cumsum(sizes) - sizes
    left, right = np.asarray(left, dtype=np.intp), np.asarray(right, dtype=np.intp)
    both = np.concatenate([_ranges(first[left], sizes[left]), _ranges(first[right], sizes[right])])
    pair = np.concatenate([np.repeat(np.arange(len(left), dtype=_U64), sizes[left]),
                           np.repeat(np.arange(len(left), dtype=_U64), sizes[right])])
    grams = np.sort((pair << _U64(key_bits)) | tagged[both])
    common = grams[1:][grams[1:] == grams[:-1]] >> _U64(key_bits)
    shared = np.bincount(common.astype(np.intp), minlength=len(left))
    return shared / (sizes[left] + sizes[right] - shared)


def jaccard(a: set[int] | set[str], b: set[int] | set[str]) -> float:
    common = len(a & b)
    return common / (len(a) + len(b) - common)


def _chunk_signatures(texts: Sequence[str], bins: int, strip_punctuation: bool) -> np.ndarray:
    cps, lengths = _padded(*_normalised(texts, strip_punctuation))
    n = len(texts)
    windows = cps.size - SHINGLE + 1
    # The polynomial c0*A^4 + c1*A^3 + c2*A^2 + c3*A + c4 (mod 2^32) of every window, in six array passes.
    pairs = cps[:-1] * _MULT
    pairs += cps[1:]
    hashes = pairs[:windows] * _MULT3
    hashes += pairs[2:windows + 2] * _MULT
    hashes += cps[SHINGLE - 1:]
    _fmix32(hashes)
    hashes[(np.cumsum(lengths)[:-1, None] - np.arange(1, SHINGLE)).ravel()] = _EMPTY  # windows across two texts
    bin_of = np.repeat(np.arange(n, dtype=np.intp) * bins, lengths)[:windows]
    bin_of += hashes >> _U32(32 - bins.bit_length() + 1)
    sig = np.full(n * bins, _EMPTY, dtype=_U32)
    np.minimum.at(sig, bin_of, hashes)
    return _densify(sig.reshape(n, bins))


def _densify(sig: np.ndarray) -> np.ndarray:
    """Optimal densification: an empty bin takes the value of the first non-empty bin its probe sequence hits.
    The sequence depends only on the bin and the attempt, so two texts agree on a filled bin with probability
    equal to their similarity, as for a real bin."""
    bins = sig.shape[1]
    filled = sig != _EMPTY
    rows, cols = np.nonzero(~filled)
    for attempt in range(4 * bins):
        if not rows.size:
            return sig
        probe = cols.astype(_U32) * _U32(0x9E3779B1) + _U32((attempt * 0x85EBCA77 + _PROBE_SEED) & 0xFFFFFFFF)
        donor = (_fmix32(probe) >> _U32(32 - bins.bit_length() + 1)).astype(np.intp)
        hit = filled[rows, donor]
        sig[rows[hit], cols[hit]] = sig[rows[hit], donor[hit]]
        rows, cols = rows[~hit], cols[~hit]
    sig[rows, cols] = sig[rows, np.argmax(filled[rows], axis=1)]  # a text of a few shingles: its first bin
    return sig


def signatures(texts: Sequence[str], bins: int, strip_punctuation: bool) -> np.ndarray:
    """One uint32 row of ``bins`` values per text (a power of two); a row depends only on its text, never on the
    chunk or the order it came in."""
    out = np.empty((len(texts), bins), dtype=_U32)
    sizes = np.fromiter(map(len, texts), dtype=np.int64, count=len(texts))
    chunk = (np.cumsum(sizes) - sizes) // _CHUNK_CHARS
    cuts = [0, *(np.flatnonzero(np.diff(chunk)) + 1).tolist(), len(texts)]
    for start, stop in zip(cuts[:-1], cuts[1:], strict=True):
        if stop > start:
            out[start:stop] = _chunk_signatures(texts[start:stop], bins, strip_punctuation)
    return out


def band_keys(sig: np.ndarray, b: int, r: int) -> np.ndarray:
    """A uint64 key per (text, band) for ``b`` bands of ``r`` rows: a hash of the band's values and its number."""
    keys = np.empty((len(sig), b), dtype=_U64)
    for start in range(0, len(sig), _KEY_CHUNK):  # in chunks that stay in the CPU cache: 3x faster
        rows = sig[start:start + _KEY_CHUNK, :b * r].reshape(-1, b, r)
        chunk = np.broadcast_to(_BAND_SEED[:b], (len(rows), b)).copy()
        for k in range(r):
            chunk += rows[:, :, k] * _ROW_MULT[k]
        keys[start:start + _KEY_CHUNK] = _fmix64(chunk)
    return keys


def sketch_bins(bins: int) -> int:
    """How many distinct bins a sketch samples (the rest of its bytes are zero, so they always agree)."""
    return min(SKETCH_BYTES, bins)


def sketch(sig: np.ndarray) -> np.ndarray:
    """uint64, shape (len(sig), SKETCH_BYTES // 8): the low byte of ``sketch_bins`` evenly spread bins, packed.
    Two texts agree on a sampled byte with probability J + (1 - J) / 256 (the bin agrees, or its low bytes do by
    chance), so the count of agreeing bytes (:func:`sketch_agreement`) estimates their similarity for a few
    vector operations -- before the exact check, which costs thousands."""
    sampled = sketch_bins(sig.shape[1])
    out = np.zeros((len(sig), SKETCH_BYTES), dtype=np.uint8)
    out[:, :sampled] = sig[:, np.arange(sampled) * (sig.shape[1] // sampled)] & _U32(0xFF)
    return out.view(_U64)


def sketch_agreement(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """The number of equal bytes of each row of two (p, SKETCH_BYTES // 8) sketch arrays."""
    equal = np.ascontiguousarray(a).view(np.uint8) == np.ascontiguousarray(b).view(np.uint8)
    return np.count_nonzero(equal.reshape(len(a), SKETCH_BYTES), axis=1)
