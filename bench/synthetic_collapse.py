"""Model collapse, replace vs accumulate: held-out real-text loss of each generation of a tiny LM fed its own samples.

    python bench/synthetic_collapse.py                  # 3 seeds x 5 generations, both arms (~3-4.5 min per seed)
    python bench/synthetic_collapse.py --seeds 5 --generations 8

Per seed, ``run_arms`` (pipeline_assets/synthetic/collapse.py) trains generation 0 on ``--train-rows`` stdlib
docstring lines, then each later generation a fresh model on, ``replace``: the rows sampled (temperature 1.0,
no truncation) from the previous generation's model; ``accumulate``: the real rows plus every generation's
samples so far. Every generation is scored on the same held-out docstring lines: mean cross-entropy in nats
per character-token (EOS included). Printed: the loss per seed and generation for each arm, the mean over
seeds, each arm's last-generation change from generation 0, and the mean length of the rows each generation
sampled (replace shortens them).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipeline_assets.synthetic.collapse import (  # noqa: E402
    GENERATIONS,
    HELDOUT_ROWS,
    MODES,
    TRAIN_ROWS,
    CollapseConfig,
    real_split,
    run_arms,
)


def _table(results: dict[int, dict[str, list[dict]]], mode: str, generations: int) -> list[str]:
    head = " | ".join(f"gen {g}" for g in range(generations))
    lines = [f"| {mode} seed | {head} | last - gen 0 |", "|---" * (generations + 2) + "|"]
    losses = {seed: [r["heldout_loss"] for r in arms[mode]] for seed, arms in results.items()}
    for seed, row in losses.items():
        lines.append(f"| {seed} | " + " | ".join(f"{x:.3f}" for x in row) + f" | {row[-1] - row[0]:+.3f} |")
    cols = list(zip(*losses.values(), strict=True))
    mean = [statistics.fmean(c) for c in cols]
    spread = [f"{m:.3f} ({min(c):.3f}-{max(c):.3f})" for m, c in zip(mean, cols, strict=True)]
    deltas = [row[-1] - row[0] for row in losses.values()]
    lines.append("| mean (min-max) | " + " | ".join(spread)
                 + f" | {statistics.fmean(deltas):+.3f} ({min(deltas):+.3f} to {max(deltas):+.3f}) |")
    if generations < 2:
        return lines
    chars = [statistics.fmean(arms[mode][g]["sample_chars"] for arms in results.values())
             for g in range(generations - 1)]
    lines.append(f"\n{mode}: mean characters per sampled row, generations 0..{generations - 2}: "
                 + " ".join(f"{c:.1f}" for c in chars))
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=3, help="seeds 0..N-1")
    parser.add_argument("--generations", type=int, default=GENERATIONS,
                        help="generations per arm, generation 0 included")
    parser.add_argument("--train-rows", type=int, default=TRAIN_ROWS, help="real training rows (= samples per "
                        "generation)")
    parser.add_argument("--heldout-rows", type=int, default=HELDOUT_ROWS, help="held-out real rows")
    parser.add_argument("--steps", type=int, default=CollapseConfig.steps, help="optimizer steps per generation")
    parser.add_argument("--threads", type=int, default=CollapseConfig.threads, help="torch threads")
    args = parser.parse_args()
    cfg = CollapseConfig(steps=args.steps, threads=args.threads)
    train, heldout = real_split(args.train_rows, args.heldout_rows)
    print(f"{len(train)} real training rows, {len(heldout)} held-out rows; {args.generations} generations; "
          f"model {cfg.layers}x{cfg.hidden}, {cfg.steps} steps of {cfg.batch_size} rows per generation\n")
    results, walls = {}, {}
    for seed in range(args.seeds):
        t = time.perf_counter()
        results[seed] = run_arms(train, heldout, generations=args.generations, seed=seed, config=cfg)
        walls[seed] = time.perf_counter() - t
        print(f"seed {seed}: {walls[seed]:.0f} s (both arms, generation 0 shared)", flush=True)
    print("\nheld-out real loss, nats per character-token\n")
    for mode in MODES:
        print("\n".join(_table(results, mode, args.generations)) + "\n")
    gap = [arms["replace"][-1]["heldout_loss"] - arms["accumulate"][-1]["heldout_loss"] for arms in results.values()]
    print(f"last generation, replace - accumulate: min {min(gap):+.3f}, mean {statistics.fmean(gap):+.3f}")


if __name__ == "__main__":
    main()
