from src.metrics.modes import ModeCoverage, mode_stats, summarize

__all__ = ["ModeCoverage", "build_metrics", "mode_stats", "summarize"]


def build_metrics(eval_cfg, model, datamodule) -> dict:
    """The evaluation metrics of a run: `eval.metrics` = auto (all that apply), a list of names, or none."""
    from functools import cache

    from src.errors import ConfigError
    from src.metrics.classifier import load_or_train

    choice = eval_cfg.get("metrics", "auto") if eval_cfg is not None else "auto"
    if choice in (None, "none") or (not isinstance(choice, str) and len(choice) == 0):
        return {}
    settings = dict(eval_cfg.get("classifier") or {}) if eval_cfg is not None else {}
    cache_dir = settings.pop("cache_dir", ".cache/classifiers")

    @cache
    def evaluator():
        return load_or_train(datamodule, cache_dir, **settings)

    factories = {name: (lambda m=m: m) for name, m in datamodule.evaluation_metrics().items()}
    factories.update(model.evaluation_metrics(datamodule, evaluator))
    if choice == "auto":
        names = list(factories)
    else:
        names = [choice] if isinstance(choice, str) else list(choice)
        unknown = [n for n in names if n not in factories]
        if unknown:
            raise ConfigError(
                f"eval.metrics: {', '.join(unknown)} do(es) not apply to this model and data; "
                f"available: {', '.join(factories) or 'none'}"
            )
    return {name: factories[name]() for name in names}
