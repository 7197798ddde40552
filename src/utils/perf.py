"""Opt-in speed settings (`perf.*`): TF32, channels_last, torch.compile of G and D."""

from __future__ import annotations

import logging
from typing import Any

import torch
from torch import nn

log = logging.getLogger(__name__)


def apply_perf(perf: Any, model: nn.Module) -> list[str]:
    """Apply the settings; returns what was done (for the log)."""
    perf = dict(perf or {})
    done = []
    if perf.get("tf32", True):
        torch.set_float32_matmul_precision("high")  # TF32 matmuls on Ampere+; no effect on CPU
        torch.backends.cudnn.allow_tf32 = True
        done.append("tf32")
    else:
        torch.set_float32_matmul_precision("highest")
        torch.backends.cudnn.allow_tf32 = False
    image_model = len(model.sample_shape) == 3
    if perf.get("channels_last") and image_model:
        for net in nets(model):
            net.to(memory_format=torch.channels_last)
        model.memory_format = torch.channels_last
        done.append("channels_last")
    if perf.get("compile"):
        options = dict(perf.get("compile_options") or {})
        if try_compile(model, options):
            done.append("compile")
    return done


def nets(model: nn.Module) -> list[nn.Module]:
    return [n for n in (model.generator, model.discriminator, model.ema_generator) if n is not None]


def try_compile(model: nn.Module, options: dict[str, Any]) -> bool:
    """Compile G and D in place (state_dict keys unchanged); on any failure run uncompiled, with a message."""
    for net in nets(model):
        net.compile(**options)
    try:
        with torch.no_grad():
            was = [n.training for n in nets(model)]
            for n in nets(model):
                n.eval()
            latent = model.sample_latent(2)
            model.discriminate(model.generate_eval(latent), latent.get("y"))
            for n, mode in zip(nets(model), was):
                n.train(mode)
        return True
    except Exception as e:  # a missing compiler, an unsupported op: speed is optional, training is not
        for net in nets(model):
            net._compiled_call_impl = None
        log.warning(
            "torch.compile failed (%s: %s); training uncompiled",
            type(e).__name__,
            str(e).split("\n")[0][:200],
        )
        return False
