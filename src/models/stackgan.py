"""StackGAN (Zhang et al. 2017): text -> a low-resolution image (stage I) -> a high-resolution image (stage II).

Both stages are this module on the shared step. `model.stage=1` trains a text-conditioned GAN at
`stage1_shape` on a downsampled copy of the data; `model.stage=2` trains G(stage-I image, text) at the
data's `shape`, with stage I's generator frozen: its settings and weights are handed in as `stage1_source`
(read from `model.stage1_ckpt` by src/checkpoint.py when the model is built). `model.stage=both` is a
plan of two runs that src/train.py makes in turn (`model.stages` in conf/model/stackgan.yaml).

Each stage's auxiliary terms come from config (`model.terms`, src/losses/text.py): the conditioning
augmentation's KL (G phase), the matching-aware discriminator's mismatched-text term (D phase) and,
optionally, an image-text contrastive term on D's embeddings (both phases; not in the paper).

A checkpoint rebuilds everything from its config: the text encoder (conf/text), the figure captions and,
for stage II, the stage-I generator's settings (`model.stage1`; its weights are in the state dict), so
`src.sample ckpt=... prompt="..."` needs neither the data nor the stage-I file.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf
from torch import Tensor, nn

from src.errors import ConfigError, DataError
from src.losses.auxiliary import AuxTerm, DOut
from src.losses.text import MismatchTerm, TextMatchTerm
from src.models.module import GANModule
from src.models.networks.stackgan import Stage1Generator, Stage2Generator, TextDiscriminator
from src.text.encoders import TextEncoder
from src.utils.weights import load_weights

STAGE1_HINT = (
    "train stage I first (python -m src.train model=stackgan model.stage=1 data=...) and pass its "
    "checkpoint or run folder, or train both stages in one run with model.stage=both"
)
NOT_FOR = {
    1: ("res_blocks", "min_channels", "skip"),
    2: ("max_channels",),
}  # generator options of the other stage


class StackGAN(GANModule):
    def __init__(
        self,
        generator: Mapping[str, Any],
        discriminator: Mapping[str, Any],
        *args: Any,
        text_encoder: TextEncoder | None,
        stage1_shape: Sequence[int] | None,
        shape: Sequence[int],
        stage: int | str = 1,
        stage1_ckpt: str | None = None,
        stage1: Mapping[str, Any] | None = None,
        stage1_source: tuple[dict, dict[str, Tensor]] | None = None,
        latent_dim: int = 100,
        c_dim: int = 128,
        terms: Mapping[str, AuxTerm | None] | None = None,
        figure_captions: Sequence[str] | None = None,
        figure_rows: int = 8,
        figure_samples: int = 4,
        **kwargs: Any,
    ):
        """`generator` / `discriminator`: network options (src/models/networks/stackgan.py) for the stage trained.
        Stage II: `stage1` is the stage-I settings a stage-II checkpoint stores (its weights are in the state
        dict); else `stage1_source` (settings, generator weights) read from `stage1_ckpt`."""
        if str(stage) not in ("1", "2", "both"):
            raise ConfigError(f"model.stage must be 1, 2 or both, got {stage!r}")
        if not isinstance(text_encoder, TextEncoder) or not stage1_shape:
            raise ConfigError(
                "model=stackgan needs captioned data: data=shapes (embedded), data=cub or data=oxford102 "
                "(they choose the text encoder, conf/text)"
            )
        level = 2 if str(stage) == "2" else 1
        low, high, text_dim = (
            tuple(int(s) for s in stage1_shape),
            tuple(int(s) for s in shape),
            text_encoder.dim,
        )
        options = {k: v for k, v in dict(generator).items() if k not in NOT_FOR[level]}
        d_options = discriminator_options(discriminator, terms or {})
        spec = g1 = None
        if level == 2:
            spec, g1 = frozen_stage1(stage1, stage1_source, stage1_ckpt, low, text_encoder)
            latent_dim = spec["latent_dim"]  # z feeds stage I
            net_g = Stage2Generator(text_dim, c_dim, high, low, **options)
            net_d = TextDiscriminator(text_dim, high, **d_options)
        else:
            net_g = Stage1Generator(text_dim, c_dim, latent_dim, low, **options)
            net_d = TextDiscriminator(text_dim, low, **d_options)
        super().__init__(net_g, net_d, *args, latent_dim=latent_dim, terms=terms, **kwargs)
        self.stage = level
        self.text_encoder = text_encoder  # a plain object, not a submodule: never in the state dict
        self.text_dim, self.c_dim, self.low_shape, self.image_shape = text_dim, c_dim, low, high
        self.stage1_spec = spec
        self.stage1_generator = g1.requires_grad_(False).eval() if g1 is not None else None
        self.figure_texts = [str(t) for t in figure_captions or []]
        self.figure_rows, self.figure_samples = figure_rows, figure_samples
        self.register_buffer("figure_embeddings", torch.zeros(len(self.figure_texts), text_dim))

    def train(self, mode: bool = True) -> StackGAN:
        super().train(mode)
        if self.stage1_generator is not None:
            self.stage1_generator.eval()  # frozen, BatchNorm statistics included
        return self

    # --- the hooks of the shared step ---------------------------------------------------------------------
    def sample_latent(
        self, n: int, labels: Tensor | None = None, generator: torch.Generator | None = None
    ) -> dict[str, Tensor]:
        """z (stage I's noise), eps (the CA noise of the stage trained; eps1: stage I's) and y, the text
        embeddings: the batch's, or the figure captions' in turn when none are given."""
        y = labels if labels is not None else self.default_text(n)
        latent = {
            "z": self.sample_noise(n, self.latent_dim, generator),
            "eps": self.normal(n, self.c_dim, generator),
            "y": y.to(self.device, torch.float32),
        }
        if self.stage1_generator is not None:
            latent["eps1"] = self.normal(n, self.stage1_spec["c_dim"], generator)
        return latent

    def resample_noise(self, latent: dict[str, Tensor]) -> tuple[dict[str, Tensor], list[str]]:
        fresh = self.sample_latent(latent["y"].shape[0], latent["y"])
        del fresh["y"]  # the text stays: only the noise is redrawn
        return {**latent, **fresh}, list(fresh)

    def normal(self, n: int, dim: int, generator: torch.Generator | None = None) -> Tensor:
        device = self.device if generator is None else generator.device
        return torch.randn(n, dim, device=device, generator=generator).to(self.device)

    @torch.no_grad()
    def stage1_image(self, latent: dict[str, Tensor]) -> Tensor:
        return self.stage1_generator(latent["z"], latent["y"], latent["eps1"])[0]

    def run_generator(self, net: nn.Module, latent: dict[str, Tensor]) -> tuple[Tensor, dict[str, Tensor]]:
        if self.stage1_generator is None:
            return net(latent["z"], latent["y"], latent["eps"])
        return net(self.stage1_image(latent), latent["y"], latent["eps"])

    def discriminate(self, x: Tensor, labels: Tensor | None = None) -> DOut:
        return DOut(*self.discriminator(x, labels))

    def unpack_batch(self, batch: Any) -> tuple[Tensor, Tensor | None, dict[str, Tensor]]:
        x, y, more = super().unpack_batch(batch)
        if (
            isinstance(batch, list | tuple) and len(batch) > 2
        ):  # one contrast caption per image, for the mismatch term
            more = {**more, "contrast": batch[2]}
        if y is None:
            raise DataError(
                "StackGAN trains on (image, caption embedding) batches; this batch has no captions"
            )
        size = self.generator.shape[1:]
        if tuple(x.shape[2:]) != size:  # stage I learns from a downsampled copy of the data
            x = F.interpolate(x, size=size, mode="bilinear", antialias=True, align_corners=False)
        return x, y, more

    def check_data(self, datamodule: Any) -> None:
        if not datamodule.captioned:
            raise ConfigError(
                f"model=stackgan needs captioned data (data=shapes, cub or oxford102); data={datamodule.name} has none"
            )
        if datamodule.text_dim != self.text_dim:
            raise ConfigError(
                f"data={datamodule.name} gives {datamodule.text_dim}-d caption embeddings, the model takes {self.text_dim}-d"
            )
        data, low = tuple(datamodule.shape), self.low_shape
        if data != self.image_shape or data[0] != low[0] or data[1] < low[1]:
            raise ConfigError(
                f"data={datamodule.name} has images of shape {list(data)}; StackGAN here needs model.shape = data.shape "
                f"(stage II's output, {list(self.image_shape)}) at least as large as model.stage1_shape={list(low)}"
            )
        contrast = max(
            [t.contrast for t in self.aux_terms.values() if isinstance(t, MismatchTerm)], default=0
        )
        if contrast:
            datamodule.setup()
            if "train" not in datamodule.contrast:
                raise ConfigError(
                    f"model.terms.match.contrast={contrast} needs contrast captions, and data={datamodule.name} "
                    "has none: set data.contrast_captions > 0 (data=shapes) or model.terms.match.contrast=0"
                )
        texts, emb = datamodule.figure_captions(self.figure_rows)
        self.figure_texts = list(texts)
        self.figure_embeddings = emb.float().to(self.figure_embeddings.device)

    # --- captions in, images out ------------------------------------------------------------------------
    def default_text(self, n: int) -> Tensor:
        emb = self.figure_set()[1]
        if not len(emb):  # built without its data (no captions known yet): the empty text
            return torch.zeros(n, self.text_dim, device=self.device)
        return emb[torch.arange(n, device=emb.device) % len(emb)]

    def figure_set(self) -> tuple[list[str], Tensor]:
        """The figure captions and their embeddings (from the checkpoint, the data, or encoded now)."""
        if self.figure_texts and not self.figure_embeddings.any():
            self.figure_embeddings = self.text_encoder.encode(self.figure_texts).to(self.figure_embeddings)
        return self.figure_texts, self.figure_embeddings

    takes_prompts = True

    @torch.no_grad()
    def sample_prompt(self, text: str, n: int, generator: torch.Generator | None = None) -> Tensor:
        """n samples for one caption, encoded with the model's text encoder (the final stage's images)."""
        emb = self.text_encoder.encode([str(text)]).to(self.device).expand(n, -1)
        return self.generate_eval(self.sample_latent(n, emb, generator))

    def figures(self, n: int, generator: torch.Generator | None = None) -> dict[str, np.ndarray]:
        """Stage I: `captions` (caption, then stage-I samples). Stage II: `stages` (caption, then pairs
        stage I -> stage II from the same noise). `figure_samples` per caption, whatever n."""
        texts, emb = self.figure_set()
        if not texts:
            return {}
        m = self.figure_samples
        latent = self.sample_latent(len(texts) * m, emb.repeat_interleave(m, 0), generator)
        final = self.generate_eval(latent)
        side = max(64, final.shape[-1])
        if self.stage1_generator is None:
            images = resize(final, side).unflatten(0, (len(texts), m))
            return {"captions": caption_rows(texts, images, ["stage I"] * m)}
        low = resize(self.stage1_image(latent), side)
        images = torch.stack([low, resize(final, side)], 1).unflatten(0, (len(texts), m)).flatten(1, 2)
        return {"stages": caption_rows(texts, images, ["stage I", "stage II"] * m, group=2)}

    # --- checkpoints ----------------------------------------------------------------------------------------
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_save_checkpoint(checkpoint)
        config = checkpoint["gan_zoo"].get("config")
        if config is None:
            return
        config = copy.deepcopy(
            config
        )  # what was resolved at start-up, so the config alone rebuilds the model
        config["model"]["figure_captions"] = list(self.figure_texts)
        if (
            self.stage1_spec is not None
        ):  # stage I's settings travel with stage II; its weights are in the state
            config["model"]["stage1"] = self.stage1_spec
            config["model"]["stage1_source"] = None
        checkpoint["gan_zoo"]["config"] = config


def discriminator_options(discriminator: Mapping[str, Any], terms: Mapping[str, AuxTerm | None]) -> dict:
    """D's options; its embedding heads (`embed_dim`) serve only the text-match term."""
    options = dict(discriminator)
    if not any(isinstance(t, TextMatchTerm) and t.active for t in terms.values() if t is not None):
        options["embed_dim"] = 0
    elif not options.get("embed_dim"):
        raise ConfigError(
            "model.terms.itc needs D's embedding heads: set model.discriminator.embed_dim > 0 "
            "(e.g. 128), or model.terms.itc.weight=0"
        )
    return options


