"""Optimizers from a flat config: `{name: adam, lr: 2e-4, betas: [0.5, 0.999]}`.

A flat schema lets a loss config swap the optimizer (WGAN: RMSprop) by setting `name` and
nulling the options that no longer apply, which a `_target_` node merged by Hydra cannot do.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterable
from typing import Any

import torch

OPTIMIZERS = {
    "adam": torch.optim.Adam,
    "adamw": torch.optim.AdamW,
    "rmsprop": torch.optim.RMSprop,
    "sgd": torch.optim.SGD,
}


def build_optimizer(
    params: Iterable[torch.nn.Parameter], name: str = "adam", **options: Any
) -> torch.optim.Optimizer:
    """`name` is one of OPTIMIZERS or a dotted path to a torch.optim.Optimizer; null options are dropped."""
    if name in OPTIMIZERS:
        cls = OPTIMIZERS[name]
    elif "." in name:
        module, _, attr = name.rpartition(".")
        try:
            cls = getattr(importlib.import_module(module), attr)
        except (ImportError, AttributeError) as e:
            raise ValueError(f"optimizer {name!r} could not be imported: {e}") from None
    else:
        raise ValueError(
            f"unknown optimizer {name!r}; valid choices: {', '.join(OPTIMIZERS)} or a dotted class path"
        )
    options = {k: (tuple(v) if isinstance(v, list) else v) for k, v in options.items() if v is not None}
    try:
        return cls(params, **options)
    except TypeError as e:
        raise ValueError(f"optimizer {name!r} does not accept options {sorted(options)}: {e}") from None
