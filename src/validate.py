"""Every numeric setting checked for type and range at start-up, in one table.

A bad value stops the run before anything is built, with one line that names the key, the value and
what is allowed, instead of a library's message (or a silent nonsense run) minutes later.
A rule's pattern is matched against the dotted key (`*` spans dots); keys absent from the config are
not checked, so one table serves every model, loss and data set.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from fnmatch import fnmatchcase
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf

from src.errors import ConfigError


@dataclass(frozen=True)
class Rule:
    pattern: str
    kind: str  # "int", "real", "fraction_or_count" (a float in (0, 1] or an int >= 1), "bool"
    low: float | None = None  # inclusive, unless low_open
    high: float | None = None  # inclusive, unless high_open
    low_open: bool = False
    high_open: bool = False
    null: bool = True  # null allowed (many keys use it for "off" or "from elsewhere")
    also: tuple = ()  # other values allowed (e.g. -1 meaning "off")
    items: int | None = None  # a list of this many numbers (each checked by the rule)

    def describe(self) -> str:
        if self.kind == "fraction_or_count":
            text = "a fraction in (0, 1] or a count >= 1"
        elif self.kind == "bool":
            text = "true or false"
        else:
            text = "an integer" if self.kind == "int" else "a number"
            bounds = []
            if self.low is not None:
                bounds.append(f"{'>' if self.low_open else '>='} {number(self.low)}")
            if self.high is not None:
                bounds.append(f"{'<' if self.high_open else '<='} {number(self.high)}")
            text += " " + " and ".join(bounds) if bounds else ""
        if self.items:
            text = f"a list of {f'{self.items} ' if self.items > 0 else ''}numbers, each {text}"
        extra = [f"{v}" for v in self.also] + (["null"] if self.null else [])
        return text + (f" (or {', '.join(extra)})" if extra else "")


def number(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else f"{x:g}"


POSITIVE_INT = {"kind": "int", "low": 1}
COUNT = {"kind": "int", "low": 0}
WEIGHT = {"kind": "real", "low": 0}

RULES = [
    Rule("seed", "int", 0, 2**32 - 1),
    # trainer: counts of G steps, epochs and batches
    Rule("trainer.max_steps", "int", 1, also=(-1,), null=False),
    Rule("trainer.max_epochs", "int", 1, also=(-1,)),
    Rule("trainer.log_every_n_steps", **POSITIVE_INT, null=False),
    Rule("trainer.check_val_every_n_epoch", **POSITIVE_INT),
    Rule("trainer.val_check_interval", "fraction_or_count"),
    Rule("trainer.limit_train_batches", "fraction_or_count"),
    Rule("trainer.limit_val_batches", "fraction_or_count", also=(0, 0.0)),
    Rule("trainer.num_sanity_val_steps", "int", 0, also=(-1,)),
    Rule("trainer.num_nodes", **POSITIVE_INT),
    Rule("trainer.deterministic", "bool"),
    # data
    Rule("data.batch_size", **POSITIVE_INT, null=False),
    Rule("data.val_batch_size", **POSITIVE_INT),
    Rule("data.num_workers", **COUNT),
    Rule("data.num_classes", **POSITIVE_INT),
    Rule("data.shape", "int", 1, items=-1),
    Rule("data.stage1_shape", "int", 1, items=-1),
    Rule("data.n_train", **POSITIVE_INT),
    Rule("data.n_val", **COUNT),
    Rule("data.val_size", **COUNT),
    Rule("data.captions_per_image", **POSITIVE_INT),
    Rule("data.contrast_captions", **COUNT),
    Rule("data.two_objects", "real", 0, 1),
    Rule("data.val_pairs", "real", 0, 1),
    Rule("data.*seed", "int", 0),
    # model
    Rule("model.latent_dim", **POSITIVE_INT, null=False),
    Rule("model.c_dim", **POSITIVE_INT),
    Rule("model.cont_dim", **COUNT),
    Rule("model.cat_dims", "int", 2, items=-1),
    Rule("model.n_critic", **POSITIVE_INT, null=False),
    Rule("model.pack", **POSITIVE_INT, null=False),
    Rule("model.stage", "int", 1, 2, also=("both",)),
    Rule("model.ema_decay", "real", 0, 1, low_open=True, high_open=True),
    Rule("model.ema_start", **COUNT),
    Rule("model.max_loss", "real", 0, low_open=True),
    Rule("model.optimizer_*.lr", "real", 0, low_open=True, null=False),
    Rule("model.optimizer_*.betas", "real", 0, 1, high_open=True, items=2),
    Rule("model.optimizer_*.weight_decay", **WEIGHT),
    Rule("model.lr_schedule.decay_start", "real", 0, 1, high_open=True),
    Rule("model.lr_schedule.total_steps", "int", 1, also=(-1,)),
    Rule("model.terms.*.weight", **WEIGHT),
    Rule("model.terms.*.weight_*", **WEIGHT),
    Rule("model.terms.*.real_*", **WEIGHT),
    Rule("model.terms.*.invariance", **WEIGHT),
    Rule("model.terms.*.augment.*", **WEIGHT),
    Rule("model.terms.*.fraction", "real", 0, 1, low_open=True),
    Rule("model.terms.*.contrast", "real", 0, 1),
    Rule("model.terms.*.temperature", "real", 0, low_open=True),
    Rule("model.figure_*", **POSITIVE_INT),
    Rule("model.*.base_channels", **POSITIVE_INT),
    Rule("model.*.max_channels", **POSITIVE_INT),
    Rule("model.*.cond_dim", **POSITIVE_INT),
    Rule("model.*.embed_dim", **POSITIVE_INT),
    Rule("model.*.head_hidden", **POSITIVE_INT),
    Rule("model.*.res_blocks", **COUNT),
    Rule("model.*.mbstd", **COUNT),
    Rule("model.*.hidden", "int", 1, items=-1),
    Rule("model.*.dropout", "real", 0, 1, high_open=True),
    Rule("model.*.leak", "real", 0, 1),
    Rule("model.*.init_std", "real", 0, low_open=True),
    # loss
    Rule("loss.gp_weight", **WEIGHT),
    Rule("loss.clip", "real", 0, low_open=True),
    Rule("loss.center", "real"),
    # text encoders
    Rule("text.dim", **POSITIVE_INT),
    Rule("text.ngrams", **POSITIVE_INT),
    Rule("text.seed", "int", 0),
    # evaluation
    Rule("eval.classifier.epochs", **POSITIVE_INT),
    Rule("eval.classifier.batch_size", **POSITIVE_INT),
    Rule("eval.classifier.lr", "real", 0, low_open=True),
    Rule("eval.classifier.seed", "int", 0),
    Rule("eval.kid_subset", **POSITIVE_INT),
    Rule("eval.is_splits", **POSITIVE_INT),
    # callbacks
    Rule("callbacks.samples.every_n_epochs", **POSITIVE_INT),
    Rule("callbacks.samples.n_samples", **POSITIVE_INT),
    Rule("callbacks.samples.n_points", **POSITIVE_INT),
    Rule("callbacks.samples.seed", "int", 0),
    Rule("callbacks.last_checkpoint.every_n_steps", **POSITIVE_INT),
    Rule("callbacks.model_checkpoint.save_top_k", "int", 0, also=(-1,)),
]


def leaves(node: Any, prefix: str = "") -> list[tuple[str, Any]]:
    """(dotted key, value) of every leaf; a list of scalars counts as one leaf."""
    if isinstance(node, dict):
        out = []
        for k, v in node.items():
            out += leaves(v, f"{prefix}.{k}" if prefix else str(k))
        return out
    if isinstance(node, list) and any(isinstance(v, dict | list) for v in node):
        return [x for i, v in enumerate(node) for x in leaves(v, f"{prefix}.{i}")]
    return [(prefix, node)]


def is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def is_real(v: Any) -> bool:
    return (is_int(v) or isinstance(v, float)) and math.isfinite(v)


def fits(rule: Rule, v: Any) -> bool:
    if not isinstance(v, bool) and any(type(v) is type(a) and v == a for a in rule.also):
        return True
    if rule.kind == "bool":
        return isinstance(v, bool)
    if rule.kind == "fraction_or_count":
        return (isinstance(v, float) and 0 < v <= 1) or (is_int(v) and v >= 1)
    if not (is_int(v) if rule.kind == "int" else is_real(v)):
        return False
    if rule.low is not None and (v <= rule.low if rule.low_open else v < rule.low):
        return False
    return rule.high is None or (v < rule.high if rule.high_open else v <= rule.high)


def problem(rule: Rule, key: str, v: Any) -> str | None:
    if v is None:
        return None if rule.null else f"{key} must be set: {rule.describe()}"
    if rule.items is not None:
        if not isinstance(v, list) or (rule.items > 0 and len(v) != rule.items) or not v:
            return f"{key}={v!r} must be {rule.describe()}"
        bad = [x for x in v if not fits(rule, x)]
        return f"{key}={v!r} must be {rule.describe()} ({bad[0]!r} is not)" if bad else None
    return None if fits(rule, v) else f"{key}={v!r} must be {rule.describe()}"


def check_config(cfg: DictConfig | dict) -> None:
    """Raise ConfigError naming the first numeric setting of the wrong type or out of range."""
    # Unresolved: a value interpolated from another key (${trainer.max_steps}) is checked there, under
    # the name the user typed.
    plain = OmegaConf.to_container(cfg, resolve=False) if isinstance(cfg, DictConfig | ListConfig) else cfg
    for key, value in leaves({k: v for k, v in plain.items() if k != "hydra"}):
        if value == "???":  # OmegaConf's mandatory value, never given
            raise ConfigError(f"{key} must be set: add {key}=... to the command line")
        if isinstance(value, str) and "${" in value:
            continue
        for rule in RULES:
            if fnmatchcase(key, rule.pattern):
                message = problem(rule, key, value)
                if message:
                    raise ConfigError(message)
                break
