"""A run's report, offline: `python -m src.report <run folder> [--out DIR]`.

Writes `report.html` (one self-contained page: every image embedded, no script, nothing fetched) and
`report.png` (the training curves and the last samples on one figure) into the run folder, or `--out`.
The page shows the training diagnostics (losses, D(x) and D(G(z)), D accuracy against the 50% line,
gradient norms, within-batch diversity, auxiliary terms), every validation metric over G steps, the
sample grids over time, the variant's own figures and the health check's events on the curves.

It reads what the run leaves in its folder: `csv/metrics.csv` (logger=csv, the default) or TensorBoard
event files (`tensorboard/`), `health.jsonl`, `summary.json`, `samples/*.png` and `.hydra/`. A finished, a stopped
or a still running run all work (a running run shows what was flushed so far); a multirun folder (or a run
with stage folders, StackGAN's stage2) gets one comparison table with a row per run and the curves of
every run overlaid, then one section per run.
"""

from __future__ import annotations

import argparse
import base64
import csv
import html
import io
import json
import math
import re
import sys
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from src.callbacks.health import TITLES, read_events
from src.errors import ConfigError
from src.utils.run import SUMMARY_FILE, exit_with_error
from src.utils.tables import SHARE

Series = dict[str, list[tuple[int, float]]]  # metric -> [(G step, value)]

# The training panels: title, metrics, y scale, a reference line (value, label).
PANELS = [
    ("Losses", ["train/d_loss", "train/g_loss"], "symlog", None),
    ("D(x) and D(G(z))", ["train/d_real", "train/d_fake"], "linear", None),
    (
        "D accuracy",
        ["train/d_acc", "train/d_acc_real", "train/d_acc_fake"],
        "linear",
        (0.5, "50%: D cannot tell"),
    ),
    ("Gradient norms", ["train/d_grad_norm", "train/g_grad_norm"], "log", None),
    ("Within-batch diversity (samples / reals)", ["train/diversity"], "linear", (1.0, "the data's")),
    ("Wasserstein estimate", ["train/wasserstein"], "linear", None),
]
# Overlaid runs (a multirun) show only the headline curve of a crowded panel.
OVERLAY = {"D accuracy": ["train/d_acc"]}
SKIP = re.compile(r"^train/(d_step|g_step|skipped_.*)$")
EVENT_COLOURS = dict(zip(TITLES, ["tab:red", "tab:purple", "black", "tab:brown", "tab:olive"]))
STALE_S = 300  # a run folder written to within this many seconds, without summary.json, is "running"


@dataclass
class Run:
    path: Path
    name: str
    series: Series = field(default_factory=dict)
    events: list[dict[str, Any]] = field(default_factory=list)
    summary: dict[str, Any] | None = None
    overrides: list[str] = field(default_factory=list)
    config: dict[str, Any] = field(default_factory=dict)
    samples: dict[str, list[Path]] = field(default_factory=dict)  # figure name -> files, oldest first
    source: str = ""
    status: str = ""

    @property
    def g_step(self) -> int:
        steps = [s for values in self.series.values() for s, _ in values]
        return max(steps, default=0)

    def last(self, key: str) -> float | None:
        values = self.series.get(key)
        return values[-1][1] if values else None


# --- reading a run folder -----------------------------------------------------------------------------------
def status(run: Run) -> str:
    """From summary.json (written when src.train ends); without it, running if the run wrote a file lately."""
    if run.summary:
        return str(run.summary.get("status", "finished"))
    newest = 0.0
    for path in run.path.rglob("*"):
        if path.name.startswith("report."):
            continue
        try:
            newest = max(newest, path.stat().st_mtime)
        except OSError:  # a temporary file of the running job, gone already
            continue
    age = time.time() - newest
    if age < STALE_S:
        return f"running (last write {age:.0f} s ago)"
    return "incomplete (no summary: killed, crashed or still starting)"


TB_DIR = "tensorboard"  # conf/logger/tensorboard.yaml


def is_run(path: Path) -> bool:
    markers = ("csv/metrics.csv", ".hydra/config.yaml", SUMMARY_FILE, "samples", TB_DIR, "health.jsonl")
    return any((path / m).exists() for m in markers)


def find_runs(folder: Path) -> list[Path]:
    """The run itself (if it is one), then the runs below it (multirun jobs, stage folders), in order."""
    found = [folder] if is_run(folder) else []
    below = sorted(
        (
            p
            for p in folder.iterdir()
            if p.is_dir()
            and not p.name.startswith(".")
            and p.name not in ("samples", "csv", TB_DIR, "checkpoints", "wandb")
        ),
        key=lambda p: (not p.name.isdigit(), int(p.name) if p.name.isdigit() else 0, p.name),
    )
    for sub in below:
        found += find_runs(sub)
    return found


