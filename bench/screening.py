"""Screening cost: prompts per second and added latency per request with a 10,000-term lexicon on
700-character prompts, beside the shipped default lexicon; and the output classifier's cost per clip.

    PYTHONPATH=src python bench/screening.py [--prompts 300] [--baseline REV] [--rounds 3] [--write]

`--baseline REV` measures the screening code of another commit in the same run (its `src/` extracted
with `git archive` and timed by this same script in a child process), alternating rounds with this
tree's code and keeping each side's best round, so the before/after ratio shares the machine's load.

The lexicon is synthetic (seeded): half Latin pseudo-words and phrases, half Chinese terms of 2–4
characters, 5% of them `allow`. Prompts mix English and Chinese text with a few planted terms and
evasions (separators, leetspeak, full-width letters), so matches and boundary checks are exercised.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import random
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import git_revision, machine  # noqa: E402

from vidfactory.safety.frames import nsfw_classifier, screen_frames  # noqa: E402
from vidfactory.safety.lexicon import Entry, default_lexicon  # noqa: E402
from vidfactory.safety.screen import Screener, prepare, screen_text  # noqa: E402

lexicon_terms = 10_000
prompt_chars = 700
han_pool = ("的一是在不了有和人这中大为上个国我以要他时来用们生到作地于出就分对成会可主发年动同工也能下过子说产种面"
            "而方后多定行学法所民得经十三之进着等部度家电力里如水化高自二理起小物现实加量都两体制机当使点从业本去把性好应开它")
# Lexicon terms are drawn from characters the prompt text mostly does not use, as real deny-lists are
# made of words that benign prompts rarely contain; planted terms and a shared tail keep some hits.
han_term_pool = "赌毒枪炸弹杀血腥裸暴恐袭劫绑骗淫娼嫖赃贿尸砍斩屠虐殴抢窃谋叛爆械弩匕刺狙药瘾麻冰海洛因" + han_pool[-10:]
latin_letters = "abcdefghijklmnopqrstuvwxyz"
categories = ("violence", "weapons", "drugs", "sexual", "hate", "fraud", "brand", "custom")
english_words = ("a slow tracking shot of a lighthouse over a stormy sea with gulls and rain cinematic soft light "
                 "warm tones product close up on a marble table studio lighting bokeh people walking in a market").split()


def synthetic_lexicon(rng: random.Random, size: int) -> list[Entry]:
    entries: dict[str, Entry] = {}
    while len(entries) < size:
        if rng.random() < 0.5:
            words = ["".join(rng.choice(latin_letters) for _ in range(rng.randint(4, 9)))
                     for _ in range(rng.choice((1, 1, 1, 2)))]
            term = " ".join(words)
        else:
            term = "".join(rng.choice(han_term_pool) for _ in range(rng.randint(2, 4)))
        action = "allow" if rng.random() < 0.05 else rng.choice(("block", "review"))
        entries.setdefault(term, Entry(term, rng.choice(categories), action))
    return list(entries.values())


def evade(term: str, rng: random.Random) -> str:
    style = rng.randrange(3)
    if style == 0:
        return ".".join(term)
    if style == 1:
        return term.translate(str.maketrans("aeio", "4310"))
    return "".join(chr(ord(c) + 0xFEE0) if "a" <= c <= "z" else c for c in term)


def synthetic_prompts(rng: random.Random, lexicon: list[Entry], count: int) -> list[str]:
    prompts = []
    for _ in range(count):
        parts: list[str] = []
        while sum(map(len, parts)) < prompt_chars:
            roll = rng.random()
            if roll < 0.02:
                parts.append(evade(rng.choice(lexicon).term, rng))
            elif roll < 0.5:
                parts.append(" ".join(rng.choice(english_words) for _ in range(rng.randint(3, 8))))
            else:
                parts.append("".join(rng.choice(han_pool) for _ in range(rng.randint(5, 15))) + "，")
        prompts.append(" ".join(parts)[:prompt_chars])
    return prompts


def timed(function, items) -> list[float]:
    durations = []
    for item in items:
        start = time.perf_counter()
        function(item)
        durations.append(time.perf_counter() - start)
    return durations


def summary(durations: list[float]) -> tuple[float, float, float, float]:
    ordered = sorted(durations)
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
    return len(durations) / sum(durations), statistics.mean(durations) * 1e3, statistics.median(durations) * 1e3, p99 * 1e3


def measure(prompts_count: int) -> dict:
    """Prompts per second for both lexicons (full screen, matching only) and for normalisation alone."""
    rng = random.Random(20261202)
    big = synthetic_lexicon(rng, lexicon_terms)
    prompts = synthetic_prompts(rng, big, prompts_count)
    assert all(len(p) == prompt_chars for p in prompts)
    rows = []
    for name, entries in (("default (shipped)", default_lexicon()), (f"synthetic {lexicon_terms:,}", big)):
        start = time.perf_counter()
        screener = Screener(entries)
        compile_s = time.perf_counter() - start
        screen_text(prompts[0], [screener])  # warm the per-character caches once
        full = summary(timed(lambda p: screen_text(p, [screener]), prompts))
        prepared = [prepare(p) for p in prompts]
        match_only = summary(timed(screener.matches, prepared))
        flagged = sum(screen_text(p, [screener]).action != "pass" for p in prompts)
        rows.append((name, len(entries), compile_s, full, match_only, flagged))
    return {"rows": rows, "normalise": summary(timed(prepare, prompts))}


def measure_baseline(revision: str, prompts_count: int) -> dict:
    root = Path(__file__).resolve().parent.parent
    with tempfile.TemporaryDirectory() as tmp:
        archive = subprocess.run(["git", "-C", str(root), "archive", revision, "src"], check=True,
                                 capture_output=True).stdout
        with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
            tar.extractall(tmp, filter="data")
        env = {**os.environ, "PYTHONPATH": str(Path(tmp) / "src")}
        out = subprocess.run([sys.executable, __file__, "--json", "--prompts", str(prompts_count)], env=env,
                             check=True, capture_output=True, text=True).stdout
    return json.loads(out)


def best(runs: list[dict]) -> dict:
    """Each figure's best round: contention only ever slows a round down."""
    def pick(index: int) -> tuple:
        return max((r["rows"][index] for r in runs), key=lambda row: row[3][0])
    return {"rows": [pick(0), pick(1)], "normalise": max((r["normalise"] for r in runs), key=lambda n: n[0])}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--prompts", type=int, default=300)
    parser.add_argument("--baseline", help="a commit whose screening code is measured side by side")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json", action="store_true", help=argparse.SUPPRESS)  # a baseline child's answer
    parser.add_argument("--write", action="store_true", help="append the table to bench/RESULTS.md")
    args = parser.parse_args()
    if args.json:
        print(json.dumps(measure(args.prompts)))
        return
    ours, theirs = [], []
    for _ in range(args.rounds if args.baseline else 1):
        ours.append(measure(args.prompts))
        if args.baseline:
            theirs.append(measure_baseline(args.baseline, args.prompts))
    result = best(ours)
    rows, normalise_only = result["rows"], result["normalise"]

    frames = np.random.default_rng(0).integers(0, 256, (81, 480, 832, 3), dtype=np.uint8)
    classifier = nsfw_classifier()
    screen_frames(frames, classifier, threshold=0.8, samples=1)
    clip_ms = {samples: statistics.median(timed(lambda _: screen_frames(frames, classifier, threshold=0.8,
                                                                        samples=samples), range(3))) * 1e3
               for samples in (1, 8)}

    lines = [
        f"Machine: screening — {machine()}, commit {git_revision()}, {args.prompts} prompts of {prompt_chars} "
        "characters (English and Chinese mixed, ~2% planted evasions), one thread",
        "",
        "| lexicon | terms | compile s | prompts/s (full screen) | mean ms | p50 ms | p99 ms | "
        "matching only, prompts/s | prompts flagged |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, size, compile_s, full, match_only, flagged in rows:
        lines.append(f"| {name} | {size:,} | {compile_s:.2f} | {full[0]:,.0f} | {full[1]:.2f} | {full[2]:.2f} | "
                     f"{full[3]:.2f} | {match_only[0]:,.0f} | {flagged}/{args.prompts} |")
    lines += [
        "",
        f"Normalisation alone (NFKC, OpenCC, leet, separators): {normalise_only[0]:,.0f} prompts/s, "
        f"mean {normalise_only[1]:.3f} ms. Ratio 10k-term / default full-screen time: "
        f"{rows[1][3][1] / rows[0][3][1]:.2f}×.",
    ]
    if args.baseline:
        before = best(theirs)
        lines.append(
            f"Side by side with commit {args.baseline} (best of {args.rounds} alternating rounds each): full screen "
            f"with {lexicon_terms:,} terms {before['rows'][1][3][0]:,.0f} → {rows[1][3][0]:,.0f} prompts/s "
            f"(×{rows[1][3][0] / before['rows'][1][3][0]:.1f}), with the default lexicon "
            f"{before['rows'][0][3][0]:,.0f} → {rows[0][3][0]:,.0f} (×{rows[0][3][0] / before['rows'][0][3][0]:.1f}); "
            f"normalisation {before['normalise'][0]:,.0f} → {normalise_only[0]:,.0f} "
            f"(×{normalise_only[0] / before['normalise'][0]:.1f}). Median prompt with {lexicon_terms:,} terms: "
            f"{before['rows'][1][3][2]:.3f} → {rows[1][3][2]:.3f} ms (×{before['rows'][1][3][2] / rows[1][3][2]:.1f}), "
            f"i.e. {1e3 / before['rows'][1][3][2]:,.0f} → {1e3 / rows[1][3][2]:,.0f} prompts/s undisturbed.")
    lines.append(f"Output screening (open_nsfw via onnxruntime, 832×480 frames): 1 frame {clip_ms[1]:.0f} ms, "
                 f"8 sampled frames (the default) {clip_ms[8]:.0f} ms per clip.")
    text = "\n".join(lines)
    print(text)
    if args.write:
        results = Path(__file__).resolve().parent / "RESULTS.md"
        heading = "## Screening: prompt lexicon and output classifier (`bench/screening.py`)"
        results.write_text(results.read_text(encoding="utf-8").rstrip() + f"\n\n{heading}\n\n{text}\n", encoding="utf-8")


if __name__ == "__main__":
    main()
