"""Live diagnosis: the classic ways GAN training fails, named while they happen, with what to try.

Detectors read only what the run already computes: the training diagnostics each logging step sends
(`train/d_acc`, grad norms, losses, within-batch `train/diversity`; already on the host, so no extra device
sync) and the validation metrics (class balance, within-class diversity). Each failure is named once per
run, in the words of the GAN lecture this project follows (vanishing gradients, mode collapse, failure to
converge), with the step, the numbers, and remedies that exist in this project as command-line overrides.
An event goes to the run log, to every logger (`health/<name>` = 1 at its step; text for TensorBoard and
W&B), to `<run>/health.jsonl` (read by `python -m src.report`) and to the end-of-run summary.
With `on_failure=stop` the run writes last.ckpt and stops at the first event.

Thresholds live in conf/health/default.yaml; they were set from healthy and provoked runs (docs/diagnosis.md).
"""

from __future__ import annotations

import json
import logging
import math
import statistics
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import lightning as L

from src.callbacks.safety import LastCheckpoint
from src.errors import NonFiniteError

log = logging.getLogger(__name__)

EVENTS_FILE = "health.jsonl"
TITLES = {
    "vanishing_gradients": "vanishing gradients",
    "mode_collapse": "mode collapse",
    "divergence": "failure to converge (divergence)",
    "stuck": "failure to converge (D accuracy stuck)",
    "oscillation": "failure to converge (oscillation)",
}


@dataclass
class Event:
    name: str  # a key of TITLES
    step: int  # G step
    evidence: str
    remedies: list[str] = field(default_factory=list)

    @property
    def title(self) -> str:
        return TITLES[self.name]

    def message(self) -> str:
        tried = "; ".join(self.remedies) if self.remedies else "none known for this configuration"
        return f"{self.title} at G step {self.step}: {self.evidence}. Try: {tried}"


@dataclass
class Context:
    """What the remedies depend on: the loss, the learning rates and which config keys exist."""

    loss: str = ""
    critic: bool = False
    lr_d: float | None = None
    lr_g: float | None = None
    config: Mapping[str, Any] = field(default_factory=dict)
    scaled_grads: bool = False  # fp16 mixed precision (a loss scaler)

    def get(self, dotted: str, default: Any = None) -> Any:
        node: Any = self.config
        for part in dotted.split("."):
            if not isinstance(node, Mapping) or part not in node:
                return default
            node = node[part]
        return node

    def has(self, dotted: str) -> bool:
        return self.get(dotted, MISSING) is not MISSING


MISSING = object()


def option(ctx: Context, key: str, value: Any, why: str) -> str | None:
    """`key=value (why)`, when the run's config has that key and it is not already set so."""
    if not ctx.has(key) or ctx.get(key) == value:
        return None
    return f"{key}={value} ({why})"


def lower_lr(ctx: Context, which: str, factor: float, why: str) -> str | None:
    lr = ctx.lr_d if which == "d" else ctx.lr_g
    key = f"model.optimizer_{which}.lr"
    return f"{key}={lr / factor:.2g} ({why})" if lr and ctx.has(key) else None


