"""The health check on healthy and provoked runs, over seeds: what each run names, and how close each came to
each threshold (the margins behind conf/health/default.yaml; docs/diagnosis.md).

    python benchmarks/health.py                                  # every run below, seeds 1 2 3
    python benchmarks/health.py --runs default infogan --seeds 1 2 3 4 5
    python benchmarks/health.py --read outputs/train/runs/*      # the same table for finished runs' folders

Healthy: the default run and `model=infogan`, as `python -m src.train [model=infogan] seed=<s>` runs them.
Provoked: `minimax` (the default run with the saturating loss: its D is strong enough to leave G no gradient),
`noise_blind` (the default run with a generator that gets the same noise for every sample: `--runs` only, it is
patched in here), `lr1e4` (learning rates 1e4 with the loss guard off, the run the issue reported).
CPU, 2 cores: ~2 minutes a default run, ~3 an InfoGAN run, under a minute each provoked run.
"""

from __future__ import annotations

import argparse
import csv
import math
import statistics
import sys
import tempfile
from pathlib import Path

import torch
from omegaconf import OmegaConf

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from src.callbacks.health import Context, Diagnosis, read_events, swings  # noqa: E402
from src.train import train  # noqa: E402
from src.utils.compose import compose_config  # noqa: E402

MINIMAX = ["loss=minimax"]  # the default D is strong enough: the saturating loss leaves G no gradient
RUNS = {
    "default": [],
    "infogan": ["model=infogan"],
    "minimax": MINIMAX,
    "noise_blind": ["trainer.max_steps=400"],
    "lr1e4": [
        "model.optimizer_d.lr=1e4",
        "model.optimizer_g.lr=1e4",
        "model.max_loss=null",
        "model.on_nonfinite=skip",
        "trainer.max_steps=200",
    ],
}
HEALTH = OmegaConf.load(ROOT / "conf" / "health" / "default.yaml")


def ignore_noise(model) -> None:
    forward = model.generator.forward
    model.generator.forward = lambda z, *rest, **kw: forward(torch.zeros_like(z), *rest, **kw)


def read(run: Path) -> tuple[list[tuple[int, dict]], list[tuple[int, dict]]]:
    """(training rows, validation rows) of a run's csv/metrics.csv, as (G step, {key: value})."""
    train_rows, val_rows = [], []
    with open(run / "csv" / "metrics.csv") as f:
        for row in csv.DictReader(f):
            values = {k: float(v) for k, v in row.items() if v not in ("", None) and k != "step"}
            step = int(float(row["step"]))
            if "train/d_acc" in values:
                train_rows.append((step, values))
            if any(k.startswith("val/") for k in values):
                val_rows.append((step, values))
    return train_rows, val_rows


