"""Near-duplicate texts: MinHash signatures, LSH band keys and an exact Jaccard check on the candidates.

Why: exact dedup (same normalised text) misses the copies that differ by a typo, a comma, a signature line or a
reordered paragraph. Each such copy is labeled again (wasted budget) and, once split, sits in train and in
evaluation, where it inflates the scores. Two texts are near-duplicates when the Jaccard similarity of their
character 5-gram sets is at least the threshold (0.8 by default).

How: comparing a batch with everything published pairwise is quadratic, so each text gets a MinHash signature
and the signature is cut into ``bands`` bands of ``rows`` values; a band's hash is its key. Texts sharing a key
are candidates, and only candidates are compared exactly (vectorised too). Published records are represented by
their keys alone (:class:`SignatureIndex`, ~160 bytes a record, to keep on main next to the exact-hash index), so
a new batch is checked against all of them without reading a published text unless it is a candidate.

The signatures (:mod:`dagster_project.stages.minhash`) are one-permutation hashing: each 5-gram hashed once,
binned by the hash's top bits, the minimum kept per bin, empty bins filled by optimal densification -- computed
with numpy over all the texts of a chunk at once. Why not datasketch: throughput. datasketch hashes every shingle
in Python and then applies num_perm permutations to it; on the same corpus and the same exact check it is 28-40x
slower per document, and its default banding misses ~10% of the duplicates at 0.8 (docs/BENCHMARKS.md).
"""

from __future__ import annotations

import io
import json
import math
import re
import unicodedata
import zipfile
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from itertools import groupby
from operator import itemgetter

import numpy as np

from dagster_project.stages import minhash

MAX_PEERS = 32
"""In a band bucket shared by more records, a record is compared with the first MAX_PEERS of them only: a bucket
that large is one template and its first members stand for it, and the exact checks stay linear in the batch."""
RECORDS_PER_BLOCK = 512
"""Records whose candidates are checked together (in one vectorised pass; its memory is bounded by the block)."""
MAX_CHECKS = 16
"""Candidates per record checked exactly at most: those sharing the most bands (see ``_most_shared``)."""
MIN_RECALL_AT_THRESHOLD = 0.95
"""The banding keeps the chance of missing a pair exactly at the threshold below 5% (pairs above it: far less)."""
SKETCH_MISS = 1e-4
"""The sketch filter's chance of dropping a candidate pair exactly at the threshold (above it: far less)."""
SKETCH_WORDS = minhash.SKETCH_BYTES // 8
INDEX_FORMAT = 2
_PAIRS_PER_CHUNK = 1 << 18
_U64 = np.uint64
_TEXTS_PER_CHUNK = 1 << 14
_HEX_ID = re.compile("[0-9a-f]{32}").fullmatch


def canonical_text(text: str) -> str:
    """The text exact dedup compares: NFKC (compatibility forms folded), case-folded, whitespace runs as one space,
    stripped. ``str.split()`` splits on exactly the characters ``re``'s ``\\s`` matches."""
    return " ".join(unicodedata.normalize("NFKC", text).casefold().split())


def _band_rows(threshold: float, num_bins: int) -> tuple[int, int]:
    """(bands, rows) like datasketch's ``_optimal_param``, weighted for recall: of the bandings whose probability of
    finding a pair at the threshold, 1 - (1 - t^r)^b, is at least MIN_RECALL_AT_THRESHOLD, the one with the least
    false-positive mass (the integral of that probability below the threshold). Candidates are checked exactly, so
    a false positive costs a comparison; a false negative is a duplicate that gets labeled and leaks."""
    below = np.linspace(0.0, threshold, 1001)
    best: tuple[float, int, int] | None = None
    for rows in range(1, num_bins + 1):
        bands = num_bins // rows
        if 1 - (1 - threshold**rows) ** bands < MIN_RECALL_AT_THRESHOLD:
            continue
        curve = 1 - (1 - below**rows) ** bands
        false_positive = float(np.sum((curve[1:] + curve[:-1]) / 2) * (below[1] - below[0]))
        if best is None or false_positive < best[0]:
            best = (false_positive, bands, rows)
    assert best is not None  # rows=1 always qualifies
    return best[1], best[2]


