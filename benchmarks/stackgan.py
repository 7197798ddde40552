"""Train StackGAN's two stages on the embedded shapes and score them on the held-out captions.

    python benchmarks/stackgan.py                                  # experiment=stackgan_shapes as set
    python benchmarks/stackgan.py --steps 20 --stage2-steps 20     # a smoke run (about 2 minutes)
    python benchmarks/stackgan.py --override text=sentence_transformers text.model=/path/to/minilm
    python benchmarks/stackgan.py --seeds 1 2 3                    # min / median / max over seeds at the end

Stage I and stage II train as `python -m src.train experiment=stackgan_shapes model.stage=both` would
(stage II with the experiment's stage2_overrides). Then, for one held-out caption per held-out scene
(templates and two-object pairings never seen in training), one sample each is read by an independent
attribute classifier trained on real images (with blurred copies, so that upsampled stage-I images are
read fairly):

1. text consistency: per object in the caption, the share whose colour / shape / size the classifier
   reads as the caption says (objects matched to the image's slots, the best of the two matchings for
   two objects), and the share of scenes whose position (one object) or arrangement and order (two) is
   right. Targets: colour and shape >= 80% for stage II.
2. domain FID at the high resolution (the classifier's features, against the held-out real images):
   stage II vs stage I bilinearly upsampled. Target: stage II lower.
3. within-caption diversity: 8 samples for each of 100 held-out captions, mean pairwise feature distance
   divided by that of held-out real images of one kind (1 = as varied as the data, ~0 = one image per caption).

CPU, under 30 minutes on 2 cores with the defaults.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import scipy.linalg
import torch
import torch.nn.functional as F
from torch import Tensor, nn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from src.data.captions import COLOURS, POSITIONS, SHAPES, SIZES  # noqa: E402
from src.metrics.conditional import by_group, mean_pairwise  # noqa: E402
from src.train import train  # noqa: E402
from src.utils.compose import compose_config  # noqa: E402

HEADS = {
    "layout": len(POSITIONS) + 2,
    "colour": len(COLOURS) + 1,
    "shape": len(SHAPES) + 1,
    "size": len(SIZES) + 1,
}


class AttributeClassifier(nn.Module):
    """Four strided 3x3 convs (BN, ReLU) - FC 256 (features) - heads: the layout (7), and per slot
    (the single object, or the top/left and bottom/right ones) colour, shape and size, each with 'none'."""

    def __init__(self, channels: int = 3, width: int = 32):
        super().__init__()
        chans = [channels, width, 2 * width, 4 * width, 4 * width]
        layers = []
        for a, b in zip(chans[:-1], chans[1:]):
            layers += [nn.Conv2d(a, b, 3, 2, 1), nn.BatchNorm2d(b), nn.ReLU()]
        self.trunk = nn.Sequential(
            *layers, nn.AdaptiveAvgPool2d(4), nn.Flatten(), nn.Linear(chans[-1] * 16, 256), nn.ReLU()
        )
        self.heads = nn.ModuleDict({"layout": nn.Linear(256, HEADS["layout"])})
        for slot in (0, 1):
            for name in ("colour", "shape", "size"):
                self.heads[f"{name}{slot}"] = nn.Linear(256, HEADS[name])

    def features(self, x: Tensor) -> Tensor:
        return self.trunk(x)

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        h = self.features(x)
        return {name: head(h) for name, head in self.heads.items()}


def targets(scenes: dict[str, Tensor]) -> dict[str, Tensor]:
    out = {"layout": scenes["layout"].long()}
    for slot in (0, 1):
        for name in ("colour", "shape", "size"):
            out[f"{name}{slot}"] = scenes[name][:, slot].long() + 1  # 0: no object in this slot
    return out


def blur(x: Tensor, side: int) -> Tensor:
    """Down to `side` and back up, bilinearly: what an upsampled low-resolution image looks like."""
    low = F.interpolate(x, size=(side, side), mode="bilinear", antialias=True, align_corners=False)
    return F.interpolate(low, size=x.shape[2:], mode="bilinear", align_corners=False)


def to_float(x: Tensor) -> Tensor:
    return x.float() / 127.5 - 1 if x.dtype == torch.uint8 else x


def train_classifier(
    x: Tensor, scenes: dict, low_side: int, epochs: int, seed: int = 0
) -> AttributeClassifier:
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    net = AttributeClassifier(x.shape[1])
    y = targets(scenes)
    steps = epochs * (len(x) // 128)
    opt = torch.optim.Adam(net.parameters(), lr=2e-3)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=2e-3, total_steps=max(steps, 1))
    net.train()
    for _ in range(epochs):
        order = torch.randperm(len(x), generator=gen)
        for i in range(len(x) // 128):
            idx = order[i * 128 : (i + 1) * 128]
            xb = to_float(x[idx])
            half = torch.rand(len(idx), generator=gen) < 0.5
            xb = torch.where(half[:, None, None, None], blur(xb, low_side), xb)
            out = net(xb)
            loss = sum(F.cross_entropy(out[k], y[k][idx]) for k in out)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
    return net.eval().requires_grad_(False)


@torch.no_grad()
def predict(net: AttributeClassifier, x: Tensor, batch: int = 500) -> tuple[dict[str, Tensor], Tensor]:
    outs, feats = [], []
    for xb in x.split(batch):
        xb = to_float(xb)
        h = net.features(xb)
        feats.append(h)
        outs.append({k: head(h).argmax(1) for k, head in net.heads.items()})
    return {k: torch.cat([o[k] for o in outs]) for k in outs[0]}, torch.cat(feats)


def consistency(pred: dict[str, Tensor], scenes: dict[str, Tensor]) -> dict[str, float]:
    """Attributes per object (objects matched to slots), position / arrangement per scene, all of a scene."""
    true = targets(scenes)
    pair = scenes["colour"][:, 1] >= 0
    names = ("colour", "shape", "size")

    def hits(o: int, p: int) -> dict[str, Tensor]:
        return {n: (pred[f"{n}{p}"] == true[f"{n}{o}"]).float() for n in names}

    same = [hits(0, 0), hits(1, 1)]
    swap = [hits(0, 1), hits(1, 0)]
    score = lambda h: sum(h[0][n] + h[1][n] for n in names)  # noqa: E731
    swapped = pair & (score(swap) > score(same))
    out = {}
    for n in names:
        first = torch.where(swapped, swap[0][n], same[0][n])
        second = torch.where(swapped, swap[1][n], same[1][n])
        out[n] = float((first.sum() + second[pair].sum()) / (len(first) + pair.sum()))
    position = (pred["layout"] == true["layout"]) & ~swapped
    out["position"] = float(position.float().mean())
    every = position.clone()
    for n in names:
        every &= same[0][n].bool() & (same[1][n].bool() | ~pair)
    out["all"] = float(every.float().mean())
    return out


def fid(a: Tensor, b: Tensor) -> float:
    a, b = a.double().numpy(), b.double().numpy()
    mu, nu = a.mean(0), b.mean(0)
    s, t = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    with warnings.catch_warnings():  # a nearly singular product: the imaginary part is dropped below
        warnings.simplefilter("ignore")
        root = scipy.linalg.sqrtm(s @ t)
    root = root.real if np.iscomplexobj(root) else root
    return float(((mu - nu) ** 2).sum() + np.trace(s + t - 2 * root))


def score(
    model: nn.Module, dm, seed: int, classifier_epochs: int
) -> tuple[dict[str, dict], dict[str, dict], dict[str, float]]:
    """Rows of text consistency (all held-out scenes, and one- / two-object scenes apart) and domain FIDs.
    `model`: a stage-II model (stage I upsampled and stage II are scored) or a stage-I model (stage I only)."""
    model = model.cpu().eval()
    stage1_only = model.stage1_generator is None
    dm.setup()
    low_side = model.low_shape[1]
    net = train_classifier(dm.data["train"][0], dm.scenes["train"], low_side, classifier_epochs)
    x_val, emb_val = dm.data["val"][0], dm.data["val"][1][:, 0]  # one held-out caption per held-out scene
    scenes = dm.scenes["val"]
    real_pred, real_feat = predict(net, x_val)
    _, train_feat = predict(net, dm.data["train"][0][: len(x_val)])
    gen = torch.Generator().manual_seed(seed)
    highs, lows = [], []
    with torch.no_grad():
        for emb in emb_val.split(250):
            latent = model.sample_latent(len(emb), emb, generator=gen)
            if stage1_only:
                lows.append(model.generate_eval(latent))
            else:
                lows.append(model.stage1_image(latent))
                highs.append(model.generate_eval(latent))
    side = x_val.shape[-1]
    upsample = lambda x: F.interpolate(x, size=(side, side), mode="bilinear", align_corners=False)  # noqa: E731
    low_up = upsample(torch.cat(lows))
    blurred_pred, _ = predict(net, blur(to_float(x_val), low_side))
    preds = {"real (classifier)": real_pred, "real, blurred to stage I's side": blurred_pred}
    fids = {"real (classifier)": fid(real_feat, train_feat)}
    images = {"stage I (upsampled)": low_up, **({"stage II": torch.cat(highs)} if highs else {})}
    for name, x in images.items():
        preds[name], feat = predict(net, x)
        fids[name] = fid(real_feat, feat)
    diversity = caption_diversity(model, net, emb_val, real_feat, scenes, gen, upsample)
    pair = scenes["colour"][:, 1] >= 0
    rows, parts = {}, {}
    for name, pred in preds.items():
        rows[name] = consistency(pred, scenes)
        parts[name] = {
            f"{k} objects": consistency(
                {h: v[sel] for h, v in pred.items()}, {h: v[sel] for h, v in scenes.items()}
            )
            for k, sel in (("one", ~pair), ("two", pair))
        }
    for name, value in diversity.items():
        rows[name]["diversity"] = value
    return rows, parts, fids


@torch.no_grad()
def caption_diversity(
    model: nn.Module,
    net: AttributeClassifier,
    emb: Tensor,
    real_feat: Tensor,
    scenes: dict,
    gen,
    upsample,
    captions: int = 100,
    per: int = 8,
) -> dict[str, float]:
    """Within-caption diversity: `per` samples for each of `captions` held-out captions, the mean pairwise
    distance of their classifier features, divided by the same for held-out real images of one kind (the
    same layout, colours, shapes and sizes: what a caption says). 1 = as varied as the data."""
    groups = torch.arange(captions).repeat_interleave(per)
    latent = model.sample_latent(len(groups), emb[:captions][groups], generator=gen)
    images = {
        "stage I (upsampled)": upsample(
            model.stage1_image(latent) if model.stage1_generator else model.generate_eval(latent)
        )
    }
    if model.stage1_generator is not None:
        images["stage II"] = model.generate_eval(latent)
    kinds = torch.unique(torch.stack(list(targets(scenes).values()), 1), dim=0, return_inverse=True)[1]
    real = list(by_group(real_feat.double(), kinds, mean_pairwise).values())
    real_d = sum(real) / len(real)
    out = {"real (classifier)": 1.0}
    for name, x in images.items():
        fake = list(by_group(predict(net, x)[1].double(), groups, mean_pairwise).values())
        out[name] = sum(fake) / len(fake) / real_d
    return out


def print_tables(rows: dict, parts: dict, fids: dict) -> None:
    keys = ("colour", "shape", "size", "position", "all")
    print(
        "| images | colour | shape | size | position | all of a scene | domain FID (64 px) | within-caption diversity |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for name, c in rows.items():
        cells = [f"{100 * c[k]:.1f}%" for k in keys]
        div = f"{c['diversity']:.3f}" if "diversity" in c else "–"
        print(f"| {name} | {' | '.join(cells)} | {f'{fids[name]:.2f}' if name in fids else '–'} | {div} |")
    print("\nBy scene kind (colour / shape / size / position / all):")
    for name, by_kind in parts.items():
        cells = [f"{kind}: " + " / ".join(f"{100 * c[k]:.0f}%" for k in keys) for kind, c in by_kind.items()]
        print(f"  {name}: {'; '.join(cells)}")
    print(
        "\n(real rows: the classifier on real held-out images; the real FID: real training vs held-out images)"
    )
    final = rows.get("stage II")
    if final is None:
        print("a stage-I model: stage II's targets are not checked")
        return
    ok = final["colour"] >= 0.8 and final["shape"] >= 0.8 and fids["stage II"] < fids["stage I (upsampled)"]
    print(f"targets (stage II colour and shape >= 80%, FID below stage I's): {'met' if ok else 'NOT met'}")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--steps", type=int, default=None, help="stage-I G steps (default: the experiment's)")
    parser.add_argument(
        "--stage2-steps", type=int, default=None, help="stage-II G steps (default: the experiment's)"
    )
    parser.add_argument("--seeds", type=int, nargs="+", default=[42], help="one pair of runs per seed")
    parser.add_argument("--classifier-epochs", type=int, default=4)
    parser.add_argument("--out", type=Path, default=None, help="run folders (default: a temp dir)")
    parser.add_argument("--override", nargs="*", default=[], help="extra Hydra overrides for both stages")
    parser.add_argument(
        "--score",
        type=Path,
        default=None,
        help="only score a trained checkpoint or run folder (stage II; or stage I alone)",
    )
    args = parser.parse_args()
    start = time.perf_counter()
    if args.score:
        from src.build import build_datamodule
        from src.checkpoint import build_from_checkpoint

        model, run_cfg, _ = build_from_checkpoint(args.score)
        rows, parts, fids = score(model, build_datamodule(run_cfg), args.seeds[0], args.classifier_epochs)
        print(f"\n{args.score}: scored in {(time.perf_counter() - start) / 60:.1f} min\n")
        print_tables(rows, parts, fids)
        return
    out = args.out or Path(tempfile.mkdtemp(prefix="gan-zoo-stackgan-"))
    finals = []
    for seed in args.seeds:
        rows, fids = run_seed(args, seed, out / f"seed{seed}" if len(args.seeds) > 1 else out)
        finals.append((rows, fids))
    if len(args.seeds) > 1:
        print_spread(finals, args.seeds)


def run_seed(args: argparse.Namespace, seed: int, out: Path) -> tuple[dict, dict]:
    start = time.perf_counter()
    common = ["experiment=stackgan_shapes", f"seed={seed}", "extras.print_config=false"]
    common += ["trainer.enable_progress_bar=false", "~callbacks.rich_progress_bar", *args.override]

    first = common + ["model.stage=1"] + ([f"trainer.max_steps={args.steps}"] if args.steps else [])
    cfg1 = compose_config(first, out / "stage1")
    _, objects1 = train(cfg1)
    dm = objects1["datamodule"]
    second = common + [str(o) for o in cfg1.stage2_overrides] + ["model.stage=2"]
    second += [f"model.stage1_ckpt={out / 'stage1' / 'checkpoints' / 'last.ckpt'}"]
    second += [f"trainer.max_steps={args.stage2_steps}"] if args.stage2_steps else []
    _, objects2 = train(compose_config(second, out / "stage2"))
    times = objects1["wall_time"], objects2["wall_time"]
    t = time.perf_counter()
    rows, parts, fids = score(objects2["model"], dm, seed, args.classifier_epochs)
    eval_time = time.perf_counter() - t

    print(f"\nSeed {seed}. Run folders: {out}  (figures: stage2/samples/stages_last.png)")
    print(
        f"stage I {times[0] / 60:.1f} min, stage II {times[1] / 60:.1f} min, classifier + scoring {eval_time / 60:.1f} min, "
        f"total {(time.perf_counter() - start) / 60:.1f} min"
    )
    scenes = dm.scenes["val"]
    print(
        f"held-out scenes: {len(scenes['layout'])}, of which two-object: {int((scenes['colour'][:, 1] >= 0).sum())}\n"
    )
    print_tables(rows, parts, fids)
    return rows, fids


def print_spread(finals: list[tuple[dict, dict]], seeds: list[int]) -> None:
    """Stage II's figures, min / median / max over the seeds."""
    print(f"\nStage II, min / median / max over seeds {' '.join(map(str, seeds))}:\n")
    print(
        "| colour | shape | size | position | all of a scene | domain FID (64 px) | within-caption diversity |"
    )
    print("|---|---|---|---|---|---|---|")
    cells = []
    for key, pct in [
        ("colour", 1),
        ("shape", 1),
        ("size", 1),
        ("position", 1),
        ("all", 1),
        ("fid", 0),
        ("diversity", 0),
    ]:
        values = sorted(f["stage II"] if key == "fid" else r["stage II"][key] for r, f in finals)
        trio = (values[0], statistics.median(values), values[-1])
        cells.append(" / ".join(f"{100 * v:.1f}%" if pct else f"{v:.3f}" for v in trio))
    print("| " + " | ".join(cells) + " |")
    print(
        "\nPublished anchor (../shared/ANCHORS.md): StackGAN (Zhang et al. 2017) reports Inception Scores on CUB 3.70, "
        "Oxford-102 3.20, COCO 8.45: other data, no text-consistency figure; our targets are our own."
    )


if __name__ == "__main__":
    main()