def windows(rows: list, steps: int, every: int, warmup: int):
    n = max(3, -(-steps // every))
    for i in range(n - 1, len(rows)):
        if rows[i][0] >= warmup:
            yield [r for _, r in rows[i - n + 1 : i + 1]]


def margins(run: Path) -> dict[str, float]:
    """How close the run came to each detector's threshold (the same windows as the detectors)."""
    rows, val = read(run)
    det, warmup, window = HEALTH.detectors, HEALTH.warmup, HEALTH.window
    every = rows[1][0] - rows[0][0] if len(rows) > 1 else 1
    out: dict[str, float] = {}
    peak, ratios = 0.0, []
    n = max(3, -(-window // every))
    for i, (step, _) in enumerate(rows):
        grads = [r["train/g_grad_norm"] for _, r in rows[max(0, i - 2) : i + 1]]
        if len(grads) == 3 and all(math.isfinite(g) for g in grads):
            peak = max(peak, statistics.median(grads))
        if i >= n - 1 and step >= warmup and peak > 0:
            win = [r for _, r in rows[i - n + 1 : i + 1]]
            if statistics.fmean(r["train/d_acc"] for r in win) >= det.vanishing_gradients.d_acc:
                ratios.append(statistics.median(r["train/g_grad_norm"] for r in win) / peak)
    out["G grad / peak, D acc >= 0.95"] = min(ratios, default=float("nan"))
    out["window max of diversity"] = min(
        (max(r.get("train/diversity", 9) for r in w) for w in windows(rows, window, every, warmup)),
        default=float("nan"),
    )
    stuck = det.stuck.window
    out["window min of D acc"] = max(
        (min(r["train/d_acc"] for r in w) for w in windows(rows, stuck, every, warmup)), default=float("nan")
    )
    out["D acc swings"] = max(
        (
            swings([r["train/d_acc"] for r in w], det.oscillation.swing)
            for w in windows(rows, det.oscillation.window, every, warmup)
        ),
        default=0,
    )
    keys = ("train/d_loss", "train/g_loss", "train/d_grad_norm", "train/g_grad_norm")
    out["largest |value| / first"] = max(
        max(abs(r[k]) for _, r in rows if k in r and math.isfinite(r[k])) / max(abs(rows[0][1][k]), 1e-3)
        for k in keys
        if k in rows[0][1] and math.isfinite(rows[0][1][k])
    )
    late = [(s, r) for s, r in val if s >= det.mode_collapse.eval_warmup]
    pairs = list(zip(late, late[1:]))
    if any("val/class_kl" in r for _, r in late):
        out["class KL, 2 evaluations"] = max(
            (min(a["val/class_kl"], b["val/class_kl"]) for (_, a), (_, b) in pairs), default=float("nan")
        )
    if any("val/within_diversity" in r for _, r in late):
        out["within diversity, 2 evaluations"] = min(
            (max(a["val/within_diversity"], b["val/within_diversity"]) for (_, a), (_, b) in pairs),
            default=float("nan"),
        )
    return out


def replay(run: Path) -> list:
    """What the shipped thresholds name on the run's csv/metrics.csv (for runs made before a threshold changed)."""
    rows, val = read(run)
    every = rows[1][0] - rows[0][0] if len(rows) > 1 else 1
    detectors = OmegaConf.to_container(HEALTH.detectors)
    diagnosis = Diagnosis(every, HEALTH.warmup, HEALTH.window, detectors)
    config = OmegaConf.load(run / "csv" / "hparams.yaml") if (run / "csv" / "hparams.yaml").is_file() else {}
    loss = str(OmegaConf.select(config, "loss._target_", default="")).rsplit(".", 1)[-1].lower()
    critic = any("train/wasserstein" in r for _, r in rows)
    diagnosis.context = Context(
        loss=loss, critic=critic, config=OmegaConf.to_container(config) if config else {}
    )
    events = []
    for step, values in sorted(
        [(s, ("train", r)) for s, r in rows] + [(s, ("val", r)) for s, r in val],
        key=lambda x: (x[0], x[1][0] == "val"),
    ):
        kind, r = values
        if kind == "train":
            events += diagnosis.train(step, {k: v for k, v in r.items() if k.startswith("train/")})
        else:
            events += diagnosis.validate(step, {k: v for k, v in r.items() if k.startswith("val/")})
    return events


THRESHOLDS = {
    "G grad / peak, D acc >= 0.95": f"> {HEALTH.detectors.vanishing_gradients.grad_ratio}",
    "window max of diversity": f">= {HEALTH.detectors.mode_collapse.diversity}",
    "window min of D acc": f"< {HEALTH.detectors.stuck.high}",
    "D acc swings": f"< {HEALTH.detectors.oscillation.swings}",
    "largest |value| / first": f"< {HEALTH.detectors.divergence.growth:g} (and rising)",
    "class KL, 2 evaluations": f"<= {HEALTH.detectors.mode_collapse.class_kl}",
    "within diversity, 2 evaluations": f">= {HEALTH.detectors.mode_collapse.within_diversity}",
}


def print_table(results: list[tuple[str, Path]]) -> None:
    cols = list(THRESHOLDS)
    print("| run | named during the run | named by these thresholds (replayed) | " + " | ".join(cols) + " |")
    print("|---|---|---|" + "---|" * len(cols))
    print("| healthy if | none | none | " + " | ".join(THRESHOLDS[c] for c in cols) + " |")
    for name, run in results:
        if not (run / "csv" / "metrics.csv").is_file():
            print(f"| {name} | " + "; ".join(e["title"] for e in read_events(run)) + " | (nothing logged) |")
            continue
        named = "; ".join(f"{e['title']} @ {e['step']}" for e in read_events(run)) or "none"
        again = "; ".join(f"{e.title} @ {e.step}" for e in replay(run)) or "none"
        m = margins(run)
        cells = [("–" if c not in m or m[c] != m[c] else f"{m[c]:.3g}") for c in cols]
        print(f"| {name} | {named} | {again} | " + " | ".join(cells) + " |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", nargs="+", default=list(RUNS), choices=list(RUNS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[1, 2, 3])
    parser.add_argument(
        "--read", nargs="+", type=Path, help="finished run folders: print their table, train nothing"
    )
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    if args.read:
        print_table([(p.name, p) for p in args.read])
        return
    out = args.out or Path(tempfile.mkdtemp(prefix="gan-zoo-health-"))
    quiet = ["extras.print_config=false", "trainer.enable_progress_bar=false", "~callbacks.rich_progress_bar"]
    results = []
    import src.train

    build = src.train.build_model
    for name in args.runs:
        for seed in args.seeds:
            folder = out / f"{name}_seed{seed}"
            cfg = compose_config(RUNS[name] + quiet + [f"seed={seed}"], folder)
            src.train.build_model = build
            if name == "noise_blind":
                src.train.build_model = lambda *a, **k: (m := build(*a, **k), ignore_noise(m))[0]
            try:
                train(cfg)
            except Exception as e:  # a provoked run may end in the guard's error: its events are what counts
                print(f"[{name}, seed {seed}] ended with {type(e).__name__}: {str(e)[:200]}")
            results.append((f"{name} (seed {seed})", folder))
            print(f"[{name}, seed {seed}] done", flush=True)
    print(f"\nRun folders: {out}\n")
    print_table(results)


if __name__ == "__main__":
    main()
