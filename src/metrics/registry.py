"""Which evaluation metrics a run gets: one table, decided from facts the model and the data expose.

Data facts: `shape` (images or vectors), `has_labels` / `num_classes`, `modes` (a Gaussian mixture's
means and std), `stacked` (Stacked MNIST: channels x classes per channel), `classifier_data` (what the
domain classifier learns from). Model facts: `label_conditioned` (G draws for given labels) and
`code_classes` (the size of InfoGAN's first categorical code), `continuous_codes` (how many continuous
codes), and `condition_groups(latent)` (which samples share a condition: a label, c1). `eval.metrics` = auto (all that apply,
in the table's order: the first with a headline is what "best" checkpoints follow), a list of names, or [].
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from functools import cache
from typing import Any

import torch

from src.errors import ConfigError
from src.metrics.classifier import load_or_train
from src.metrics.codes import ContinuousCodes
from src.metrics.conditional import ClassConsistency, CodeAccuracy, IntraClassFID, WithinDiversity
from src.metrics.features import DomainFeatures, InceptionFeatures, inception_weights
from src.metrics.image import ClassBalance, RealFake, StackedModes
from src.metrics.manifold import Manifold
from src.metrics.modes import ModeCoverage

log = logging.getLogger(__name__)


class Sources:
    """What metrics are built from, made on first use: the domain classifier and the feature extractors."""

    def __init__(self, cfg: Mapping[str, Any], data: Any):
        self.cfg, self.data = cfg, data
        self.source = data.classifier_data
        settings = dict(cfg.get("classifier") or {})
        self.cache_dir = settings.pop("cache_dir", ".cache/classifiers")
        self.settings = settings
        self.evaluator = cache(lambda: load_or_train(self.source, self.cache_dir, **self.settings))
        self.features = cache(self._features)
        self.tag, self.skipped = None, ""  # the feature extractor's name, or why image metrics do not apply
        if len(data.shape) == 3:
            extractor = cfg.get("feature_extractor", "domain")
            if extractor not in ("domain", "inception"):
                raise ConfigError(
                    f"eval.feature_extractor must be 'domain' or 'inception', got {extractor!r}"
                )
            if extractor == "inception" or self.source.has_labels:
                self.tag = extractor
            else:
                self.skipped = (
                    f"data={data.name} has no labels to train the domain classifier on: FID/KID/IS need "
                    "eval.feature_extractor=inception"
                )

    def _features(self, output: str) -> Any:
        """`features` (FID, KID) or `logits` (IS) of the configured extractor."""
        if self.tag == "domain":
            return DomainFeatures(self.evaluator()[0], output, channels=self.data.shape[0])
        weights = inception_weights(
            self.cfg.get("inception_weights"),
            self.cfg.get("inception_dir", ".cache"),
            bool(self.cfg.get("inception_download", True)),
        )
        return InceptionFeatures(weights, "2048" if output == "features" else "logits_unbiased")

    def class_counts(self) -> torch.Tensor:
        labels = self.data.data["train"][1]
        return torch.bincount(labels[labels >= 0], minlength=int(self.data.num_classes))


def labelled(data: Any) -> bool:
    return bool(data.has_labels and data.num_classes)


# name, applies(model, data, sources), make(model, data, sources)
Rule = tuple[str, Callable[[Any, Any, Sources], bool], Callable[[Any, Any, Sources], Any]]
REGISTRY: list[Rule] = [
    (
        "class_consistency",
        lambda m, d, s: m.label_conditioned,
        lambda m, d, s: ClassConsistency(*s.evaluator()),
    ),
    (
        "c1_acc",
        lambda m, d, s: bool(m.code_classes) and d.has_labels,
        lambda m, d, s: CodeAccuracy(m.code_classes, int(d.num_classes), source="q"),
    ),
    (
        "c1_sample_acc",
        lambda m, d, s: bool(m.code_classes) and d.has_labels,
        lambda m, d, s: CodeAccuracy(m.code_classes, int(d.num_classes), "samples", *s.evaluator()),
    ),
    ("modes", lambda m, d, s: d.modes is not None, lambda m, d, s: ModeCoverage(*d.modes)),
    (
        "stacked_modes",
        lambda m, d, s: d.stacked is not None,
        lambda m, d, s: StackedModes(*s.evaluator(), channels=d.stacked[0], classes=d.stacked[1]),
    ),
    (
        "fid",
        lambda m, d, s: s.tag is not None,
        lambda m, d, s: RealFake("fid", s.features("features"), s.tag),
    ),
    (
        "kid",
        lambda m, d, s: s.tag is not None,
        lambda m, d, s: RealFake(
            "kid", s.features("features"), s.tag, kid_subset=int(s.cfg.get("kid_subset", 1000))
        ),
    ),
    (
        "is",
        lambda m, d, s: s.tag is not None,
        lambda m, d, s: RealFake(
            "is", s.features("logits"), s.tag, is_splits=int(s.cfg.get("is_splits", 10))
        ),
    ),
    (
        "prdc",
        lambda m, d, s: s.tag is not None,
        lambda m, d, s: Manifold(
            s.features("features"), int(s.cfg.get("prc_k", 3)), int(s.cfg.get("dc_k", 5))
        ),
    ),
    (
        "class_balance",
        lambda m, d, s: len(d.shape) == 3 and s.source is d and labelled(d),
        lambda m, d, s: ClassBalance(*s.evaluator(), s.class_counts()),
    ),
    (
        "intra_fid",
        lambda m, d, s: m.label_conditioned and s.tag is not None and labelled(d),
        lambda m, d, s: IntraClassFID(s.features("features")),
    ),
    (
        "within_diversity",
        lambda m, d, s: (m.label_conditioned or bool(m.code_classes)) and s.tag is not None and labelled(d),
        lambda m, d, s: WithinDiversity(s.features("features")),
    ),
    (
        "codes",
        lambda m, d, s: bool(m.continuous_codes) and len(d.shape) == 3,
        lambda m, d, s: ContinuousCodes(m, m.continuous_codes),
    ),
]


def build_metrics(eval_cfg: Mapping[str, Any] | None, model: Any, data: Any) -> dict[str, Any]:
    """The evaluation metrics of a run, by name, in the registry's order."""
    cfg = dict(eval_cfg or {})
    choice = cfg.get("metrics", "auto")
    if choice in (None, "none") or (not isinstance(choice, str) and len(choice) == 0):
        return {}
    sources = Sources(cfg, data)
    available = {name: make for name, applies, make in REGISTRY if applies(model, data, sources)}
    if choice == "auto":
        if sources.skipped:
            log.warning(sources.skipped)
        names = list(available)
    else:
        names = [choice] if isinstance(choice, str) else list(choice)
        unknown = [n for n in names if n not in available]
        if unknown:
            why = f" ({sources.skipped})" if sources.skipped else ""
            raise ConfigError(
                f"eval.metrics: {', '.join(unknown)} do(es) not apply to this model and data{why}; "
                f"available: {', '.join(available) or 'none'}"
            )
    return {name: available[name](model, data, sources) for name in names}


def metric_figures(metrics: Mapping[str, Any]) -> dict[str, Any]:
    """The charts of the metrics' last compute() by name (the class balance's bar chart), as uint8 images."""
    figures = {}
    for metric in metrics.values():
        figures.update(metric.figures() if hasattr(metric, "figures") else {})
    return figures