def read_csv(path: Path) -> Series:
    series: Series = defaultdict(list)
    with open(path, newline="") as f:
        for row in csv.DictReader(f):
            try:
                step = int(float(row.get("step") or ""))
            except ValueError:
                continue  # a line being written
            for key, value in row.items():
                if key == "step" or value in ("", None):
                    continue
                try:
                    series[key].append((step, float(value)))
                except (TypeError, ValueError):
                    continue
    return dict(series)


def read_tensorboard(folder: Path) -> Series:
    try:
        from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    except ImportError:
        raise ConfigError(
            f"{folder} has TensorBoard files only, and the tensorboard package is not installed"
        ) from None

    series: Series = defaultdict(list)
    for events in sorted(folder.rglob("events.out.tfevents.*")):
        acc = EventAccumulator(str(events.parent), size_guidance={"scalars": 0})
        acc.Reload()
        for key in acc.Tags().get("scalars", []):
            series[key] += [(int(e.step), float(e.value)) for e in acc.Scalars(key)]
    return {k: sorted(set(v)) for k, v in series.items()}


def read_run(path: Path, root: Path) -> Run:
    run = Run(path=path, name=str(path.relative_to(root)) if path != root else path.name)
    if (path / "csv" / "metrics.csv").is_file():
        run.series, run.source = read_csv(path / "csv" / "metrics.csv"), "csv/metrics.csv"
    elif any(path.glob(f"{TB_DIR}/**/events.out.tfevents.*")):
        run.series, run.source = read_tensorboard(path / TB_DIR), f"TensorBoard events ({TB_DIR}/)"
    run.events = read_events(path)
    if (path / SUMMARY_FILE).is_file():
        try:
            run.summary = json.loads((path / SUMMARY_FILE).read_text())
        except json.JSONDecodeError:
            run.summary = None
    hydra = path / ".hydra"
    if (hydra / "overrides.yaml").is_file():
        run.overrides = [str(o) for o in (yaml.safe_load((hydra / "overrides.yaml").read_text()) or [])]
    if (hydra / "config.yaml").is_file():
        run.config = yaml.safe_load((hydra / "config.yaml").read_text()) or {}
    pattern = re.compile(r"^(?P<name>.+)_epoch(?P<epoch>\d+)\.png$")
    grouped: dict[str, list[tuple[int, Path]]] = defaultdict(list)
    for png in (path / "samples").glob("*.png") if (path / "samples").is_dir() else []:
        match = pattern.match(png.name)
        if match:
            grouped[match["name"]].append((int(match["epoch"]), png))
    run.samples = {k: [p for _, p in sorted(v)] for k, v in sorted(grouped.items())}
    run.status = status(run)
    return run


# --- figures ------------------------------------------------------------------------------------------------
def plt():
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as pyplot

    return pyplot


def png_bytes(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90)
    plt().close(fig)
    return buf.getvalue()


def mark_events(ax, events: list[dict[str, Any]]) -> None:
    for e in events:
        ax.axvline(
            e["step"],
            color=EVENT_COLOURS.get(e["name"], "red"),
            ls="--",
            lw=1.2,
            label=f"{e.get('title', e['name'])} (G step {e['step']})",
        )


def draw_panel(
    ax, runs: list[Run], title: str, keys: list[str], scale: str, ref, events: bool = True
) -> bool:
    drawn = False
    for run in runs:
        for key in keys:
            values = run.series.get(key)
            if not values:
                continue
            x, y = zip(*values)
            label = key.split("/", 1)[-1] if len(runs) == 1 else f"{run.name}: {key.split('/', 1)[-1]}"
            ax.plot(x, y, lw=1.2, marker="." if len(x) < 30 else None, label=label)
            drawn = True
    if not drawn:
        return False
    if scale == "log" and all(v > 0 for r in runs for k in keys for _, v in r.series.get(k, [])):
        ax.set_yscale("log")
    elif scale == "symlog":
        values = [abs(v) for r in runs for k in keys for _, v in r.series.get(k, [])]
        if values and max(values) > 100 * (np.median(values) + 1e-12):
            ax.set_yscale("symlog", linthresh=max(float(np.median(values)), 1e-3))
    if ref is not None:
        ax.axhline(ref[0], color="0.4", ls=":", lw=1, label=ref[1])
    if events and len(runs) == 1:
        mark_events(ax, runs[0].events)
    ax.set_title(title, fontsize=10)
    ax.set_xlabel("G step", fontsize=8)
    ax.tick_params(labelsize=7)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=6, loc="best")
    return True