def remedies(name: str, ctx: Context, detail: str = "") -> list[str]:
    """Overrides that address the failure, for this run's configuration (keys it lacks are left out)."""
    spectral = option(ctx, "model.discriminator.norm", "spectral", "spectral norm bounds D's slope")
    gp = (
        None
        if ctx.loss == "wgan_gp"
        else "loss=wgan_gp (gradient penalty: D stays smooth, G keeps a gradient)"
    )
    r1 = option(
        ctx, "model.terms.r1.gamma", 1.0, "R1: D flat on the reals, the game settles instead of circling"
    )
    rpgan = (
        None if ctx.loss == "rpgan" else "loss=rpgan (R3GAN: each fake judged against a real, with R1 + R2)"
    )
    if name == "vanishing_gradients":
        found = [
            "loss=nonsaturating (G maximises log D(G(z)): its gradient stays large when D rejects the samples)"
            if ctx.loss == "minimax"
            else None,
            lower_lr(ctx, "d", 4, "a weaker D"),
            spectral,
            gp,
        ]
    elif name == "mode_collapse":
        found = [
            option(
                ctx, "model.pack", 2, "PacGAN: D judges two samples at once and sees their lack of variety"
            ),
            option(
                ctx, "model.discriminator.mbstd", 4, "minibatch standard deviation shows D the batch's spread"
            ),
            option(
                ctx, "model.terms.ms.weight", 1.0, "mode seeking: different noise must give different images"
            ),
            gp,
            lower_lr(ctx, "g", 2, "a slower G chases D's current weak spot less"),
            rpgan,
        ]
    elif name == "divergence":
        found = [
            lower_lr(ctx, "d", 10, "the step size blew the weights up"),
            lower_lr(ctx, "g", 10, "the same for G"),
            gp,
            spectral,
            r1,
        ]
    elif name == "stuck" and detail == "high":
        found = [
            "loss=nonsaturating (keeps G's gradient while D wins)" if ctx.loss == "minimax" else None,
            lower_lr(ctx, "d", 4, "a weaker D"),
            spectral,
            gp,
        ]
    elif name == "stuck":
        found = [
            option(ctx, "model.n_critic", 2, "more D steps per G step"),
            lower_lr(ctx, "d", 0.5, "a faster D"),
        ]
    else:  # oscillation
        found = [
            lower_lr(ctx, "d", 2, "smaller steps settle"),
            lower_lr(ctx, "g", 2, "the same for G"),
            option(ctx, "model.ema_decay", 0.999, "samples from an average of G's weights"),
            gp,
            r1,
        ]
    return [r for r in found if r]


# --- detectors: each sees one row of logged values per logging step --------------------------------------
Row = Mapping[str, float]


def fmt(x: float) -> str:
    return f"{x:.3g}"


class Detector:
    name = ""
    reads_d_accuracy = False  # off for critics: their "accuracy" is how well scores separate, ~1 when healthy

    def __init__(self, window: int = 8, warmup: int = 0):
        self.rows: deque[tuple[int, Row]] = deque(maxlen=window)
        self.warmup = warmup
        self.applies = True  # set from the run's loss (Diagnosis.context)

    def train(self, step: int, row: Row) -> tuple[str, str] | None:
        """(evidence, detail) when this logging step shows the failure; None otherwise."""
        self.rows.append((step, row))
        if not self.applies or step < self.warmup or len(self.rows) < self.rows.maxlen:
            return None
        return self.check()

    def check(self) -> tuple[str, str] | None:
        return None

    def validate(self, step: int, metrics: Row) -> tuple[str, str] | None:
        return None

    def series(self, key: str) -> list[float]:
        return [row[key] for _, row in self.rows if key in row and math.isfinite(row[key])]

    @property
    def span(self) -> str:
        return f"G steps {self.rows[0][0]}-{self.rows[-1][0]}"


class VanishingGradients(Detector):
    """D wins (accuracy near 1) while G's gradient shrinks to a small fraction of its peak; under the saturating
    loss also when D(G(z)) stays near 0 (G's gradient there is D(G(z)) times the non-saturating loss's, so it
    vanishes from the first steps when D is strong from the start)."""

    name = "vanishing_gradients"
    reads_d_accuracy = True

    def __init__(
        self,
        window: int = 8,
        warmup: int = 0,
        d_acc: float = 0.95,
        grad_ratio: float = 0.1,
        d_fake: float = 0.01,
    ):
        super().__init__(window, warmup)
        self.d_acc, self.grad_ratio, self.d_fake = d_acc, grad_ratio, d_fake
        self.saturating = False  # set from the run's loss (minimax)
        # The largest G gradient norm seen so far (a median of 3 logging steps), and its step.
        self.peak = (0.0, 0)

    def train(self, step: int, row: Row) -> tuple[str, str] | None:
        grads = [r.get("train/g_grad_norm", math.nan) for _, r in [*list(self.rows)[-2:], (step, row)]]
        if (
            len(grads) == 3
            and all(math.isfinite(g) for g in grads)
            and statistics.median(grads) > self.peak[0]
        ):
            self.peak = (statistics.median(grads), step)
        return super().train(step, row)

    def check(self) -> tuple[str, str] | None:
        acc, grads, fake = (
            self.series("train/d_acc"),
            self.series("train/g_grad_norm"),
            self.series("train/d_fake"),
        )
        if len(acc) < len(self.rows) or not grads:
            return None
        mean_acc, now = statistics.fmean(acc), statistics.median(grads)
        if mean_acc < self.d_acc:
            return None
        shown = f"D accuracy {mean_acc:.3f} over {self.span}"
        if fake:
            shown += f", D(G(z)) {fmt(statistics.fmean(fake))}"
        if self.peak[0] and now <= self.grad_ratio * self.peak[0]:
            peak = f"{100 * now / self.peak[0]:.1f}% of its peak {fmt(self.peak[0])} (G step {self.peak[1]})"
            return f"{shown}; G's gradient norm {fmt(now)}, {peak}", ""
        if self.saturating and fake and statistics.fmean(fake) <= self.d_fake:
            return (
                f"{shown}; G's gradient norm {fmt(now)}: under the saturating loss it is D(G(z)) times the "
                f"non-saturating loss's, {100 * statistics.fmean(fake):.2g}% of it",
                "",
            )
        return None


