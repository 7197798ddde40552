"""Train the default run, cGAN, AC-GAN and InfoGAN on the embedded MNIST over seeds and print every quality
metric, min / median / max over the seeds, the real-vs-real reference and the published anchors.

    python benchmarks/quality.py                                   # all four, seeds 1 2 3
    python benchmarks/quality.py --runs infogan --seeds 1 2 3 4 5 --steps 3000
    python benchmarks/quality.py --runs default --override trainer.precision=bf16-mixed
    python benchmarks/quality.py --print a/quality.json b/quality.json   # the tables of earlier runs, together
    python benchmarks/quality.py --runs default no_r1_r2 nonsaturating_r1 diffaugment   # the ablation

Each run is `python -m src.train <its overrides> seed=<s>` with one evaluation at the end (500 held-out
digits against as many samples, domain features; see docs/metrics.md). The reference row scores training
images in place of samples (`python -m src.eval reference=mnist5k seed=<s>`): what a perfect generator
reaches under the same protocol. G steps: the default 4,000, InfoGAN 6,000. CPU, 2 cores: the default run
~4.5 minutes, cGAN and AC-GAN ~5, InfoGAN ~10 (measured with the non-saturating loss).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from src.build import build_datamodule  # noqa: E402
from src.metrics.reference import TrainingImages, reference_scores  # noqa: E402
from src.metrics.registry import build_metrics  # noqa: E402
from src.train import train  # noqa: E402
from src.utils.compose import compose_config  # noqa: E402

RUNS = {
    "default": [],
    "cgan": ["model=cgan"],
    "acgan": ["model=acgan"],
    # c1 keeps improving past 2,000 steps (docs/trials/infogan.md): 6,000 fit the 30-minute budget
    "infogan": ["model=infogan", "trainer.max_steps=6000"],
    # The ablation of the default run (docs/results.md#remedies-on-the-default-run): one remedy removed or added.
    "no_r1_r2": ["model.terms.r1.gamma=0", "model.terms.r2.gamma=0"],
    "nonsaturating_r1": ["loss=nonsaturating", "model.terms.r1.gamma=1", "model.terms.r1.interval=4"],
    "diffaugment": ["model/augment=diffaugment"],
    "ada": ["model/augment=ada"],
    "pack2": ["model.pack=2"],
    "mbstd4": ["model.discriminator.mbstd=4"],
    "steps2000": ["trainer.max_steps=2000"],
    "before": ["loss=nonsaturating", "trainer.max_steps=2000"],  # the default before issue 21
}
# (column, metric key, format): "%" = percent, "f" = 3 decimals, "1" = 1 decimal
COLUMNS = [
    ("FID (domain)", "val/fid_domain", "1"),
    ("precision", "val/precision", "f"),
    ("recall", "val/recall", "f"),
    ("density", "val/density", "f"),
    ("coverage", "val/coverage", "f"),
    ("class KL", "val/class_kl", "f"),
    ("min share", "val/class_min_share", "%"),
    ("max share", "val/class_max_share", "%"),
    ("class consistency", "val/class_consistency", "%"),
    ("intra-class FID", "val/intra_fid", "1"),
    ("within diversity", "val/within_diversity", "f"),
    ("c1 acc (Q)", "val/c1_acc", "%"),
    ("c1 acc (samples)", "val/c1_sample_acc", "%"),
    ("rotation abs(ρ) (code)", "val/rotation_rho", "rho:val/rotation_code"),
    ("width abs(ρ) (code)", "val/width_rho", "rho:val/width_code"),
]
# From ../shared/ANCHORS.md: published figures next to ours, with their protocol (not ours).
ANCHORS = {
    "default": "DiffAugment (Zhao et al. 2020), BigGAN on 10% of CIFAR-10: FID 39.8 -> 22.4; R3GAN (Huang et al. 2024): "
    "RpGAN + R1 + R2 covers all 1,000 Stacked-MNIST modes; Lucic et al. 2018, best FID on MNIST (Inception features, 10k samples; not the domain FID): "
    "NS GAN 6.8, MM GAN 9.8, WGAN 6.7, LSGAN 7.8",
    "cgan": "no published MNIST class-consistency figure in the anchors; supervised CIFAR-10 IS: AC-GAN 8.25",
    "acgan": "no published MNIST class-consistency figure in the anchors; supervised CIFAR-10 IS: AC-GAN 8.25",
    "infogan": "Chen et al. 2016: c1 as a classifier 5% error (c1 acc 95%); c2 rotation, c3 width (figure 2)",
    "reference": "precision/recall: Kynkäänniemi et al. 2019 (k = 3); density/coverage: Naeem et al. 2020 "
    "(k = 5; ~1 each for matching sets)",
}


def cell(values: dict, key: str, fmt: str) -> str:
    v = values.get(key)
    if v is None:
        return "–"
    if fmt == "%":
        return f"{100 * v:.1f}%"
    if fmt == "1":
        return f"{v:.1f}"
    if fmt.startswith("rho:"):
        code = values.get(fmt[4:])
        return f"{v:.2f} (c{int(code) + 1})" if code else f"{v:.2f}"
    return f"{v:.3f}"


def spread(rows: list[dict], key: str, fmt: str) -> str:
    """min / median / max over the rows that have the metric."""
    found = [r[key] for r in rows if r.get(key) is not None]
    if not found:
        return "–"
    if fmt.startswith("rho:"):
        fmt = "f"
    lo, mid, hi = min(found), statistics.median(found), max(found)
    return " / ".join(cell({"v": v}, "v", fmt) for v in (lo, mid, hi))


def reference(seed: int, out: Path) -> dict[str, float]:
    cfg = compose_config([f"seed={seed}"], out / "reference")
    data = build_datamodule(cfg)
    stand_in = TrainingImages(data, seed=seed)
    return reference_scores(build_metrics(cfg.eval, stand_in, data), data, stand_in)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", nargs="+", default=list(RUNS), choices=list(RUNS))
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3], help="one run per seed")
    parser.add_argument("--steps", type=int, default=None, help="G steps (default: trainer.max_steps, 4,000)")
    parser.add_argument("--out", type=Path, default=None, help="run folders (default: a temp dir)")
    parser.add_argument("--override", nargs="*", default=[], help="extra Hydra overrides for every run")
    parser.add_argument("--no-reference", action="store_true", help="skip the real-vs-real rows")
    parser.add_argument(
        "--print", nargs="+", type=Path, default=None, help="only print the tables of quality.json files"
    )
    args = parser.parse_args()
    if args.print:
        rows = [(r.pop("run"), r.pop("seed"), r) for f in args.print for r in json.loads(f.read_text())]
        args.seeds = sorted({s for _, s, _ in rows})
        print_tables(rows, args)
        return
    out = args.out or Path(tempfile.mkdtemp(prefix="gan-zoo-quality-"))
    common = [
        "extras.print_config=false",
        "trainer.enable_progress_bar=false",
        "~callbacks.rich_progress_bar",
    ]
    # one evaluation, at the end (Lightning validates when the step limit stops the run)
    common += ["trainer.check_val_every_n_epoch=null", "trainer.val_check_interval=1000000"]
    common += [f"trainer.max_steps={args.steps}"] if args.steps else []
    rows: list[tuple[str, int, dict]] = []
    for name in args.runs:
        for seed in args.seeds:
            cfg = compose_config(
                RUNS[name] + common + [f"seed={seed}"] + args.override, out / f"{name}_seed{seed}"
            )
            metrics, objects = train(cfg)
            metrics["time_min"] = objects["wall_time"] / 60
            rows.append((name, seed, metrics))
            print(f"[{name}, seed {seed}] done in {metrics['time_min']:.1f} min", flush=True)
            save(rows, out)
    if not args.no_reference:
        for seed in args.seeds:
            rows.append(("real vs real", seed, reference(seed, out)))
        save(rows, out)
    print(f"\nRun folders (figures in <run>/samples): {out}\n")
    print_tables(rows, args)


def save(rows: list, out: Path) -> None:
    (out / "quality.json").write_text(json.dumps([{"run": n, "seed": s, **m} for n, s, m in rows], indent=1))


def print_tables(rows: list[tuple[str, int, dict]], args: argparse.Namespace) -> None:
    head = "| run | seed | G steps | " + " | ".join(c for c, _, _ in COLUMNS) + " | time |"
    rule = "|" + "---|" * (len(COLUMNS) + 4)
    print(head + "\n" + rule)
    for name, seed, m in rows:
        steps = int(m["train/g_step"]) if "train/g_step" in m else "–"
        time = f"{m['time_min']:.1f} min" if "time_min" in m else "–"
        print(
            f"| {name} | {seed} | {steps} | "
            + " | ".join(cell(m, k, f) for _, k, f in COLUMNS)
            + f" | {time} |"
        )
    print(f"\nmin / median / max over seeds {' '.join(map(str, args.seeds))}:\n")
    print(head.replace("| seed | G steps |", "| seeds |") + "\n" + rule[:-4])
    for name in dict.fromkeys(n for n, _, _ in rows):
        group = [m for n, _, m in rows if n == name]
        cells = " | ".join(spread(group, k, f) for _, k, f in COLUMNS)
        time = spread(group, "time_min", "1")
        print(f"| {name} | {len(group)} | {cells} | {time} |")
    print("\nPublished anchors (../shared/ANCHORS.md; other protocols):")
    for name in dict.fromkeys(n for n, _, _ in rows):
        key = "reference" if name == "real vs real" else name
        print(f"- {name}: {ANCHORS.get(key, ANCHORS['default'])}")


if __name__ == "__main__":
    main()
