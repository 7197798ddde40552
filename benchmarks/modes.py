"""Mode coverage over losses and seeds: the 8-Gaussian ring and the 25-Gaussian grid (PacGAN's metrics: modes
with a high-quality sample, share of HQ samples, reverse KL), and Stacked MNIST's 1,000 modes.

    python benchmarks/modes.py                                     # ring8 and grid25, every loss, seeds 1 2 3
    python benchmarks/modes.py --data ring8 --losses wgan_gp --seeds 1
    python benchmarks/modes.py --data stacked_mnist --losses nonsaturating --seeds 1
    python benchmarks/modes.py --print a/modes.json                # the tables of an earlier run

Each run is `python -m src.train <preset> data=<data> loss=<loss> seed=<s>` with one evaluation at the end. The
2D runs use `experiment=ring8_fast` (small MLPs, a 3-minute budget on 2 CPU cores); Stacked MNIST uses the
default DCGAN on `data=stacked_mnist` (needs MNIST files, see conf/data/stacked_mnist.yaml).
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

from src.train import train  # noqa: E402
from src.utils.compose import compose_config  # noqa: E402

LOSSES = ["minimax", "nonsaturating", "lsgan", "hinge", "wgan", "wgan_gp", "rpgan"]
PRESETS = {"ring8": ["experiment=ring8_fast"], "grid25": ["experiment=ring8_fast", "data=grid25"]}
PRESETS["stacked_mnist"] = ["data=stacked_mnist"]
# (column, metric key, format)
COLUMNS = {
    "2d": [("modes", "val/modes", "0"), ("HQ samples", "val/hq", "%"), ("reverse KL", "val/rev_kl", "3")],
    "stacked": [("modes (/1000)", "val/stacked_modes", "0"), ("KL", "val/stacked_kl", "3")],
}
# From ../shared/ANCHORS.md (their protocol: ~400k iterations, 2,500 samples; Stacked MNIST 26k samples).
ANCHORS = {
    "ring8": "PacGAN table: GAN 6.3 modes / 98.2% HQ / KL 0.45; PacGAN2 7.9 / 95.6% / 0.07 (of 8)",
    "grid25": "PacGAN table: GAN 17.3 modes / 94.8% HQ / KL 0.70; PacGAN2 23.8 / 91.3% / 0.13 (of 25)",
    "stacked_mnist": "PacGAN table: DCGAN 78.9 modes / KL 4.50; PacDCGAN2 1000 / 0.06 (50 epochs of 128k images)",
}


def fmt(v: float | None, f: str) -> str:
    if v is None:
        return "–"
    return f"{100 * v:.1f}%" if f == "%" else f"{v:.{int(f)}f}"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", nargs="+", default=["ring8", "grid25"], choices=list(PRESETS))
    parser.add_argument("--losses", nargs="+", default=LOSSES, choices=LOSSES)
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--out", type=Path, default=None, help="run folders (default: a temp dir)")
    parser.add_argument("--override", nargs="*", default=[], help="extra Hydra overrides for every run")
    parser.add_argument(
        "--print", nargs="+", type=Path, default=None, help="only print earlier modes.json files"
    )
    args = parser.parse_args()
    if args.print:
        print_tables([r for f in args.print for r in json.loads(f.read_text())])
        return
    out = args.out or Path(tempfile.mkdtemp(prefix="gan-zoo-modes-"))
    common = [
        "extras.print_config=false",
        "trainer.enable_progress_bar=false",
        "~callbacks.rich_progress_bar",
    ]
    rows = []
    for data in args.data:
        for loss in args.losses:
            for seed in args.seeds:
                overrides = PRESETS[data] + [f"loss={loss}", f"seed={seed}"] + common + args.override
                metrics, objects = train(compose_config(overrides, out / f"{data}_{loss}_seed{seed}"))
                row = {"data": data, "loss": loss, "seed": seed, "time_s": objects["wall_time"]}
                row.update({k: v for k, v in metrics.items() if isinstance(v, int | float)})
                rows.append(row)
                print(f"[{data}, {loss}, seed {seed}] done in {row['time_s']:.0f} s", flush=True)
                (out / "modes.json").write_text(json.dumps(rows, indent=1))
    print(f"\nRun folders: {out}\n")
    print_tables(rows)


def print_tables(rows: list[dict]) -> None:
    for data in dict.fromkeys(r["data"] for r in rows):
        group = [r for r in rows if r["data"] == data]
        columns = COLUMNS["stacked" if data == "stacked_mnist" else "2d"]
        seeds = sorted({r["seed"] for r in group})
        print(f"\n{data}, seeds {' '.join(map(str, seeds))}: min / median / max (each seed: modes, HQ, KL)\n")
        print("| loss | " + " | ".join(c for c, _, _ in columns) + " | wall time | per seed |")
        print("|---|" + "---|" * (len(columns) + 2))
        for loss in dict.fromkeys(r["loss"] for r in group):
            runs = [r for r in group if r["loss"] == loss]
            cells = []
            for _, key, f in columns:
                vals = sorted(r[key] for r in runs if key in r)
                cells.append(" / ".join(fmt(v, f) for v in spread(vals)) if vals else "–")
            times = sorted(r["time_s"] for r in runs)
            per_seed = "; ".join(
                ", ".join(fmt(r.get(k), f) for _, k, f in columns)
                for r in sorted(runs, key=lambda r: r["seed"])
            )
            time = " / ".join(f"{t:.0f} s" for t in spread(times))
            print(f"| `{loss}` | " + " | ".join(cells) + f" | {time} | {per_seed} |")
        print(f"\nPublished anchor (other protocol): {ANCHORS[data]}")


def spread(values: list[float]) -> list[float]:
    return [values[0], statistics.median(values), values[-1]]


if __name__ == "__main__":
    main()
