"""Near-duplicate detection: Trainyard's engine against datasketch's MinHash + MinHashLSH, on one seeded corpus.

    .venv/bin/python bench/dedup.py --docs 100000 --datasketch-docs 20000

The corpus is random prose (~300 characters a text, Zipf-distributed pseudo-words) in which a share of the texts
are planted variants of an earlier text: typos, punctuation edits, spacing edits, inserted, deleted and replaced
words, a rotation (a prefix moved to the end), or two of those at once; each knows its source. The ground truth is
exact: within each family of planted texts, greedy in input order as the engine works (a text is a duplicate if
its 5-gram Jaccard similarity with an earlier surviving text is >= the threshold); unrelated random texts share
almost no 5-grams, and every reported pair outside a family is checked exactly too.

Both sides get the same shingles (the engine's normalisation and 5-grams) and the same exact check of candidates,
and run in their own subprocess; a side's peak memory is its peak RSS during the run (Linux's VmHWM, reset just
before) minus its RSS before. datasketch:
MinHash(num_perm=128) over the shingles with ``update_batch`` (``MinHash.bulk``), MinHashLSH(threshold,
num_perm=128) with its default weights; each text is queried, the candidates checked earliest first, and it is
inserted if it survives. Docs/s compare both on the same first ``--datasketch-docs`` texts.
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from dagster_project.devservices.sample_data import zipf_vocabulary  # noqa: E402
from dagster_project.stages.minhash import jaccard, shingles  # noqa: E402
from dagster_project.stages.neardup import (  # noqa: E402
    NearDupParams,
    find_near_duplicates,
    normalised_texts,
    signatures,
)

KINDS = ("typo", "punctuation", "spacing", "insertion", "deletion", "replacement", "rotation", "mixed")


def _prose(rng: random.Random, words: list[str], weights: list[float]) -> str:
    target, sentences = rng.randint(220, 380), []
    while sum(len(s) + 1 for s in sentences) < target:
        picked = rng.choices(words, cum_weights=weights, k=rng.randint(5, 14))
        if rng.random() < 0.15:
            picked[rng.randrange(len(picked))] = str(rng.randint(2, 9999))
        for i in range(1, len(picked) - 1):
            if rng.random() < 0.08:
                picked[i] += ","
        sentences.append(" ".join(picked).capitalize() + rng.choice(".....?!"))
    return " ".join(sentences)


def _words_edit(rng: random.Random, text: str, kind: str, words: list[str]) -> str:
    tokens = text.split(" ")
    k = rng.randint(1, max(1, len(tokens) // 12))
    for _ in range(k):
        at = rng.randrange(len(tokens))
        if kind == "insertion":
            tokens[at:at] = rng.sample(words[:2000], rng.randint(1, 3))
        elif kind == "deletion" and len(tokens) > 5:
            del tokens[at:at + rng.randint(1, 2)]
        elif kind == "replacement":
            tokens[at] = rng.choice(words)
    return " ".join(tokens)


def _edit(rng: random.Random, text: str, kind: str, words: list[str]) -> str:
    chars = list(text)
    if kind == "typo":
        for _ in range(rng.randint(1, 4)):
            at = rng.randrange(len(chars) - 1)
            op = rng.randrange(3)
            if op == 0:
                chars[at] = rng.choice("abcdefghijklmnopqrstuvwxyz")
            elif op == 1:
                chars[at], chars[at + 1] = chars[at + 1], chars[at]
            else:
                del chars[at]
        return "".join(chars)
    if kind == "punctuation":
        for _ in range(rng.randint(3, 10)):
            marks = [i for i, c in enumerate(chars) if c in ",.?!"]
            spaces = [i for i, c in enumerate(chars) if c == " "]
            if marks and rng.random() < 0.6:
                at = rng.choice(marks)
                chars[at] = rng.choice(["", ";", "!", "...", " -", ":"])
            elif spaces:
                chars[rng.choice(spaces)] = rng.choice([", ", " - ", "; ", " (", ") "])
        return "".join(chars)
    if kind == "spacing":
        for _ in range(rng.randint(3, 12)):
            spaces = [i for i, c in enumerate(chars) if c == " "]
            at = rng.choice(spaces)
            chars[at] = rng.choice(["  ", "\n", "\t", " \n ", ""]) if rng.random() < 0.8 else " " + chars[at]
        marks = [i for i, c in enumerate(chars) if c in ",."]
        for at in rng.sample(marks, min(len(marks), rng.randint(0, 3))):
            chars[at] = " " + chars[at]
        return "".join(chars)
    if kind == "rotation":
        cut = text.find(" ", int(len(text) * rng.uniform(0.1, 0.45)))
        return text[cut + 1:] + " " + text[:cut] if cut > 0 else text
    if kind == "mixed":
        first, second = rng.sample(KINDS[:-1], 2)
        return _edit(rng, _edit(rng, text, first, words), second, words)
    return _words_edit(rng, text, kind, words)


def make_corpus(docs: int, seed: int, planted: float = 0.15) -> tuple[list[str], list[int], list[str]]:
    """Texts, each one's source (-1: original) and kind of edit."""
    rng = random.Random(seed)
    words, weights = zipf_vocabulary(rng)
    texts: list[str] = []
    sources: list[int] = []
    kinds: list[str] = []
    for i in range(docs):
        if i > 10 and rng.random() < planted:
            source, kind = rng.randrange(i), rng.choice(KINDS)
            texts.append(_edit(rng, texts[source], kind, words))
        else:
            source, kind = -1, "original"
            texts.append(_prose(rng, words, weights))
        sources.append(source)
        kinds.append(kind)
    return texts, sources, kinds


