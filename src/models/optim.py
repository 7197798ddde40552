"""Optimizers and learning-rate schedules from Hydra `_partial_` configs, checked when the model is built.

    optimizer_g: {_target_: torch.optim.Adam, _partial_: true, lr: 2.0e-4, betas: [0.5, 0.999]}

Null options are dropped, so a loss config can swap the optimizer of any model and null what no longer
applies (WGAN: `{_target_: torch.optim.RMSprop, lr: 5.0e-5, betas: null}`); lists become tuples, so
checkpoints hold plain values.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from functools import partial
from typing import Any

import torch
from omegaconf import DictConfig, ListConfig, OmegaConf

PROBE = [torch.nn.Parameter(torch.zeros(1))]  # a parameter to build a throw-away optimizer on


def plain(value: Any) -> Any:
    if isinstance(value, DictConfig | ListConfig):
        value = OmegaConf.to_container(value, resolve=True)
    return tuple(value) if isinstance(value, list) else value


def cleaned(factory: Any, key: str) -> partial:
    if not isinstance(factory, partial):
        raise ValueError(
            f"model.{key} must be a Hydra partial config: _target_ (e.g. torch.optim.Adam) and _partial_: true, "
            f"got {factory!r}"
        )
    options = {k: plain(v) for k, v in factory.keywords.items() if v is not None}
    return partial(factory.func, *factory.args, **options)


def optimizer_factory(factory: Any, key: str) -> Callable[..., torch.optim.Optimizer]:
    """The optimizer config as a callable on parameters, tried now on a dummy parameter."""
    factory = cleaned(factory, key)
    try:
        factory(PROBE)
    except TypeError as e:
        raise ValueError(
            f"model.{key}: {factory.func.__name__} does not accept {sorted(factory.keywords)}: {e}"
        ) from None
    return factory


def schedule_factory(factory: Any) -> Callable[..., Any] | None:
    """The schedule config as a callable on an optimizer (None: a constant rate), tried now."""
    if factory is None:
        return None
    factory = cleaned(factory, "lr_schedule")
    factory(torch.optim.SGD(PROBE, lr=1.0), **({"total_steps": 1} if needs_length(factory) else {}))
    return factory


def needs_length(schedule: Callable[..., Any]) -> bool:
    """A schedule that takes `total_steps` and was given none (or -1): the model fills in the run's length."""
    if "total_steps" not in inspect.signature(schedule).parameters:
        return False
    given = getattr(schedule, "keywords", {}).get("total_steps")
    return given is None or given <= 0