# --- stage I, as stage II receives it ---------------------------------------------------------------------
def frozen_stage1(
    stage1: Mapping[str, Any] | None,
    source: tuple[dict, dict[str, Tensor]] | None,
    path: str | None,
    low: tuple[int, ...],
    encoder: TextEncoder,
) -> tuple[dict, Stage1Generator]:
    """(stage-I settings, its generator) for stage II, checked against this stage II's size and encoder."""
    spec, weights = stage1_inputs(stage1, source, path)
    check_stage1(spec, low, encoder, stage1_where(stage1, spec))
    g1 = Stage1Generator(encoder.dim, spec["c_dim"], spec["latent_dim"], spec["shape"], **spec["generator"])
    if weights is not None:
        load_weights(
            g1, weights, f"model.stage1_ckpt={spec['ckpt']}: its generator weights do not fit", ConfigError
        )
    return spec, g1


def stage1_inputs(
    stage1: Mapping[str, Any] | None, source: tuple[dict, dict[str, Tensor]] | None, path: str | None
) -> tuple[dict, dict[str, Tensor] | None]:
    """(stage-I settings, generator weights or None when they come with this model's own state dict)."""
    if stage1:
        return OmegaConf.to_container(OmegaConf.create(dict(stage1)), resolve=True), None
    if source is None:
        raise ConfigError(
            f"model.stage=2 needs the stage-I model it refines: set model.stage1_ckpt; {STAGE1_HINT}"
        )
    return source