class ModeCollapse(Detector):
    """The samples of a batch vary far less than the real images of that batch do; at validation, class
    shares far from the data's or samples of one condition alike (where the run has those metrics)."""

    name = "mode_collapse"

    def __init__(
        self,
        window: int = 8,
        warmup: int = 0,
        diversity: float = 0.3,
        class_kl: float = 0.5,
        within_diversity: float = 0.25,
        eval_warmup: int = 500,
        evaluations: int = 2,
    ):
        super().__init__(window, warmup)
        self.diversity, self.class_kl, self.within_diversity = diversity, class_kl, within_diversity
        self.eval_warmup, self.evaluations, self.streak = eval_warmup, evaluations, 0

    def check(self) -> tuple[str, str] | None:
        div = self.series("train/diversity")
        if len(div) < len(self.rows) or max(div) >= self.diversity:
            return None
        return (
            f"the samples of a batch are {statistics.median(div):.2f}x as varied as its real images "
            f"(median over {self.span}; at most {max(div):.2f}, threshold {self.diversity})",
            "batch",
        )

    def validate(self, step: int, metrics: Row) -> tuple[str, str] | None:
        """At each evaluation after `eval_warmup` G steps: named when `evaluations` evaluations in a row show it
        (early samples are blobs that a classifier reads as one digit: that is not a collapse yet)."""
        if step < self.eval_warmup:
            return None
        found = self.evaluation(metrics)
        self.streak = self.streak + 1 if found else 0
        return found if self.streak >= self.evaluations else None

    def evaluation(self, metrics: Row) -> tuple[str, str] | None:
        kl, within = metrics.get("val/class_kl"), metrics.get("val/within_diversity")
        if kl is not None and math.isfinite(kl) and kl > self.class_kl:
            shares = sorted(
                (v, k.rsplit("_", 1)[-1]) for k, v in metrics.items() if k.startswith("val/class_share_")
            )
            spread = (
                f" (class {shares[0][1]} at {100 * shares[0][0]:.1f}% of the samples, class {shares[-1][1]} at "
                f"{100 * shares[-1][0]:.1f}%)"
                if shares
                else ""
            )
            return f"class balance KL(samples || data) {kl:.2f} > {self.class_kl}{spread}", "classes"
        if within is not None and math.isfinite(within) and within < self.within_diversity:
            return (
                f"samples of one condition are {within:.2f}x as varied as real images of one class "
                f"(val/within_diversity < {self.within_diversity})",
                "within",
            )
        return None


