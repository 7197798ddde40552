"""Feature extractors for FID / KID / IS: the standard Inception network, or the offline domain classifier."""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from torch import Tensor, nn

from src.errors import GanZooError
from src.utils.network import network_timeout

log = logging.getLogger(__name__)

INCEPTION_FILE = "weights-inception-2015-12-05-6726825d.pth"
INCEPTION_URL = f"https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/{INCEPTION_FILE}"


class WeightsNotFoundError(GanZooError, FileNotFoundError):
    """Pretrained weights that are not on disk and could not be downloaded."""


def inception_weights(path: str | None, cache_dir: str | Path, download: bool, timeout: float = 15.0) -> Path:
    """The Inception weights file torchmetrics' FID uses (torch-fidelity's), found or fetched, else a clear error."""
    hub = Path(torch.hub.get_dir()) / "checkpoints" / INCEPTION_FILE
    candidates = [Path(path)] if path else [Path(cache_dir) / INCEPTION_FILE, hub]
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    problem = "not found"
    if download and not path:
        target = candidates[0]
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            with network_timeout(timeout):
                torch.hub.download_url_to_file(INCEPTION_URL, str(target), progress=False)
            return target
        except Exception as e:  # no network, a proxy, a partial file: all end in the same advice
            target.unlink(missing_ok=True)
            problem = (
                f"not found, and the download failed ({type(e).__name__}: {' '.join(str(e).split())[:200]})"
            )
    raise WeightsNotFoundError(
        f"eval.feature_extractor=inception needs the Inception-v3 weights file {INCEPTION_FILE} (91 MB): {problem}. "
        f"Looked in: {', '.join(str(c) for c in candidates)}. On a machine with internet download {INCEPTION_URL} "
        f"and put it at {candidates[0]} (or set eval.inception_weights=/path/to/{INCEPTION_FILE}); "
        "or use eval.feature_extractor=domain, which works offline."
    )


class InceptionFeatures(nn.Module):
    """Inception-v3 (torchmetrics / torch-fidelity) on images in [-1, 1]: 2048-D pool features or logits."""

    def __init__(self, weights: Path, output: str = "2048"):
        super().__init__()
        from torchmetrics.image.fid import NoTrainInceptionV3

        try:
            state = torch.load(weights, map_location="cpu", weights_only=True)
            if not isinstance(state, dict) or "fc.weight" not in state:
                raise ValueError("not an Inception-v3 state dict")
        except Exception as e:
            raise WeightsNotFoundError(
                f"{weights} is not a usable Inception weights file ({e}); download {INCEPTION_URL} again"
            ) from None
        self.net = NoTrainInceptionV3(
            name="inception-v3-compat", features_list=[output], feature_extractor_weights_path=str(weights)
        )
        self.num_features = 2048 if output == "2048" else 1008

    def forward(self, x: Tensor) -> Tensor:
        x = ((x.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        return self.net(x)


class DomainFeatures(nn.Module):
    """The domain classifier's penultimate features (FID/KID) or log-probabilities (IS analogue).

    A 1-channel classifier on `channels`-channel images (Stacked MNIST) reads each channel: features
    are concatenated, log-probabilities combined into the joint over all channels.
    """

    def __init__(self, classifier: nn.Module, output: str = "features", channels: int = 1):
        super().__init__()
        if output not in ("features", "logits"):
            raise ValueError(f"output must be 'features' or 'logits', got {output!r}")
        self.classifier, self.output = classifier.eval().requires_grad_(False), output
        self.per_channel = classifier.shape[0] == 1 and channels > 1
        k = channels if self.per_channel else 1
        self.num_features = classifier.feature_dim * k if output == "features" else classifier.num_classes**k

    def one(self, x: Tensor) -> Tensor:
        if self.output == "features":
            return self.classifier.features(x)
        return torch.log_softmax(self.classifier(x), 1)

    def train(self, mode: bool = True) -> DomainFeatures:
        return super().train(False)  # always in eval mode: BatchNorm statistics and dropout frozen

    @torch.no_grad()
    def forward(self, x: Tensor) -> Tensor:
        x = x.float()
        if not self.per_channel:
            return self.one(x)
        outs = [self.one(x[:, c : c + 1]) for c in range(x.shape[1])]
        if self.output == "features":
            return torch.cat(outs, 1)
        joint = outs[0]
        for logp in outs[1:]:  # log p(a, b) = log p(a) + log p(b), flattened over all combinations
            joint = (joint[:, :, None] + logp[:, None, :]).flatten(1)
        return joint