@dataclass(frozen=True)
class NearDupParams:
    """How texts are compared. ``for_threshold`` picks the banding; the defaults are ``for_threshold(0.8)``.

    ``strip_punctuation``: punctuation and symbols (Unicode categories P* and S*) count as spaces, so "a,b",
    "a, b" and "a , b" shingle alike; on the benchmark corpus this finds the punctuation-edited copies that
    otherwise fall below 0.8 (docs/BENCHMARKS.md). A text made only of them keeps them (else "👍" = "👎")."""

    threshold: float = 0.8
    num_bins: int = 128
    bands: int = 18
    rows: int = 7
    strip_punctuation: bool = True

    def __post_init__(self) -> None:
        if not 0.0 < self.threshold <= 1.0:
            raise ValueError(f"threshold must be in (0, 1], not {self.threshold}")
        if self.num_bins not in (16, 32, 64, 128, 256):
            raise ValueError(f"num_bins must be a power of two from 16 to 256, not {self.num_bins}")
        if self.bands < 1 or self.rows < 1 or self.bands * self.rows > self.num_bins:
            raise ValueError(f"{self.bands} bands x {self.rows} rows do not fit {self.num_bins} bins")

    @classmethod
    def for_threshold(cls, threshold: float = 0.8, num_bins: int = 128,
                      strip_punctuation: bool = True) -> NearDupParams:
        if not 0.0 < threshold <= 1.0:
            raise ValueError(f"threshold must be in (0, 1], not {threshold}")
        bands, rows = _band_rows(threshold, num_bins)
        return cls(threshold, num_bins, bands, rows, strip_punctuation)

    @property
    def width(self) -> int:
        """uint64 columns of a text's keys: ``bands`` band keys, then the sketch packed in SKETCH_WORDS."""
        return self.bands + SKETCH_WORDS

    @property
    def min_agreement(self) -> int:
        """Sketch bytes a candidate pair must share to be checked exactly: the most that a pair at the threshold
        falls short of with probability <= SKETCH_MISS (a binomial tail, summed here rather than importing scipy
        for one number). Chance band collisions (common in templated text) share few and skip the exact check."""
        sampled, t = minhash.sketch_bins(self.num_bins), self.threshold
        tail, need = 0.0, 0
        for k in range(sampled + 1):
            tail += math.comb(sampled, k) * t**k * (1 - t) ** (sampled - k)  # P(agreement <= k)
            if tail > SKETCH_MISS:
                break
            need = k + 1
        return need + minhash.SKETCH_BYTES - sampled

    @property
    def scheme(self) -> tuple[int, int, int, bool]:
        """What band keys depend on: an index is only comparable with texts keyed the same way."""
        return self.num_bins, self.bands, self.rows, self.strip_punctuation


def signatures(texts: Sequence[str], params: NearDupParams) -> np.ndarray:
    """uint32, shape (len(texts), num_bins): each row depends only on its text (fixed seeds, any chunking)."""
    return minhash.signatures(texts, params.num_bins, params.strip_punctuation)


def band_keys(sig: np.ndarray, params: NearDupParams) -> np.ndarray:
    """uint64, shape (len(sig), bands): texts sharing any key are candidates."""
    return minhash.band_keys(sig, params.bands, params.rows)


def text_keys(texts: Sequence[str], params: NearDupParams) -> np.ndarray:
    """uint64, shape (len(texts), params.width): each text's band keys, then its sketch (:func:`minhash.sketch`),
    computed a chunk at a time without holding every signature (512 bytes a text)."""
    keys = np.empty((len(texts), params.width), dtype=_U64)
    for start in range(0, len(texts), _TEXTS_PER_CHUNK):
        sig = signatures(texts[start:start + _TEXTS_PER_CHUNK], params)
        keys[start:start + len(sig), :params.bands] = band_keys(sig, params)
        keys[start:start + len(sig), params.bands:] = minhash.sketch(sig)
    return keys


def normalised_texts(texts: Sequence[str], params: NearDupParams) -> list[str]:
    """The texts as their shingles are cut: canonical_text, punctuation as spaces if the params say so."""
    return minhash.normalised_texts(texts, params.strip_punctuation)


def _hex_ids(ids: Sequence[str]) -> np.ndarray:
    """Record ids as stored: 16 bytes each when every id is 32 lowercase hex digits (Trainyard's), else str."""
    if all(map(_HEX_ID, ids)):
        return np.frombuffer(bytes.fromhex("".join(ids)), dtype="S16").copy()
    return np.array(ids, dtype=str)


def _id_strings(stored: np.ndarray) -> list[str]:
    if stored.dtype.kind == "U":
        return stored.tolist()
    text = stored.tobytes().hex()
    return [text[i:i + 32] for i in range(0, len(text), 32)]