def panel_png(runs: list[Run], title: str, keys: list[str], scale: str = "linear", ref=None) -> bytes | None:
    fig, ax = plt().subplots(figsize=(6.4, 3.4))
    if not draw_panel(ax, runs, title, keys, scale, ref):
        plt().close(fig)
        return None
    fig.tight_layout()
    return png_bytes(fig)


def grid_png(runs: list[Run], panels: list[tuple[str, list[str]]], cols: int = 4) -> bytes:
    """Many small panels on one figure (the validation metrics): one image to draw, embed and read."""
    rows = math.ceil(len(panels) / cols)
    fig, axes = plt().subplots(rows, cols, figsize=(4.0 * cols, 2.6 * rows), squeeze=False)
    for ax, (title, keys) in zip(axes.flat, panels):
        draw_panel(ax, runs, title, keys, "linear", None)
        if ax.get_legend() is not None and (len(keys) == 1 or len(runs) > 1):
            ax.get_legend().remove()  # the title names the metric; overlaid runs share the first panel's legend
    if len(runs) > 1:
        axes.flat[0].legend([r.name for r in runs], fontsize=6, loc="best")
    for ax in list(axes.flat)[len(panels) :]:
        ax.axis("off")
    fig.tight_layout()
    return png_bytes(fig)


def term_panels(runs: list[Run]) -> list[tuple[str, list[str]]]:
    """The loss terms of each phase on one panel (when there is more than the adversarial one), then every other
    train/ diagnostic (an auxiliary term's statistics) on its own."""
    shown = {k for _, keys, _, _ in PANELS for k in keys} | {"train/d_loss", "train/g_loss"}
    keys = sorted(
        {k for r in runs for k in r.series if k.startswith("train/") and k not in shown and not SKIP.match(k)}
    )
    panels = []
    for phase, name in (("d", "D"), ("g", "G")):
        terms = [k for k in keys if k.startswith(f"train/{phase}_")]
        if terms and terms != [f"train/{phase}_adv"]:
            panels.append((f"{name} loss terms", terms))
    panels += [(k, [k]) for k in keys if not k.startswith(("train/d_", "train/g_"))]
    return panels


def val_keys(runs: list[Run]) -> list[str]:
    keys = {k for r in runs for k in r.series if k.startswith("val/") and not SHARE.match(k)}
    return sorted(keys)


def share_keys(run: Run) -> list[str]:
    return sorted((k for k in run.series if SHARE.match(k)), key=lambda k: int(SHARE.match(k).group(1)))


def summary_png(runs: list[Run]) -> bytes:
    """The PNG summary: the training panels (and the last sample grid of a single run) on one figure."""
    panels = [p for p in PANELS if any(r.series.get(k) for r in runs for k in p[1])]
    image = (
        runs[0].samples.get("samples", [None])[-1]
        if len(runs) == 1 and runs[0].samples.get("samples")
        else None
    )
    n = len(panels) + (image is not None)
    cols = 3
    rows = max(1, math.ceil(n / cols))
    fig, axes = plt().subplots(rows, cols, figsize=(5.2 * cols, 3.6 * rows), squeeze=False)
    for ax, (title, keys, scale, ref) in zip(axes.flat, panels):
        draw_panel(ax, runs, title, OVERLAY.get(title, keys) if len(runs) > 1 else keys, scale, ref)
    if image is not None:
        ax = axes.flat[len(panels)]
        from PIL import Image

        ax.imshow(np.asarray(Image.open(image).convert("RGB")))
        ax.set_title(f"samples ({image.stem.split('_')[-1]})", fontsize=10)
    for ax in list(axes.flat)[n:]:
        ax.axis("off")
    if image is not None:
        axes.flat[len(panels)].axis("off")
    names = ", ".join(r.name for r in runs) if len(runs) <= 3 else f"{len(runs)} runs"
    fig.suptitle(f"gan-zoo report: {names}", fontsize=11)
    fig.tight_layout()
    return png_bytes(fig)


