"""Training throughput of gan-zoo (LightningModule + Trainer) against a minimal plain PyTorch loop.

    python benchmarks/throughput.py                      # DCGAN and the MLP GAN, batch 64, CPU
    python benchmarks/throughput.py --models dcgan --steps 200 --repeats 7
    python benchmarks/throughput.py --device cuda        # plus every GPU fast path

Three paths train the same networks (same initial weights), optimizers, loss (non-saturating), batch
and in-memory data: one D step and one G step per batch, the network not being trained frozen in
each phase. `plain`: a hand-written PyTorch loop; `bare Lightning`: the smallest LightningModule that
does the same step with manual optimization (the framework's own floor: its loop, hooks, toggling,
manual_backward and optimizer wrappers); `gan-zoo`: the project's module and Trainer as `src.train`
builds them. Runs are interleaved in one process, the order rotating every repeat; img/s figures are
medians over repeats (images per second between step `warmup` and the last step), ratios are medians
of the per-repeat ratios (a slow spell of the machine hits both sides of a pair). Also printed: model
FLOPs per step, achieved FLOP/s against this machine's measured fp32 matmul peak, and peak memory.
"""

from __future__ import annotations

import argparse
import copy
import resource
import statistics
import sys
import time
from functools import partial
from pathlib import Path

import lightning as L
import torch
from torch.utils.flop_counter import FlopCounterMode

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from src.build import build_datamodule, build_model, build_trainer  # noqa: E402
from src.utils.compose import compose_config  # noqa: E402
from src.utils.perf import apply_perf  # noqa: E402

FAST_PATHS = {
    "fp32 (baseline)": [],
    "bf16-mixed": ["trainer.precision=bf16-mixed"],
    "channels_last": ["perf.channels_last=true"],
    "torch.compile": ["perf.compile=true"],
    "cudnn.benchmark": ["trainer.benchmark=true"],
    "tf32 off": ["perf.tf32=false"],
    "all on": [
        "trainer.precision=bf16-mixed",
        "perf.channels_last=true",
        "perf.compile=true",
        "trainer.benchmark=true",
    ],
}


def make_cfg(model: str, batch: int, steps: int, device: str, extra: list[str], out: Path):
    overrides = [
        f"model={model}",
        "data=mnist5k",
        f"data.batch_size={batch}",
        f"trainer.max_steps={steps}",
        f"trainer.accelerator={'gpu' if device == 'cuda' else 'cpu'}",
        "trainer.enable_progress_bar=false",
        "trainer.enable_model_summary=false",
        "trainer.limit_val_batches=0",
        "eval.metrics=[]",
        "callbacks=none",
        "logger=csv",
        "extras.print_config=false",
        "seed=0",
        *extra,
    ]
    cfg = compose_config(overrides, out)
    return cfg


class Timer(L.Callback):
    """Wall time from the start of batch `warmup` to the end of G step `steps` (no set-up, no teardown)."""

    def __init__(self, warmup: int, steps: int):
        self.warmup, self.steps, self.start, self.end = warmup, steps, None, None

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if pl_module.d_step == self.warmup:
            sync(pl_module.device)
            self.start = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, *args):
        if pl_module.g_step == self.steps:
            sync(pl_module.device)
            self.end = time.perf_counter()


def sync(device) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def run_lightning(cfg, warmup: int) -> tuple[float, float]:
    L.seed_everything(0, verbose=False)
    dm = build_datamodule(cfg)
    model = build_model(cfg, dm)
    apply_perf(cfg.get("perf"), model)
    return timed_fit(cfg, model, dm, warmup)


def timed_fit(cfg, module: L.LightningModule, dm, warmup: int) -> tuple[float, float]:
    """(images per second after `warmup` steps, peak memory) of one Trainer run of `module`."""
    timer = Timer(warmup, cfg.trainer.max_steps)
    trainer = build_trainer(cfg, [timer], [])
    reset_peak(cfg)
    trainer.fit(module, datamodule=dm)
    images = cfg.data.batch_size * (cfg.trainer.max_steps - warmup)
    return images / (timer.end - timer.start), peak_memory(cfg)