@dataclass(frozen=True, eq=False)
class SignatureIndex:
    """The keys (band keys and sketch, :func:`text_keys`) of published records, by record id: what a new batch is
    compared with."""

    record_ids: np.ndarray
    """16-byte ids (``S16``) when all ids are Trainyard's 32-hex ids, else a str array."""
    keys: np.ndarray
    """uint64, shape (len, params.width)."""
    params: NearDupParams

    @classmethod
    def build(cls, ids: Sequence[str], texts: Sequence[str], params: NearDupParams,
              keys: np.ndarray | None = None) -> SignatureIndex:
        if len(ids) != len(texts):
            raise ValueError(f"{len(ids)} ids for {len(texts)} texts")
        keys = text_keys(texts, params) if keys is None else keys
        if keys.shape != (len(ids), params.width) or keys.dtype != _U64:
            raise ValueError(f"keys {keys.shape} {keys.dtype} for {len(ids)} ids and {params.width} columns")
        return cls(_hex_ids(ids), keys, params)

    @classmethod
    def empty(cls, params: NearDupParams) -> SignatureIndex:
        return cls(_hex_ids([]), np.empty((0, params.width), dtype=_U64), params)

    def __len__(self) -> int:
        return len(self.record_ids)

    def ids(self, positions: Iterable[int] | None = None) -> list[str]:
        return _id_strings(self.record_ids if positions is None else self.record_ids[list(positions)])

    @staticmethod
    def concat(indexes: Sequence[SignatureIndex], params: NearDupParams | None = None) -> SignatureIndex:
        """One index of several (e.g. one per published batch), in order; all keyed the same way."""
        if not indexes:
            if params is None:
                raise ValueError("concat of no indexes needs params")
            return SignatureIndex.empty(params)
        params = params or indexes[0].params
        if any(index.params.scheme != params.scheme for index in indexes):
            raise ValueError("indexes keyed with different parameters cannot be combined; rebuild them")
        if any(index.record_ids.dtype.kind == "U" for index in indexes):
            ids = [np.array(index.ids(), dtype=str) for index in indexes]
        else:
            ids = [index.record_ids for index in indexes]
        return SignatureIndex(np.concatenate(ids), np.concatenate([index.keys for index in indexes]), params)

    def without(self, record_ids: Iterable[str]) -> SignatureIndex:
        """This index minus the given records (erasure, retention); ids not in it are ignored."""
        drop = list(record_ids)
        if self.record_ids.dtype.kind == "S":
            stored = _hex_ids([i for i in drop if _HEX_ID(i)])
        else:
            stored = np.array(drop, dtype=str)
        keep = ~np.isin(self.record_ids, stored)
        return SignatureIndex(self.record_ids[keep], self.keys[keep], self.params)

    def to_bytes(self) -> bytes:
        """An ``.npz`` (no pickle): ids as 16 bytes (or UTF-8), keys as uint64, the params as JSON."""
        hexed = self.record_ids.dtype.kind == "S"
        meta = {"format": INDEX_FORMAT, "ids": "hex16" if hexed else "utf8", "params": asdict(self.params)}
        ids = self.record_ids if hexed else np.char.encode(self.record_ids, "utf-8")
        buffer = io.BytesIO()
        np.savez(buffer, meta=np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8), record_ids=ids,
                 keys=np.ascontiguousarray(self.keys, dtype=_U64))
        return buffer.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes) -> SignatureIndex:
        try:
            with np.load(io.BytesIO(data), allow_pickle=False) as stored:
                meta = json.loads(stored["meta"].tobytes())
                ids, keys = stored["record_ids"], stored["keys"]
            if meta.get("format") != INDEX_FORMAT:
                raise ValueError(f"index format {meta.get('format')}, this code reads {INDEX_FORMAT}")
            params = NearDupParams(**meta["params"])
        except (OSError, EOFError, AttributeError, KeyError, TypeError, ValueError, zipfile.BadZipFile) as exc:
            raise ValueError(f"not a near-duplicate index: {exc}") from exc
        if keys.shape != (len(ids), params.width) or keys.dtype != _U64:
            raise ValueError(f"not a near-duplicate index: keys {keys.shape} for {len(ids)} ids")
        return cls(ids if meta["ids"] == "hex16" else np.char.decode(ids, "utf-8"), keys, params)


@dataclass(frozen=True)
class NearDuplicate:
    record_id: str
    duplicate_of: str
    similarity: float
    """The exact Jaccard similarity of the two texts' 5-gram sets."""
    position: int = 0  # the record's position in the input
    published: bool = False  # whether duplicate_of is a published record (from ``against``), not one of the input