def stage1_where(stage1: Mapping[str, Any] | None, spec: Mapping[str, Any]) -> str:
    if stage1:
        return "model.stage1 (the stage-I settings of this checkpoint)"
    return f"model.stage1_ckpt={spec['ckpt']}"


def check_stage1(spec: Mapping[str, Any], low: tuple[int, ...], encoder: TextEncoder, where: str) -> None:
    shape = tuple(spec["shape"])
    if shape != low:
        raise ConfigError(
            f"{where} generates {'x'.join(map(str, shape))} images but this stage II expects "
            f"{'x'.join(map(str, low))} stage-I images (model.stage1_shape={list(low)}): train stage I at that "
            f"size, or set model.stage1_shape={list(shape)}"
        )
    theirs, mine = spec["text_encoder"], encoder.identity()
    dim = int(theirs.get("dim", -1))
    if dim != encoder.dim:
        raise ConfigError(
            f"{where} was trained on {dim}-d text embeddings but this run's text encoder gives {encoder.dim}-d "
            "ones: stage I and stage II must use the same text encoder (text=...)"
        )
    differ = [
        f"{k}: {theirs[k]} vs {mine[k]}" for k in sorted(theirs.keys() & mine.keys()) if theirs[k] != mine[k]
    ]
    if differ:
        raise ConfigError(
            f"{where} was trained with another text encoder ({'; '.join(differ)}): stage I and stage II must "
            "use the same one"
        )