class Bare(L.LightningModule):
    """The plain loop's step as the smallest manual-optimization LightningModule: Lightning's own floor."""

    def __init__(self, generator, discriminator, loss, optimizer_g, optimizer_d, latent_dim):
        super().__init__()
        self.automatic_optimization = False
        self.generator, self.discriminator, self.loss = generator, discriminator, loss
        self.optimizer_g, self.optimizer_d, self.latent_dim = optimizer_g, optimizer_d, latent_dim
        self.d_step = self.g_step = 0  # what Timer reads

    def configure_optimizers(self):
        return [
            self.optimizer_d(self.discriminator.parameters()),
            self.optimizer_g(self.generator.parameters()),
        ]

    def training_step(self, batch, batch_idx):
        real, n = batch[0], batch[0].shape[0]
        opt_d, opt_g = self.optimizers()
        with self.toggled_optimizer(opt_d):
            with torch.no_grad():
                fake = self.generator(torch.randn(n, self.latent_dim, device=self.device))
            d_loss = self.loss.d_loss(self.discriminator(real), self.discriminator(fake))
            opt_d.zero_grad(set_to_none=True)
            self.manual_backward(d_loss)
            opt_d.step()
        self.d_step += 1
        with self.toggled_optimizer(opt_g):
            fake = self.generator(torch.randn(n, self.latent_dim, device=self.device))
            g_loss = self.loss.g_loss(self.discriminator(fake))
            opt_g.zero_grad(set_to_none=True)
            self.manual_backward(g_loss)
            opt_g.step()
        self.g_step += 1


def run_bare(cfg, warmup: int) -> tuple[float, float]:
    L.seed_everything(0, verbose=False)
    dm = build_datamodule(cfg)
    model = build_model(cfg, dm)
    nets = copy.deepcopy(model.generator), copy.deepcopy(model.discriminator)
    bare = Bare(*nets, model.loss, model.optimizer_g, model.optimizer_d, model.latent_dim)
    apply_perf(cfg.get("perf"), model)  # the global settings (tf32) as for the other paths
    return timed_fit(cfg, bare, dm, warmup)