class Divergence(Detector):
    """A loss or gradient norm beyond max_value over the whole window, or growing at every logging step of the
    window to `growth` x its early scale (the largest of its first 3 logged values); or not finite.
    For critics (WGAN, hinge) G's loss -D(G(z)) has no fixed offset: the Wasserstein estimate stands in for it."""

    name = "divergence"
    KEYS = ("train/d_loss", "train/g_loss", "train/d_grad_norm", "train/g_grad_norm")
    CRITIC_KEYS = ("train/d_loss", "train/wasserstein", "train/d_grad_norm", "train/g_grad_norm")

    def __init__(self, window: int = 3, warmup: int = 0, growth: float = 1000.0, max_value: float = 1e5):
        super().__init__(window, 0)  # from the first step: divergence needs no warm-up
        self.growth, self.max_value = growth, max_value
        self.early: dict[str, list[float]] = {}
        self.critic = False  # set from the run's loss
        self.scaled_grads = (
            False  # fp16 loss scaling: an inf gradient norm is the scaler's overflow, not ours
        )

    @property
    def keys(self) -> tuple[str, ...]:
        return self.CRITIC_KEYS if self.critic else self.KEYS

    def train(self, step: int, row: Row) -> tuple[str, str] | None:
        for key in self.keys:
            value = row.get(key)
            if value is None:
                continue
            if not math.isfinite(value):
                if self.scaled_grads and key.endswith("grad_norm"):
                    continue
                return f"{key} is {value} at G step {step}", ""
            early = self.early.setdefault(key, [])
            if len(early) < 3:
                early.append(abs(value))
        return super().train(step, row)

    def check(self) -> tuple[str, str] | None:
        for key in self.keys:
            values = [abs(v) for v in self.series(key)]
            if len(values) < len(self.rows) or key not in self.early:
                continue
            scale = max(max(self.early[key]), 1e-3)
            beyond = min(values) > self.max_value  # the whole window, not one spike
            rising = all(b > a for a, b in zip(values, values[1:]))
            if beyond or (rising and values[-1] > self.growth * scale):
                shown = ", ".join(fmt(v) for v in values)
                return f"|{key}| {shown} over {self.span} (early scale {fmt(scale)})", ""
        return None


class Stuck(Detector):
    """D accuracy pinned at 1 (D wins outright) or 0 (D is fooled by everything) for a long window."""

    name = "stuck"
    reads_d_accuracy = True

    def __init__(self, window: int = 16, warmup: int = 0, low: float = 0.02, high: float = 0.99):
        super().__init__(window, warmup)
        self.low, self.high = low, high

    def check(self) -> tuple[str, str] | None:
        acc = self.series("train/d_acc")
        if len(acc) < len(self.rows):
            return None
        if min(acc) >= self.high:
            return (
                f"D accuracy >= {min(acc):.3f} at every logging step over {self.span}: D wins outright",
                "high",
            )
        if max(acc) <= self.low:
            return f"D accuracy <= {max(acc):.3f} at every logging step over {self.span}", "low"
        return None


def swings(values: Iterable[float], swing: float) -> int:
    """How often the values move from below 0.5 - swing to above 0.5 + swing, or back (hysteresis: values in
    between change nothing)."""
    side, flips = 0, 0
    for v in values:
        now = 1 if v >= 0.5 + swing else -1 if v <= 0.5 - swing else 0
        if now and now != side:
            flips += side != 0
            side = now
    return flips


class Oscillation(Detector):
    """D accuracy swinging between D winning and D losing, again and again, without settling."""

    name = "oscillation"

    def __init__(self, window: int = 20, warmup: int = 0, swing: float = 0.35, swings: int = 4):
        super().__init__(window, warmup)
        self.swing, self.swings = swing, swings

    def check(self) -> tuple[str, str] | None:
        acc = self.series("train/d_acc")
        flips = swings(acc, self.swing)
        if flips < self.swings:
            return None
        return (
            f"D accuracy crossed from below {0.5 - self.swing:.2f} to above {0.5 + self.swing:.2f} (or back) "
            f"{flips} times over {self.span} (min {min(acc):.2f}, max {max(acc):.2f})",
            "",
        )


DETECTORS = {d.name: d for d in (VanishingGradients, ModeCollapse, Divergence, Stuck, Oscillation)}