# --- the page -----------------------------------------------------------------------------------------------
CSS = """body{font-family:system-ui,sans-serif;margin:24px;max-width:1400px;color:#222}
h1{font-size:22px}h2{font-size:18px;border-bottom:1px solid #ccc;padding-bottom:4px;margin-top:32px}
h3{font-size:15px}table{border-collapse:collapse;font-size:13px;margin:8px 0}
td,th{border:1px solid #ddd;padding:3px 8px;text-align:left;vertical-align:top}th{background:#f4f4f4}
.grid{display:flex;flex-wrap:wrap;gap:8px}.grid figure{margin:0}.grid figcaption{font-size:12px;color:#555}
img{max-width:100%}.event{background:#fff3f0;border-left:4px solid #d33;padding:6px 10px;margin:6px 0}
.ok{background:#f0fff3;border-left:4px solid #3a3;padding:6px 10px}code{background:#f4f4f4;padding:1px 4px}"""


def img(data: bytes, alt: str, width: int | None = None) -> str:
    size = f' width="{width}"' if width else ""
    return (
        f'<img alt="{html.escape(alt)}"{size} src="data:image/png;base64,{base64.b64encode(data).decode()}">'
    )


def figure(data: bytes | None, caption: str, width: int | None = None) -> str:
    if data is None:
        return ""
    return f"<figure>{img(data, caption, width)}<figcaption>{html.escape(caption)}</figcaption></figure>"


def command(run: Run) -> str:
    return "python -m src.train " + " ".join(run.overrides) if run.overrides else ""


def fmt(value: float | None) -> str:
    if value is None:
        return "–"
    return f"{value:.4g}"


def diagnosis_html(run: Run) -> str:
    if not run.events:
        health = run.config.get("health", {"_target_": "?"}) if run.config else {"_target_": "?"}
        checked = isinstance(health, dict) and "_target_" in health
        text = "no failure named by the health check" if checked else "the health check was off (health=off)"
        return f'<p class="ok">{text}</p>'
    parts = []
    for e in run.events:
        remedies = "".join(f"<li><code>{html.escape(r)}</code></li>" for r in e.get("remedies", []))
        parts.append(
            f'<div class="event"><b>{html.escape(e.get("title", e["name"]))}</b> at G step {e["step"]}: '
            f"{html.escape(e['evidence'])}<br>Try:<ul>{remedies}</ul></div>"
        )
    return "".join(parts)


def run_section(run: Run, level: int = 2) -> str:
    h = f"h{level}"
    out = [f"<{h}>{html.escape(run.name)}</{h}>"]
    facts = [
        ("folder", str(run.path)),
        ("command", command(run) or "(not recorded: no .hydra/overrides.yaml)"),
        ("status", run.status),
        ("G steps logged", str(run.g_step)),
        ("metrics from", run.source or "nothing logged yet"),
    ]
    if run.summary and "wall_time_s" in run.summary:
        facts.append(("wall time", f"{run.summary['wall_time_s']} s"))
    out.append(
        "<table>" + "".join(f"<tr><th>{k}</th><td>{html.escape(v)}</td></tr>" for k, v in facts) + "</table>"
    )
    out.append(f"<{h}>Diagnosis</{h}>" if level == 2 else "<h4>Diagnosis</h4>")
    out.append(diagnosis_html(run))
    out.append("<h3>Training</h3><div class='grid'>")
    for title, keys, scale, ref in PANELS:
        out.append(figure(panel_png([run], title, keys, scale, ref), title))
    for title, keys in term_panels([run]):
        out.append(figure(panel_png([run], title, keys), title))
    out.append("</div>")
    keys = val_keys([run])
    if keys or share_keys(run):
        out.append("<h3>Validation metrics over G steps</h3>")
        panels = [(k, [k]) for k in keys] + (
            [("val/class_share_*", share_keys(run))] if share_keys(run) else []
        )
        out.append(figure(grid_png([run], panels), "validation metrics: " + ", ".join(t for t, _ in panels)))
        last = [(k, run.last(k)) for k in keys]
        out.append("<table><tr><th>metric</th><th>last value</th></tr>")
        out.append(
            "".join(f"<tr><td>{html.escape(k)}</td><td>{fmt(v)}</td></tr>" for k, v in last) + "</table>"
        )
    grids = run.samples.get("samples") or run.samples.get("scatter")
    if grids:
        out.append("<h3>Samples over time (fixed noise)</h3><div class='grid'>")
        for path in spaced(grids, 8):
            out.append(figure(path.read_bytes(), f"epoch {int(path.stem.rsplit('epoch', 1)[-1])}", 220))
        out.append("</div>")
    others = {k: v for k, v in run.samples.items() if k not in ("samples", "scatter")}
    if others:
        out.append("<h3>The variant's figures (last evaluation)</h3><div class='grid'>")
        for name, paths in others.items():
            out.append(figure(paths[-1].read_bytes(), f"{name} ({paths[-1].stem.split('_')[-1]})", 420))
        out.append("</div>")
    return "\n".join(out)


