from src.metrics.modes import ModeCoverage, mode_stats, summarize

__all__ = ["ModeCoverage", "build_metrics", "mode_stats", "summarize"]


def build_metrics(eval_cfg, model, datamodule) -> dict:
    """The evaluation metrics of a run: `eval.metrics` = auto (all that apply), a list of names, or [].

    Order matters (the first metric that names a headline is what "best" checkpoints follow):
    the model's own (class consistency, c1), the data's (modes), then image quality (FID, KID, IS,
    class coverage).
    """
    import logging
    from functools import cache

    import torch

    from src.errors import ConfigError
    from src.metrics.classifier import load_or_train
    from src.metrics.features import DomainFeatures, InceptionFeatures, inception_weights
    from src.metrics.image import ClassCoverage, RealFake

    cfg = dict(eval_cfg or {})
    choice = cfg.get("metrics", "auto")
    if choice in (None, "none") or (not isinstance(choice, str) and len(choice) == 0):
        return {}
    settings = dict(cfg.get("classifier") or {})
    cache_dir = settings.pop("cache_dir", ".cache/classifiers")
    source = getattr(datamodule, "classifier_source", datamodule)

    @cache
    def evaluator():
        return load_or_train(source, cache_dir, **settings)

    factories = dict(model.evaluation_metrics(datamodule, evaluator))
    factories.update(datamodule.evaluation_metrics(evaluator))
    shape = tuple(datamodule.shape)
    skipped = ""
    if len(shape) == 3:
        extractor = cfg.get("feature_extractor", "domain")
        if extractor == "domain" and source.has_labels:
            tag = "domain"

            def features(output):
                return DomainFeatures(evaluator()[0], output, channels=shape[0])
        elif extractor == "inception":
            tag = "inception"

            @cache
            def weights():
                return inception_weights(
                    cfg.get("inception_weights"),
                    cfg.get("inception_dir", ".cache"),
                    bool(cfg.get("inception_download", True)),
                )

            def features(output):
                return InceptionFeatures(weights(), "2048" if output == "features" else "logits_unbiased")
        elif extractor == "domain":
            tag, skipped = (
                None,
                (
                    f"data={datamodule.name} has no labels to train the domain classifier on: FID/KID/IS need "
                    "eval.feature_extractor=inception"
                ),
            )
        else:
            raise ConfigError(f"eval.feature_extractor must be 'domain' or 'inception', got {extractor!r}")
        if tag:
            shared = cache(lambda: features("features"))
            kid_subset, splits = int(cfg.get("kid_subset", 1000)), int(cfg.get("is_splits", 10))
            factories["fid"] = lambda: RealFake("fid", shared(), tag)
            factories["kid"] = lambda: RealFake("kid", shared(), tag, kid_subset=kid_subset)
            factories["is"] = lambda: RealFake("is", features("logits"), tag, is_splits=splits)
        if source is datamodule and datamodule.has_labels and datamodule.num_classes:
            labels = datamodule.data["train"][1]
            hist = torch.bincount(labels[labels >= 0], minlength=int(datamodule.num_classes))
            factories["class_coverage"] = lambda: ClassCoverage(*evaluator(), hist)
    if choice == "auto":
        if skipped:
            logging.getLogger(__name__).warning(skipped)
        names = list(factories)
    else:
        names = [choice] if isinstance(choice, str) else list(choice)
        unknown = [n for n in names if n not in factories]
        if unknown:
            why = f" ({skipped})" if skipped else ""
            raise ConfigError(
                f"eval.metrics: {', '.join(unknown)} do(es) not apply to this model and data{why}; "
                f"available: {', '.join(factories) or 'none'}"
            )
    return {name: factories[name]() for name in names}