class Diagnosis:
    """The detectors of one run and the events they raised; no Lightning in here (tests drive it by hand)."""

    def __init__(self, every: int, warmup: int, window: int, detectors: Mapping[str, Mapping[str, Any]]):
        unknown = set(detectors) - set(DETECTORS)
        if unknown:
            raise ValueError(f"health: unknown detector(s) {sorted(unknown)}; known: {sorted(DETECTORS)}")
        self.detectors = []
        for name, options in detectors.items():
            if options is None or options.get("enabled", True) is False:
                continue
            options = {k: v for k, v in options.items() if k != "enabled"}
            steps = options.pop("window", window)  # in G steps: how many logging steps that is
            n = max(3, math.ceil(steps / max(every, 1)))
            self.detectors.append(DETECTORS[name](window=n, warmup=warmup, **options))
        self.events: list[Event] = []
        self.context = Context()

    @property
    def context(self) -> Context:
        return self._context

    @context.setter
    def context(self, ctx: Context) -> None:
        self._context = ctx
        for detector in self.detectors:
            # A critic (WGAN, WGAN-GP, hinge) scores reals above fakes nearly always when healthy (the Wasserstein
            # estimate stays positive), and its G loss does not saturate: D-accuracy rules do not apply.
            detector.applies = not (detector.reads_d_accuracy and ctx.critic)
            if isinstance(detector, VanishingGradients):
                detector.saturating = ctx.loss == "minimax"
            if isinstance(detector, Divergence):
                detector.critic, detector.scaled_grads = ctx.critic, ctx.scaled_grads

    def named(self, name: str) -> bool:
        return any(e.name == name for e in self.events)

    def train(self, step: int, row: Row) -> list[Event]:
        return self._record(step, [(d, d.train(step, row)) for d in self.detectors])

    def validate(self, step: int, metrics: Row) -> list[Event]:
        return self._record(step, [(d, d.validate(step, metrics)) for d in self.detectors])

    def nonfinite(self, step: int, what: str) -> list[Event]:
        """The non-finite guard stopped the run (model.on_nonfinite=stop): a divergence, named like the others."""
        return self._record(step, [(DETECTORS["divergence"], (what, ""))])

    def _record(self, step: int, found: Iterable[tuple[Any, tuple[str, str] | None]]) -> list[Event]:
        new = []
        for detector, hit in found:
            if hit is None or self.named(detector.name):
                continue
            if detector.name == "stuck" and hit[1] == "high" and self.named("vanishing_gradients"):
                continue  # the same D win, already named with its cause
            evidence, detail = hit
            event = Event(detector.name, step, evidence, remedies(detector.name, self.context, detail))
            self.events.append(event)
            new.append(event)
        return new