def spaced(items: list[Path], n: int) -> list[Path]:
    """At most n items, evenly spread, the first and the last always in."""
    if len(items) <= n:
        return items
    index = sorted({round(i * (len(items) - 1) / (n - 1)) for i in range(n)})
    return [items[i] for i in index]


def comparison_html(runs: list[Run]) -> str:
    """One row per run: the overrides that differ between the runs (the shared ones above the table), how the
    run ended, what the health check named, and the last value of every validation metric."""
    shared = [o for o in runs[0].overrides if all(o in r.overrides for r in runs[1:])]
    keys = [k for k in val_keys(runs) if any(r.last(k) is not None for r in runs)]
    head = ["run", "overrides", "status", "G steps", "wall (s)", "diagnosis", "train/d_acc", *keys]
    rows = [f"<p>every run: <code>{html.escape(' '.join(shared))}</code></p>"] if shared else []
    for run in runs:
        wall = run.summary.get("wall_time_s") if run.summary else None
        named = ", ".join(f"{e.get('title', e['name'])} @ {e['step']}" for e in run.events) or "none"
        own = [o for o in run.overrides if o not in shared]
        cells = [
            run.name,
            " ".join(own) or "–",
            run.status,
            str(run.g_step),
            "–" if wall is None else str(wall),
            named,
            fmt(run.last("train/d_acc")),
        ]
        cells += [fmt(run.last(k)) for k in keys]
        rows.append("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in cells) + "</tr>")
    header = "<tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in head) + "</tr>"
    note = rows.pop(0) if shared else ""
    return note + "<table>" + header + "".join(rows) + "</table>"


def page(folder: Path, runs: list[Run], summary: bytes) -> str:
    title = f"gan-zoo report: {folder.name}"
    out = [
        f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>",
        f"<style>{CSS}</style></head><body><h1>{html.escape(title)}</h1>",
        f"<p>{html.escape(str(folder))} · written {time.strftime('%Y-%m-%d %H:%M:%S')} by "
        f"<code>python -m src.report</code></p>",
        figure(summary, "summary (also report.png)"),
    ]
    if len(runs) == 1:
        out.append(run_section(runs[0]))
    else:
        out.append("<h2>Comparison</h2>" + comparison_html(runs))
        out.append("<h2>All runs overlaid</h2><div class='grid'>")
        for title_, keys, scale, ref in PANELS:
            out.append(figure(panel_png(runs, title_, OVERLAY.get(title_, keys), scale, ref), title_))
        out.append("</div>")
        panels = [(k, [k]) for k in val_keys(runs)]
        if panels:
            out.append(
                figure(grid_png(runs, panels), "validation metrics: " + ", ".join(t for t, _ in panels))
            )
        for run in runs:
            out.append(run_section(run))
    out.append("</body></html>")
    return "\n".join(x for x in out if x)


def report(folder: str | Path, out: str | Path | None = None) -> tuple[Path, Path]:
    """Write report.html and report.png for the run or multirun `folder`; returns their paths."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ConfigError(f"no such run folder: {folder}")
    paths = find_runs(folder)
    if not paths:
        raise ConfigError(
            f"{folder} holds no gan-zoo run (no csv/metrics.csv, tensorboard/, samples/, summary.json or .hydra/ in it or "
            "below it); give a run folder (outputs/train/runs/<time>) or a multirun folder "
            "(outputs/train/multiruns/<time>)"
        )
    runs = [read_run(p, folder) for p in paths]
    target = Path(out) if out else folder
    target.mkdir(parents=True, exist_ok=True)
    summary = summary_png(runs)
    png, page_path = target / "report.png", target / "report.html"
    png.write_bytes(summary)
    page_path.write_text(page(folder, runs, summary), encoding="utf-8")
    return page_path, png


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m src.report", description=__doc__.split("\n\n")[0])
    parser.add_argument("folder", help="a run folder (outputs/train/runs/<time>) or a multirun folder")
    parser.add_argument("--out", help="where to write report.html and report.png (default: the folder)")
    args = parser.parse_args(argv)
    try:
        page_path, png = report(args.folder, args.out)
    except ConfigError as e:
        exit_with_error(e)
    except OSError as e:
        exit_with_error(ConfigError(f"cannot write the report: {e}"))
    print(f"report: {page_path}\nsummary: {png}")


if __name__ == "__main__":
    sys.exit(main())
