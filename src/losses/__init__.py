from src.losses.adversarial import (
    LOSSES,
    LSGAN,
    AdversarialLoss,
    Hinge,
    Minimax,
    NonSaturating,
    RelativisticPairing,
    Wasserstein,
    WassersteinGP,
    gradient_penalty,
)

__all__ = [
    "LOSSES",
    "LSGAN",
    "AdversarialLoss",
    "Hinge",
    "Minimax",
    "NonSaturating",
    "RelativisticPairing",
    "Wasserstein",
    "WassersteinGP",
    "gradient_penalty",
]
