"""Loading a state dict into a network with one clear error on a mismatch."""

from __future__ import annotations

from typing import Any

import torch

from src.errors import CheckpointError


def load_weights(
    net: torch.nn.Module, state: dict[str, Any], what: str, error: type[Exception] = CheckpointError
) -> None:
    """`net.load_state_dict(state)`; a mismatch raises `error` with `what` and the first of PyTorch's detail."""
    try:
        net.load_state_dict(state)
    except RuntimeError as e:
        raise error(f"{what}: {' '.join(str(e).split())[:300]}") from None