# --- figures -------------------------------------------------------------------------------------------------
def resize(x: Tensor, side: int) -> Tensor:
    return x if x.shape[-1] == side else F.interpolate(x.float(), size=(side, side), mode="nearest")


def wrap(text: str, font: Any, width: float) -> list[str]:
    lines, line = [], ""
    for word in text.split():
        trial = f"{line} {word}".strip()
        if line and font.getlength(trial) > width:
            lines.append(line)
            line = word
        else:
            line = trial
    return [*lines, line] if line else lines


def caption_rows(texts: Sequence[str], images: Tensor, headers: Sequence[str], group: int = 1) -> np.ndarray:
    """One row per caption: its text, then its images ((rows, cols, C, H, W) in [-1, 1]), with a header
    line over the columns and a wider gap between groups of `group` columns. uint8 (H', W', 3)."""
    from PIL import Image, ImageDraw, ImageFont

    rows, cols, _, h, w = images.shape
    font = ImageFont.load_default(size=max(10, min(h // 5, 22)))
    line_h, pad, gap, panel = font.size + 3, 2, 8, 3 * h
    xs = [panel + pad + c * (w + pad) + (c // group) * gap for c in range(cols)]
    head = line_h + 2 * pad
    canvas = Image.new("RGB", (xs[-1] + w + pad, head + rows * (h + pad) + pad), "white")
    draw = ImageDraw.Draw(canvas)
    for x, label in zip(xs, headers):
        draw.text((x + (w - font.getlength(label)) / 2, pad), label, fill="black", font=font)
    pixels = ((images.detach().float().cpu().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    if pixels.shape[2] == 1:
        pixels = pixels.expand(-1, -1, 3, -1, -1)
    pixels = pixels.permute(0, 1, 3, 4, 2).numpy()
    for r, text in enumerate(texts):
        y = head + r * (h + pad)
        lines = wrap(text, font, panel - 3 * pad)[: max(1, h // line_h)]
        for i, line in enumerate(lines):
            draw.text((pad, y + i * line_h), line, fill="black", font=font)
        for c, x in enumerate(xs):
            canvas.paste(Image.fromarray(pixels[r, c]), (x, y))
    return np.asarray(canvas)