def run_plain(cfg, warmup: int, steps: int) -> tuple[float, float]:
    """The hand-written loop: same networks, optimizers, loss and data; nothing else."""
    L.seed_everything(0, verbose=False)
    dm = build_datamodule(cfg)
    dm.setup()
    model = build_model(cfg, dm)
    device = torch.device("cuda" if cfg.trainer.accelerator == "gpu" else "cpu")
    G, D = copy.deepcopy(model.generator).to(device), copy.deepcopy(model.discriminator).to(device)
    loss = model.loss
    opt_d, opt_g = model.optimizer_d(D.parameters()), model.optimizer_g(G.parameters())
    x_all = dm.data["train"][0].to(device)
    n, batch, latent = len(x_all), cfg.data.batch_size, model.latent_dim
    reset_peak(cfg)
    start = None
    step, epoch = 0, 0
    while step < steps:
        order = torch.randperm(n, device=device)
        for b in range(n // batch):
            if step == warmup:
                sync(device)
                start = time.perf_counter()
            real = x_all[order[b * batch : (b + 1) * batch]].float().mul_(2 / 255).sub_(1)
            D.requires_grad_(True)
            with torch.no_grad():
                fake = G(torch.randn(batch, latent, device=device))
            d_loss = loss.d_loss(D(real), D(fake))
            opt_d.zero_grad(set_to_none=True)
            d_loss.backward()
            opt_d.step()
            D.requires_grad_(False)
            g_loss = loss.g_loss(D(G(torch.randn(batch, latent, device=device))))
            opt_g.zero_grad(set_to_none=True)
            g_loss.backward()
            opt_g.step()
            step += 1
            if step >= steps:
                break
        epoch += 1
    sync(device)
    return batch * (steps - warmup) / (time.perf_counter() - start), peak_memory(cfg)


def flops_per_step(cfg) -> int:
    dm = build_datamodule(cfg)
    model = build_model(cfg, dm)
    G, D, loss = model.generator, model.discriminator, model.loss
    batch, latent = cfg.data.batch_size, model.latent_dim
    real = torch.randn(batch, *dm.shape)
    with FlopCounterMode(display=False) as counter:
        with torch.no_grad():
            fake = G(torch.randn(batch, latent))
        loss.d_loss(D(real), D(fake)).backward()
        loss.g_loss(D(G(torch.randn(batch, latent)))).backward()
    return counter.get_total_flops()


def matmul_peak(device: str, n: int = 2048, reps: int = 10) -> float:
    a, b = torch.randn(n, n, device=device), torch.randn(n, n, device=device)
    for _ in range(3):
        a @ b
    sync(device)
    best = float("inf")
    for _ in range(reps):
        t = time.perf_counter()
        a @ b
        sync(device)
        best = min(best, time.perf_counter() - t)
    return 2 * n**3 / best


def reset_peak(cfg) -> None:
    if cfg.trainer.accelerator == "gpu":
        torch.cuda.reset_peak_memory_stats()


def peak_memory(cfg) -> float:
    """MiB: the CUDA allocator's peak on GPU; on CPU the process's resident high-water mark."""
    if cfg.trainer.accelerator == "gpu":
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--models", nargs="+", default=["dcgan", "gan"])
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--steps", type=int, default=120, help="generator steps per timed run")
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    out = Path("/tmp/gan-zoo-throughput")
    peak = matmul_peak(args.device)
    print(
        f"device: {args.device} ({torch.cuda.get_device_name() if args.device == 'cuda' else f'{torch.get_num_threads()} CPU threads'}), torch {torch.__version__}"
    )
    print(f"measured fp32 matmul peak (2048^3): {peak / 1e9:.1f} GFLOP/s\n")
    print(
        "| model | batch | plain loop img/s | bare Lightning img/s | gan-zoo img/s | gan-zoo / plain | "
        "bare Lightning / plain | gan-zoo / bare Lightning | GFLOP/step | achieved GFLOP/s | % of peak | "
        "peak mem MiB (plain / gan-zoo) |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for name in args.models:
        cfg = make_cfg(name, args.batch, args.steps, args.device, [], out / name)
        runs = {
            "plain": partial(run_plain, cfg, args.warmup, args.steps),
            "bare": partial(run_bare, cfg, args.warmup),
            "ours": partial(run_lightning, cfg, args.warmup),
        }
        ips, mem = {k: [] for k in runs}, dict.fromkeys(runs, 0.0)
        for r in range(args.repeats):
            order = list(runs)[r % 3 :] + list(runs)[: r % 3]  # rotate: no path always runs first
            for key in order:
                value, m = runs[key]()
                ips[key].append(value)
                mem[key] = max(mem[key], m)
        med = {k: statistics.median(v) for k, v in ips.items()}
        ratio = {
            (a, b): statistics.median(x / y for x, y in zip(ips[a], ips[b]))
            for a, b in (("ours", "plain"), ("bare", "plain"), ("ours", "bare"))
        }
        flops = flops_per_step(cfg)
        achieved = flops * med["ours"] / args.batch
        print(f"| {name} | {args.batch} | {med['plain']:.0f} | {med['bare']:.0f} | {med['ours']:.0f} | "
              f"{ratio['ours', 'plain']:.3f} | {ratio['bare', 'plain']:.3f} | {ratio['ours', 'bare']:.3f} | "
              f"{flops / 1e9:.2f} | {achieved / 1e9:.1f} | {100 * achieved / peak:.0f}% | "
              f"{mem['plain']:.0f} / {mem['ours']:.0f} |")  # fmt: skip
        shown = {k: [round(v) for v in values] for k, values in ips.items()}
        print(f"  runs (img/s) {shown}", file=sys.stderr)
    if args.device != "cuda":
        print(
            "\nNo GPU here: the GPU fast paths (bf16-mixed, channels_last, torch.compile, cudnn.benchmark, TF32)"
        )
        print("are not measured. Run with --device cuda on a GPU machine for that table.")
        return
    print("\n| model | fast path | gan-zoo img/s | speed-up vs fp32 |")
    print("|---|---|---|---|")
    for name in args.models:
        base = None
        for label, extra in FAST_PATHS.items():
            cfg = make_cfg(name, args.batch, args.steps, args.device, extra, out / f"{name}-fast")
            ips = statistics.median(run_lightning(cfg, args.warmup)[0] for _ in range(args.repeats))
            base = base or ips
            print(f"| {name} | {label} | {ips:.0f} | {ips / base:.2f}x |")


if __name__ == "__main__":
    main()