class HealthCheck(L.Callback):
    """Runs the Diagnosis during training; reports each event everywhere; stops the run if asked to."""

    def __init__(
        self,
        dirpath: str,
        on_failure: str = "warn",
        warmup: int = 200,
        window: int = 200,
        detectors: Mapping[str, Mapping[str, Any]] | None = None,
    ):
        if on_failure not in ("warn", "stop"):
            raise ValueError(f"health.on_failure must be 'warn' or 'stop', got {on_failure!r}")
        self.path = Path(dirpath) / EVENTS_FILE
        self.on_failure, self.warmup, self.window = on_failure, warmup, window
        self.options = {k: dict(v) if v is not None else None for k, v in (detectors or {}).items()}
        self.diagnosis: Diagnosis | None = None
        self.restored: list[Event] = []  # events named before a resume: not named again
        self.seen = 0  # flushes of the training diagnostics read so far
        self.stopped_at: int | None = None

    @property
    def events(self) -> list[Event]:
        return self.diagnosis.events if self.diagnosis else []

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        every = max(trainer.log_every_n_steps, 1)
        self.diagnosis = Diagnosis(every, self.warmup, self.window, self.options)
        lrs = [opt.param_groups[0]["lr"] for opt in trainer.optimizers]
        self.diagnosis.context = Context(
            loss=pl_module.choices.get("loss", getattr(pl_module.loss, "name", "")),
            critic=pl_module.loss.critic,
            lr_d=lrs[0] if lrs else None,
            lr_g=lrs[1] if len(lrs) > 1 else None,
            config=pl_module.run_config or {},
            scaled_grads=str(trainer.precision).startswith("16"),
        )
        self.diagnosis.events = list(self.restored)
        self.seen = pl_module.trainlog.flushes

    def state_dict(self) -> dict[str, Any]:
        return {"events": [asdict(e) for e in self.events]}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.restored = [Event(**e) for e in state_dict.get("events", [])]

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any) -> None:
        trainlog = pl_module.trainlog
        if self.diagnosis is None or trainlog.flushes == self.seen:
            return  # not a logging step: nothing new, and nothing read from the device
        self.seen = trainlog.flushes
        if "train/d_loss" not in trainlog.sent:
            return  # a validation flush (the metrics, the step counters): not a row of training diagnostics
        row = {k: v for k, v in trainlog.sent.items() if k.startswith("train/")}
        self.report(trainer, pl_module, self.diagnosis.train(trainlog.step, row))

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.diagnosis is None or trainer.sanity_checking:
            return
        metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("val/")}
        self.report(trainer, pl_module, self.diagnosis.validate(pl_module.g_step, metrics))

    def on_exception(
        self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException
    ) -> None:
        if self.diagnosis is not None and isinstance(exception, NonFiniteError):
            what = str(exception).split("; training stopped")[0]
            self.report(trainer, pl_module, self.diagnosis.nonfinite(pl_module.g_step, what), stop=False)

    def report(
        self, trainer: L.Trainer, pl_module: L.LightningModule, events: list[Event], stop: bool = True
    ) -> None:
        may_stop = stop and self.on_failure == "stop"
        stop = may_stop and bool(events)
        if trainer.world_size > 1 and may_stop:
            # Every rank stops at the same step, on rank 0's word (the events it reports); this runs on logging
            # steps only, on every rank.
            stop = bool(trainer.strategy.broadcast(stop, src=0))
        if events and trainer.is_global_zero:
            for event in events:
                log.warning("health: %s", event.message())
                self.write(event)
                send(trainer.loggers, event, self.events)
        if stop and not trainer.should_stop:
            self.stopped_at = pl_module.g_step
            saved = save_last(trainer, pl_module)
            if trainer.is_global_zero:
                log.warning("health.on_failure=stop: stopped at G step %d; %s", pl_module.g_step, saved)
            trainer.should_stop = True

    def write(self, event: Event) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a") as f:  # one line per event, flushed now: a running run's report reads it
            f.write(json.dumps({**asdict(event), "title": event.title}) + "\n")

    def summary_rows(self) -> list[tuple[str, str]]:
        rows = [("diagnosis", e.message()) for e in self.events] or [("diagnosis", "no failure named")]
        if self.stopped_at is not None:
            rows.append(("stopped", f"at G step {self.stopped_at} (health.on_failure=stop)"))
        return rows


def send(loggers: Iterable[Any], event: Event, every: list[Event]) -> None:
    """`health/<name>` = 1 at the event's step for every logger; the message as text where a logger has text
    (W&B: the table of `every` event so far, which replaces the previous one)."""
    for logger in loggers:
        logger.log_metrics({f"health/{event.name}": 1.0}, step=event.step)
        kind = type(logger).__name__
        if kind == "TensorBoardLogger":
            logger.experiment.add_text(f"health/{event.name}", event.message(), global_step=event.step)
        elif kind == "WandbLogger":
            rows = [[e.step, e.title, e.message()] for e in every]
            logger.log_text(key="health", columns=["G step", "failure", "message"], data=rows)


def save_last(trainer: L.Trainer, pl_module: L.LightningModule) -> str:
    """last.ckpt before stopping: through the LastCheckpoint callback when there is one."""
    keeper = next((cb for cb in trainer.callbacks if isinstance(cb, LastCheckpoint)), None)
    if keeper is None:
        return "no last checkpoint callback: nothing saved"
    keeper.save(trainer, pl_module)
    return f"saved {keeper.path}"


def read_events(run_dir: str | Path) -> list[dict[str, Any]]:
    """The events a run wrote so far (a running run's file may end in a half-written line)."""
    path = Path(run_dir) / EVENTS_FILE
    if not path.is_file():
        return []
    events = []
    for line in path.read_text().splitlines():
        try:
            events.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return events