def _run_pairs(key: np.ndarray, member: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(later, earlier) for records sharing a key: each member of a run with the first MAX_PEERS before it."""
    order = np.lexsort((member, key))  # by key, then earliest record first
    key, member = key[order], member[order]
    run_start = np.flatnonzero(np.concatenate(([True], key[1:] != key[:-1])))
    run_of = np.repeat(np.arange(len(run_start)), np.diff(np.append(run_start, len(key))))
    peers = np.minimum(np.arange(len(key)) - run_start[run_of], MAX_PEERS)
    later = np.repeat(member, peers)
    first = np.repeat(run_start[run_of], peers)
    return later, member[first + np.arange(len(later)) - np.repeat(np.cumsum(peers) - peers, peers)]


def _candidates(prior: np.ndarray, keys: np.ndarray, params: NearDupParams) -> tuple[np.ndarray, np.ndarray]:
    """(later, earlier) pairs of records sharing a band key whose sketches agree enough, unique, sorted; records
    numbered prior first, then the batch. One band at a time (a sort of the batch's keys, cache-sized), touching
    only keys that occur twice, and published keys looked up in the sorted batch keys: no loop over records."""
    m, n = len(prior), len(keys)
    pairs = [np.empty(0, dtype=np.int64)]
    for band in range(params.bands):
        order = np.argsort(keys[:, band])
        ordered = keys[order, band]
        shared = np.zeros(n, dtype=bool)
        shared[1:] = ordered[1:] == ordered[:-1]
        shared[:-1] |= shared[1:]
        key, member = ordered[shared], order[shared] + m
        if m:
            published = prior[:, band]
            at = np.minimum(np.searchsorted(ordered, published), n - 1)
            hits = np.flatnonzero(ordered[at] == published)
            alone = np.unique(at[hits][~shared[at[hits]]])  # batch keys shared only with published records
            key = np.concatenate([published[hits], ordered[alone], key])
            member = np.concatenate([hits, order[alone] + m, member])
        later, earlier = _run_pairs(key, member)
        wanted = (later >= m) & (later != earlier)
        pairs.append(later[wanted] * (m + n) + earlier[wanted])
    unique, shared = np.unique(np.concatenate(pairs), return_counts=True)
    later, earlier = unique // (m + n), unique % (m + n)
    plausible = _sketches_agree(prior, keys, later, earlier, params)
    return _most_shared(later[plausible], earlier[plausible], shared[plausible])


def _sketches_agree(prior: np.ndarray, keys: np.ndarray, later: np.ndarray, earlier: np.ndarray,
                    params: NearDupParams) -> np.ndarray:
    """Whether each pair's sketches share at least ``params.min_agreement`` bytes (a chunk of pairs at a time)."""
    m, wanted, need = len(prior), np.empty(len(later), dtype=bool), params.min_agreement
    for start in range(0, len(later), _PAIRS_PER_CHUNK):
        mine, other = later[start:start + _PAIRS_PER_CHUNK], earlier[start:start + _PAIRS_PER_CHUNK]
        theirs = np.empty((len(other), SKETCH_WORDS), dtype=_U64)
        published = other < m
        theirs[published] = prior[other[published], params.bands:]
        theirs[~published] = keys[other[~published] - m, params.bands:]
        agreement = minhash.sketch_agreement(keys[mine - m, params.bands:], theirs)
        wanted[start:start + len(mine)] = agreement >= need
    return wanted


def _most_shared(later: np.ndarray, earlier: np.ndarray, shared: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Of each record's candidates, the MAX_CHECKS sharing the most bands (earliest first among equals), back in
    (later, earlier) order. A pair at the threshold shares about bands * t^rows bands (3.8 of 18 at 0.8), a chance
    collision one: ranking by shared bands keeps the true matches and bounds the exact checks per record, which
    otherwise grow with how alike a corpus's texts are (a low-vocabulary corpus shares many buckets)."""
    order = np.lexsort((earlier, -shared, later))
    later, earlier = later[order], earlier[order]
    starts = np.flatnonzero(np.concatenate(([True], later[1:] != later[:-1])))
    rank = np.arange(len(later)) - np.repeat(starts, np.diff(np.append(starts, len(later))))
    keep = rank < MAX_CHECKS
    later, earlier = later[keep], earlier[keep]
    back = np.lexsort((earlier, later))
    return later[back], earlier[back]


def find_near_duplicates(ids: Sequence[str], texts: Sequence[str], params: NearDupParams | None = None,
                         against: SignatureIndex | None = None,
                         against_texts: Callable[[list[str]], Mapping[str, str]] | Mapping[str, str] | None = None,
                         keys: np.ndarray | None = None) -> list[NearDuplicate]:
    """Every record whose text near-duplicates a record in ``against`` or an earlier record of the input.

    Greedy, in input order: a record is a duplicate of the first record it matches (similarity >= threshold)
    among the published ones in ``against`` (preferred: they are already labeled; earliest in the index first),
    else among the earlier records of the input that are kept -- so ``duplicate_of`` is always a survivor, and a
    record close only to a duplicate is kept (it is no longer close to anything kept). ``against_texts`` gives
    the texts of candidate published ids (a mapping, or a function called once with all of them, e.g. reading
    lakeFS); an id it lacks (erased) is no match. ``keys``: the batch's band keys, if already computed (e.g. for
    the index the batch will publish)."""
    params = params or NearDupParams()
    if len(ids) != len(texts):
        raise ValueError(f"{len(ids)} ids for {len(texts)} texts")
    stored = _hex_ids(ids)  # 16 bytes an id, not a Python string each: a batch has millions
    if len(np.unique(stored)) != len(stored):
        raise ValueError("record ids repeat; near-duplicates are reported by id")
    prior = against if against is not None and len(against) else SignatureIndex.empty(params)
    if prior.params.scheme != params.scheme:
        raise ValueError(f"the index was keyed with {prior.params.scheme} (bins, bands, rows, strip punctuation), "
                         f"not {params.scheme}; rebuild it")
    if len(prior) and against_texts is None:
        raise ValueError("checking against an index needs against_texts, the texts of its candidate records")
    if not ids:
        return []
    keys = text_keys(texts, params) if keys is None else keys
    later, earlier = _candidates(prior.keys, keys, params)
    if not later.size:
        return []
    m = len(prior)
    published_at = np.unique(earlier[earlier < m])
    published_ids = prior.ids(published_at.tolist())
    fetched: Mapping[str, str] = {}
    if published_ids:
        assert against_texts is not None
        fetched = against_texts if isinstance(against_texts, Mapping) else against_texts(published_ids)
    published = {i: (pid, fetched[pid]) for i, pid in zip(published_at.tolist(), published_ids, strict=True)
                 if pid in fetched}
    involved = np.unique(np.concatenate([later, earlier[earlier >= m]])).tolist()
    candidates = {i: texts[i - m] for i in involved}  # once each, in input order (a lazy sequence reads in order)
    return _greedy(later, earlier, m, ids, candidates, published, params)


def _greedy(later: np.ndarray, earlier: np.ndarray, m: int, ids: Sequence[str], texts: Mapping[int, str],
            published: dict[int, tuple[str, str]], params: NearDupParams) -> list[NearDuplicate]:
    """The exact checks of the candidate pairs, in input order, a block of records at a time. All of a block's
    checks (at most MAX_CHECKS a record, less those whose other record is already known to be a duplicate) are
    computed together, vectorised: computing one the greedy pass then skips costs less than computing the rest
    one at a time (Python sets were 70% of the time on a low-vocabulary corpus, whose texts share many keys)."""
    duplicate: set[int] = set()
    result: list[NearDuplicate] = []

    def text(i: int) -> str:
        return texts[i] if i >= m else published[i][1]

    firsts = np.flatnonzero(np.concatenate(([True], later[1:] != later[:-1]))).tolist() + [len(later)]
    for block in range(0, len(firsts) - 1, RECORDS_PER_BLOCK):
        lo, hi = firsts[block], firsts[min(block + RECORDS_PER_BLOCK, len(firsts) - 1)]
        pairs = [(r, o) for r, o in zip(later[lo:hi].tolist(), earlier[lo:hi].tolist(), strict=True)
                 if o not in duplicate and (o >= m or o in published)]
        needed = sorted({i for pair in pairs for i in pair})
        at = {i: position for position, i in enumerate(needed)}
        similarity = dict(zip(pairs, minhash.pair_similarities(
            [text(i) for i in needed], [at[r] for r, _ in pairs], [at[o] for _, o in pairs],
            params.strip_punctuation).tolist(), strict=True))
        for record, group in groupby(pairs, key=itemgetter(0)):
            for _, other in group:
                other_id = published[other][0] if other < m else ids[other - m]
                if other in duplicate or other_id == ids[record - m]:
                    continue  # a duplicate is no original; a published copy of the record itself is no match
                score = similarity[record, other]
                if score >= params.threshold:
                    duplicate.add(record)
                    result.append(NearDuplicate(ids[record - m], other_id, score, record - m, other < m))
                    break
    return result