def families(sources: list[int]) -> list[int]:
    """Each text's original (itself for an original text)."""
    root = list(range(len(sources)))
    for i, source in enumerate(sources):
        if source >= 0:
            root[i] = root[source]
    return root


def ground_truth(texts: list[str], sources: list[int], params: NearDupParams) -> dict[int, int]:
    """record -> the earlier surviving record it duplicates, greedy in input order within each planted family."""
    root = families(sources)
    grouped: dict[int, list[int]] = {}
    for i, r in enumerate(root):
        grouped.setdefault(r, []).append(i)
    members = [i for family in grouped.values() if len(family) > 1 for i in family]
    shingled = dict(zip(members, map(shingles, normalised_texts([texts[i] for i in members], params)), strict=True))
    truth: dict[int, int] = {}
    for family in grouped.values():
        kept: list[int] = []
        for i in family:
            match = next((k for k in kept if jaccard(shingled[i], shingled[k]) >= params.threshold), None)
            if match is None:
                kept.append(i)
            else:
                truth[i] = match
    return truth


def run_trainyard(texts: list[str], params: NearDupParams) -> dict[str, object]:
    ids = [f"{i:032x}" for i in range(len(texts))]
    started = time.perf_counter()
    signatures(texts, params)
    signature_seconds = time.perf_counter() - started
    started = time.perf_counter()
    found = find_near_duplicates(ids, texts, params)
    return {"seconds": time.perf_counter() - started, "signature_seconds": signature_seconds,
            "pairs": [[int(d.record_id, 16), int(d.duplicate_of, 16)] for d in found]}


def run_datasketch(texts: list[str], params: NearDupParams) -> dict[str, object]:
    from datasketch import MinHash, MinHashLSH

    started = time.perf_counter()
    sets = [shingles(t) for t in normalised_texts(texts, params)]
    hashes = MinHash.bulk([[s.encode("utf-8") for s in shingle_set] for shingle_set in sets], num_perm=128)
    lsh = MinHashLSH(threshold=params.threshold, num_perm=128)
    pairs, checked = [], 0
    for i, minhash in enumerate(hashes):
        match = None
        for candidate in sorted(lsh.query(minhash)):
            checked += 1
            if jaccard(sets[i], sets[candidate]) >= params.threshold:
                match = candidate
                break
        if match is None:
            lsh.insert(i, minhash)
        else:
            pairs.append([i, match])
    return {"seconds": time.perf_counter() - started, "pairs": pairs, "bands_rows": [lsh.b, lsh.r]}


def _status_kib(field: str) -> int:
    line = next(line for line in Path("/proc/self/status").read_text().splitlines() if line.startswith(field))
    return int(line.split()[1])


def _side(args: argparse.Namespace) -> None:
    """One side, in this process: read the corpus, run, print JSON with the time and the peak memory."""
    with open(args.corpus) as lines:
        texts = [json.loads(line) for line, _ in zip(lines, range(args.docs), strict=False)]
    params = NearDupParams.for_threshold(args.threshold, args.bins, strip_punctuation=not args.keep_punctuation)
    started = time.perf_counter()
    (run_trainyard if args.side == "trainyard" else run_datasketch)(texts[:10], params)  # one-off set-up
    warm_up = time.perf_counter() - started
    Path("/proc/self/clear_refs").write_text("5")  # resets the peak RSS (VmHWM) to the current RSS
    before = _status_kib("VmRSS")
    result = (run_trainyard if args.side == "trainyard" else run_datasketch)(texts, params)
    result["warm_up"] = warm_up
    result["peak_mib"] = (_status_kib("VmHWM") - before) / 1024
    print(json.dumps(result))


def _spawn(corpus: Path, side: str, docs: int, args: argparse.Namespace, *extra: str) -> dict:
    command = [sys.executable, __file__, "--side", side, "--corpus", str(corpus), "--docs", str(docs),
               "--threshold", str(args.threshold), "--bins", str(args.bins), *extra]
    return json.loads(subprocess.run(command, check=True, capture_output=True, text=True).stdout)


def _score(pairs: list[list[int]], truth: dict[int, int], normal: list[str], root: list[int], threshold: float,
           docs: int) -> tuple[float, float, int]:
    """(precision, recall, pairs across planted families): a reported pair is right if its exact similarity is
    >= threshold; recall is over the truth's duplicates among the first ``docs`` texts."""
    truth = {k: v for k, v in truth.items() if k < docs}
    right = sum(jaccard(shingles(normal[a]), shingles(normal[b])) >= threshold for a, b in pairs)
    found = {a for a, _ in pairs} & set(truth)
    return right / max(len(pairs), 1), len(found) / max(len(truth), 1), sum(root[a] != root[b] for a, b in pairs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--docs", type=int, default=100_000)
    parser.add_argument("--datasketch-docs", type=int, default=20_000, help="texts datasketch runs on (slow)")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--threshold", type=float, default=0.8)
    parser.add_argument("--bins", type=int, default=128, help="Trainyard's signature size (K)")
    parser.add_argument("--keep-punctuation", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--side", choices=("trainyard", "datasketch"), help=argparse.SUPPRESS)
    parser.add_argument("--corpus", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.side:
        _side(args)
        return
    started = time.perf_counter()
    texts, sources, kinds = make_corpus(args.docs, args.seed)
    params = NearDupParams.for_threshold(args.threshold, args.bins)
    truth = ground_truth(texts, sources, params)
    normal = normalised_texts(texts, params)
    root = families(sources)
    small = min(args.datasketch_docs, args.docs)
    print(f"corpus: {args.docs} texts (seed {args.seed}, mean {sum(map(len, texts)) / len(texts):.0f} chars), "
          f"{sum(k != 'original' for k in kinds)} planted variants, {len(truth)} duplicates at Jaccard >= "
          f"{args.threshold} (ground truth), built in {time.perf_counter() - started:.1f}s")
    print(f"machine: {platform.machine()}, {platform.python_implementation()} {platform.python_version()}, "
          f"{len(__import__('os').sched_getaffinity(0))} cores")
    print(f"trainyard: K={params.num_bins} bins, {params.bands} bands x {params.rows} rows; "
          f"datasketch: num_perm=128, MinHashLSH defaults")
    with tempfile.TemporaryDirectory() as tmp:
        corpus = Path(tmp) / "corpus.jsonl"
        corpus.write_text("".join(json.dumps(text) + "\n" for text in texts))
        full = _spawn(corpus, "trainyard", args.docs, args)
        runs = [("trainyard", args.docs, full),
                ("trainyard", small, full if small == args.docs else _spawn(corpus, "trainyard", small, args)),
                ("datasketch", small, _spawn(corpus, "datasketch", small, args))]
        kept = _spawn(corpus, "trainyard", args.docs, args, "--keep-punctuation")
    print(f"{'engine':<12}{'docs':>9}{'seconds':>9}{'docs/s':>10}{'peak MiB':>10}{'precision':>11}{'recall':>8}"
          f"{'across':>8}")
    for name, docs, result in runs[:1] + runs[1 + (small == args.docs):]:
        precision, recall, across = _score(result["pairs"], truth, normal, root, args.threshold, docs)
        print(f"{name:<12}{docs:>9}{result['seconds']:>9.2f}{docs / result['seconds']:>10,.0f}"
              f"{result['peak_mib']:>10.0f}{precision:>11.4f}{recall:>8.4f}{across:>8}")
    print("precision: reported pairs whose exact similarity is >= the threshold; recall: of the ground truth's "
          "duplicates, those reported; across: reported pairs of texts from different families (unrelated)")
    print(f"trainyard signatures alone: {args.docs / runs[0][2]['signature_seconds']:,.0f} docs/s; one-off set-up "
          f"(Unicode tables) {runs[0][2]['warm_up']:.2f}s, not in the times above; datasketch bands x rows "
          f"{runs[2][2]['bands_rows']}")
    print(f"throughput ratio on the same {small} docs: {runs[2][2]['seconds'] / runs[1][2]['seconds']:.1f}x")
    flagged = {a for a, _ in runs[0][2]["pairs"]}
    flagged_kept = {a for a, _ in kept["pairs"]}
    print("planted variants flagged, by kind (punctuation as spaces | punctuation kept; Jaccard with the source "
          ">= threshold):")
    for kind in KINDS:
        planted = [i for i, k in enumerate(kinds) if k == kind]
        close = sum(jaccard(shingles(normal[i]), shingles(normal[sources[i]])) >= args.threshold for i in planted)
        print(f"  {kind:<12}{len(planted):>7}  flagged {sum(i in flagged for i in planted) / len(planted):>6.1%} | "
              f"{sum(i in flagged_kept for i in planted) / len(planted):>6.1%}   close to source "
              f"{close / len(planted):.1%}")
    print(f"kinds: {dict(Counter(kinds))}")


if __name__ == "__main__":
    main()
