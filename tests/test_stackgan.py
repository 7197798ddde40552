"""StackGAN: both stages with every loss, the CA KL and mismatched-text terms, stage-I checkpoint checks,
the stage=both chain, text encoders, the embedded shapes, the CUB-format release and `src.sample prompt=`."""

from __future__ import annotations

import csv
import importlib.util
import math
import pickle
import re
import shutil
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import FAST, choices, make_cfg, phase_of, run_train
from PIL import Image

from src.build import build_datamodule, build_model
from src.checkpoint import build_from_checkpoint
from src.errors import ConfigError, DataError, DataNotFoundError
from src.losses.text import KLTerm, MismatchTerm, TextMatchTerm, contrastive, kl_to_standard_normal
from src.text.encoders import BagOfNgrams, PrecomputedEmbeddings, SentenceTransformerEncoder

LOSSES = choices("loss")
# 32 px data, stage I at 16 px, a few channels: a step takes milliseconds.
TINY = [
    "model=stackgan",
    "loss=nonsaturating",  # the StackGAN presets' loss (the default, rpgan, adds R1 and R2 terms)
    "data=shapes",
    "data.shape=[3,32,32]",
    "data.stage1_shape=[3,16,16]",
    "data.n_train=48",
    "data.n_val=16",
    "data.captions_per_image=2",
    "data.batch_size=8",
    "text.dim=32",
    "model.latent_dim=8",
    "model.c_dim=8",
    "model.generator.base_channels=4",
    "model.discriminator.base_channels=4",
    "model.discriminator.cond_dim=8",
    "model.figure_samples=2",
    "model.n_critic=1",
    "trainer.max_steps=3",
    "eval.metrics=[]",
]
QUIET = [*TINY, "~callbacks.samples"]


def check_stages_figure(path, rows=8, pairs=2, side=64):
    """A stage-II figure: per caption row a 3-side-wide text panel, then `pairs` stage I - stage II pairs of
    `side` px images (stage I's 16 px and stage II's 32 px shown at 64), 2 px apart and 8 px between pairs,
    under a header line."""
    height, width, _ = np.asarray(Image.open(path)).shape
    assert width == 3 * side + 2 * pairs * (side + 2) + 8 * (pairs - 1) + 2, width
    assert 0 < height - rows * (side + 2) - 2 < side, height


def logged(run_dir, key):
    with open(run_dir / "csv" / "metrics.csv") as f:
        return [float(r[key]) for r in csv.DictReader(f) if r.get(key)]


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny networks: a second thread's start-up and sync cost more than it saves (10x more on a busy CPU)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def stage1(tmp_path_factory):
    """A 3-step stage-I run (nonsaturating): its folder."""
    run = tmp_path_factory.mktemp("stage1")
    run_train(QUIET, run)
    return run


# --- training ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("loss", LOSSES)
def test_stage1_trains_with_every_loss(loss, tmp_path):
    _, objects = run_train([*QUIET, f"loss={loss}"], tmp_path)
    module = objects["model"]
    assert module.stage == 1 and module.g_step == 3 and module.generator.shape == (3, 16, 16)
    for key in ("train/d_loss", "train/g_loss", "train/g_ca_kl", "train/d_match_mismatch"):
        values = logged(tmp_path, key)
        assert len(values) == 3 and all(math.isfinite(v) for v in values), (key, values)
        assert len(set(values)) > 1, (key, values)  # computed from the batch: a dead term logs one value


@pytest.mark.parametrize("loss", LOSSES)
def test_stage2_trains_with_every_loss_on_a_frozen_stage1(loss, stage1, tmp_path):
    ckpt = stage1 / "checkpoints" / "last.ckpt"
    _, objects = run_train([*QUIET, f"loss={loss}", "model.stage=2", f"model.stage1_ckpt={stage1}"], tmp_path)
    module = objects["model"]
    assert module.stage == 2 and module.g_step == 3 and module.generator.shape == (3, 32, 32)
    saved = torch.load(ckpt, map_location="cpu", weights_only=True)["state_dict"]
    for name, value in module.stage1_generator.state_dict().items():
        assert torch.equal(value, saved[f"generator.{name}"]), name  # loaded, and not trained
    assert not any(p.requires_grad for p in module.stage1_generator.parameters())
    assert not module.stage1_generator.training
    for key in ("train/d_loss", "train/g_loss", "train/g_ca_kl", "train/d_match_mismatch"):
        values = logged(tmp_path, key)
        assert len(values) == 3 and all(math.isfinite(v) for v in values), (key, values)
        assert len(set(values)) > 1, (key, values)


def test_stage2_figure_and_checkpoint_need_no_stage1_file(stage1, tmp_path):
    """Each epoch's figure shows caption, stage I, stage II; the checkpoint alone rebuilds the model."""
    copy = tmp_path / "stage1.ckpt"
    shutil.copy(stage1 / "checkpoints" / "last.ckpt", copy)
    run_train([*TINY, "model.stage=2", f"model.stage1_ckpt={copy}"], tmp_path / "run")
    check_stages_figure(tmp_path / "run" / "samples" / "stages_epoch000.png")
    copy.unlink()
    model, cfg, _ = build_from_checkpoint(tmp_path / "run")
    assert model.stage == 2 and cfg.model.stage1.shape == [3, 16, 16]
    gen = lambda: torch.Generator().manual_seed(0)  # noqa: E731
    a = model.sample_prompt("a small red circle above a large blue square", 2, generator=gen())
    b = model.sample_prompt("a small red circle above a large blue square", 2, generator=gen())
    c = model.sample_prompt("a large green triangle on the left", 2, generator=gen())
    assert a.shape == (2, 3, 32, 32) and torch.equal(a, b) and not torch.allclose(a, c)


# --- the auxiliary terms ---------------------------------------------------------------------------------


def test_stage2_with_skip_starts_as_the_upsampled_stage1_image():
    from src.models.networks.stackgan import Stage2Generator

    torch.manual_seed(0)
    g = Stage2Generator(16, 8, (3, 64, 64), (3, 32, 32), base_channels=8, skip=True)
    low = torch.rand(4, 3, 32, 32) * 1.6 - 0.8
    out, _ = g(low, torch.randn(4, 16), torch.randn(4, 8))
    up = torch.nn.functional.interpolate(low, size=(64, 64), mode="bilinear", align_corners=False)
    assert torch.allclose(out, up, atol=1e-5)
    plain, _ = Stage2Generator(16, 8, (3, 64, 64), (3, 32, 32), base_channels=8)(
        low, torch.randn(4, 16), torch.randn(4, 8)
    )
    assert not torch.allclose(plain, up, atol=1e-2)


def test_kl_term_is_the_ca_kl_and_changes_with_mu_and_sigma():
    zero = torch.zeros(4, 8)
    assert kl_to_standard_normal(zero, zero) == 0
    torch.manual_seed(0)
    mu, logvar = torch.randn(4, 8), torch.randn(4, 8)
    # Another formula: torch.distributions' KL of each Gaussian to N(0, 1), averaged over batch and dimensions.
    normal = torch.distributions.Normal
    expected = torch.distributions.kl_divergence(normal(mu, (0.5 * logvar).exp()), normal(0.0, 1.0)).mean()
    assert torch.allclose(kl_to_standard_normal(mu, logvar), expected)
    ctx = lambda m, lv: phase_of(None, None, None, {}, None, None, None, {"mu": m, "logvar": lv})  # noqa: E731
    assert torch.allclose(KLTerm(2.0).g_terms(ctx(mu, logvar))["kl"], 2.0 * expected)
    assert KLTerm(1.0).g_terms(ctx(2 * mu, logvar))["kl"] > expected
    assert not torch.allclose(KLTerm(1.0).g_terms(ctx(mu, logvar + 1))["kl"], expected)
    assert KLTerm(1.0).d_terms(ctx(mu, logvar)) == {}


def test_generator_reports_mu_logvar_of_its_text(tmp_path):
    torch.manual_seed(0)
    module = build_model(make_cfg(TINY, tmp_path)).eval()
    emb = BagOfNgrams(32).encode(["a small red circle in the centre", "a large blue square at the top"])
    latent = module.sample_latent(2, emb, generator=torch.Generator().manual_seed(0))
    x, extras = module.generate(latent)
    latent2 = {**latent, "y": emb.flip(0)}
    x2, extras2 = module.generate(latent2)
    assert x.shape == (2, 3, 16, 16) and not torch.allclose(x, x2)
    assert not torch.allclose(extras["mu"], extras2["mu"])
    assert set(module.aux_terms) == {"ca", "match"} and module.aux_terms["ca"].weight == 2.0


def d_loss_by_hand(real, fake):
    """The default loss's (nonsaturating) D objective written out: -log D(real) - log(1 - D(fake))."""
    return -(torch.sigmoid(real).log().mean() + (1 - torch.sigmoid(fake)).log().mean())


def test_mismatch_term_scores_real_images_with_shifted_captions(tmp_path):
    torch.manual_seed(0)
    module = build_model(make_cfg(TINY, tmp_path))
    assert module.loss.name == "nonsaturating"
    real = torch.rand(4, 3, 16, 16) * 2 - 1
    texts = ["a small red circle", "a large blue square", "a tiny green triangle", "a big white disc"]
    emb = BagOfNgrams(32).encode(texts)
    d_real = module.discriminate(real, emb)
    ctx = phase_of(module, real, emb, {}, real, d_real, d_real)
    term = module.aux_terms["match"]
    assert isinstance(term, MismatchTerm)
    value = term.d_terms(ctx)["mismatch"]
    wrong = module.discriminate(real, emb[[3, 0, 1, 2]]).adv  # each image with the previous one's caption
    assert torch.allclose(value, d_loss_by_hand(d_real.adv, wrong))
    stats = term.stats(ctx)  # the share of wrong pairs D calls fake (logit < 0), and D's mean probability
    assert set(stats) == {"acc", "d_wrong"}
    assert stats["acc"] == (wrong < 0).sum() / 4 and torch.allclose(
        stats["d_wrong"], torch.sigmoid(wrong).mean()
    )
    other = phase_of(
        module, real, emb[[0, 2, 1, 3]], {}, real, module.discriminate(real, emb[[0, 2, 1, 3]]), d_real
    )
    assert not torch.allclose(value, term.d_terms(other)["mismatch"])
    value.backward()  # trains D: gradients reach its text branch
    assert module.discriminator.text[0].weight.grad.abs().sum() > 0


def test_mismatch_contrast_uses_the_batch_contrast_captions(tmp_path):
    """model.terms.match.contrast=1: every wrong text is the image's own contrast caption, not another image's."""
    torch.manual_seed(0)
    module = build_model(make_cfg([*TINY, "model.terms.match.contrast=1"], tmp_path))
    assert module.loss.name == "nonsaturating"
    real = torch.rand(4, 3, 16, 16) * 2 - 1
    enc = BagOfNgrams(32)
    emb = enc.encode(
        ["a small red circle", "a large blue square", "a tiny green triangle", "a big white disc"]
    )
    hard = enc.encode(["a small red square", "a large red square", "a tiny green circle", "a big white box"])
    d_real = module.discriminate(real, emb)
    ctx = phase_of(module, real, emb, {}, real, d_real, d_real)
    term = module.aux_terms["match"]
    with pytest.raises(ValueError, match="data.contrast_captions > 0"):
        term.d_terms(ctx)
    more = module.unpack_batch([real, emb, hard])[2]
    value = term.d_terms(phase_of(module, real, emb, {}, real, d_real, d_real, more=more))["mismatch"]
    assert torch.allclose(value, d_loss_by_hand(d_real.adv, module.discriminate(real, hard).adv))
    shifted = module.discriminate(real, emb[[3, 0, 1, 2]]).adv
    assert not torch.allclose(value, d_loss_by_hand(d_real.adv, shifted))
    with pytest.raises(
        ConfigError, match=r"model.terms.match.contrast=1 needs contrast captions.*data.contrast_captions"
    ):
        run_train([*QUIET, "model.terms.match.contrast=1"], tmp_path / "refused")
    run = tmp_path / "run"
    run_train([*QUIET, "data.contrast_captions=2", "model.terms.match.contrast=0.5"], run)
    values = logged(run, "train/d_match_mismatch")
    assert len(values) == 3 and all(math.isfinite(v) for v in values), values


def test_contrastive_loss_is_low_when_each_image_is_nearest_its_own_text():
    torch.manual_seed(0)
    text = torch.randn(6, 16)
    none = torch.zeros(6, 6, dtype=torch.bool)
    aligned, acc = contrastive(text + 0.01 * torch.randn(6, 16), text, none, 0.1)
    shuffled, acc_shuffled = contrastive(text.roll(1, 0), text, none, 0.1)
    assert acc == 1 and acc_shuffled == 0 and aligned < 0.1 < math.log(6) < shuffled
    # Two images with the same caption: neither is the other's negative, so the loss does not punish them.
    twins = torch.cat([text[:1], text[:1], text[2:]])
    image = torch.cat([text[:1], text[:1], text[2:]])
    same = (twins[:, None] == twins[None]).all(2)
    masked, _ = contrastive(image, twins, same, 0.1)
    unmasked, _ = contrastive(image, twins, none, 0.1)
    assert masked < 0.01 and abs(unmasked - 2 * math.log(2) / 6) < 0.01  # the twins split their odds
    with pytest.raises(ValueError, match="model.terms.itc.temperature > 0, got 1.0 and 0.0"):
        TextMatchTerm(1.0, 0.0)


def test_text_match_term_trains_d_embeddings_on_reals_and_g_on_fakes(stage1, tmp_path):
    """model.terms.itc: D's embedding heads exist only then; the D phase's term reads real images and their
    captions, the G phase's the fakes and the captions they were drawn for; both stages train with it."""
    assert build_model(make_cfg(TINY, tmp_path)).discriminator.embed is None
    torch.manual_seed(0)
    module = build_model(make_cfg([*TINY, "model.terms.itc.weight=2"], tmp_path))
    term = module.aux_terms["itc"]
    assert isinstance(term, TextMatchTerm) and term.weight == 2
    enc = BagOfNgrams(32)
    emb = enc.encode(
        ["a small red circle", "a large blue square", "a tiny green triangle", "a big white disc"]
    )
    real = torch.rand(4, 3, 16, 16) * 2 - 1
    latent = module.sample_latent(4, emb, generator=torch.Generator().manual_seed(0))
    fake = module.generate(latent)[0]
    d_real, d_fake = module.discriminate(real, emb), module.discriminate(fake, emb)
    assert d_real.aux["image"].shape == (4, 128) and d_real.aux["text"].shape == (4, 128)
    ctx = phase_of(module, real, emb, latent, fake, d_real, d_fake)
    d_value = term.d_terms(ctx)["real"]
    # InfoNCE by hand (the 4 captions differ: no pair is masked): cosine similarities / 0.1, each image's own
    # caption's log-probability among the batch's, and each caption's image's, averaged.
    sim = F.cosine_similarity(d_real.aux["image"][:, None], d_real.aux["text"][None], dim=2) / 0.1
    expected = -(sim.log_softmax(1).diagonal().mean() + sim.log_softmax(0).diagonal().mean()) / 2
    assert torch.allclose(d_value, 2 * expected)
    other = module.discriminate(real, emb.flip(0))
    assert not torch.allclose(
        d_value, term.d_terms(phase_of(module, real, emb.flip(0), latent, fake, other, d_fake))["real"]
    )
    d_value.backward()
    assert module.discriminator.embed["image"].weight.grad.abs().sum() > 0
    assert module.discriminator.embed["text"].weight.grad.abs().sum() > 0
    assert module.generator.ca.fc.weight.grad is None  # reals only: G plays no part in D's term
    g_value = term.g_terms(phase_of(module, None, None, latent, fake, None, d_fake))["fake"]
    g_value.backward()
    assert module.generator.ca.fc.weight.grad.abs().sum() > 0
    stats = term.stats(ctx)  # real_acc: the share of images whose own caption ranks first
    assert set(stats) == {"real_acc", "fake_acc"}
    assert stats["real_acc"] == (sim.argmax(1) == torch.arange(4)).float().mean()
    for stage in (["model.stage=1"], ["model.stage=2", f"model.stage1_ckpt={stage1}"]):
        run = tmp_path / stage[0][-1]
        run_train([*QUIET, *stage, "model.terms.itc.weight=1"], run)
        for key in ("train/d_itc_real", "train/g_itc_fake"):
            values = logged(run, key)
            assert len(values) == 3 and all(math.isfinite(v) for v in values), (key, values)
            assert len(set(values)) > 1, (key, values)
    with pytest.raises(ConfigError, match=r"model.terms.itc needs D's embedding heads.*embed_dim > 0"):
        build_model(
            make_cfg([*TINY, "model.terms.itc.weight=1", "model.discriminator.embed_dim=0"], tmp_path)
        )


def test_terms_can_be_turned_off(tmp_path):
    module = build_model(make_cfg([*TINY, "model.terms.ca.weight=0", "model.terms.match.weight=0"], tmp_path))
    assert len(module.aux_terms) == 0


def test_mode_seeking_redraws_every_noise_of_both_stages(stage1, tmp_path):
    """model.terms.ms: a second sample of the same caption redraws z and the CA noise (and, in stage II,
    stage I's CA noise), never the text; it trains in both stages."""
    texts = ["a small red circle", "a large blue square", "a tiny green triangle", "a big white disc"]
    emb = BagOfNgrams(32).encode(texts)  # real captions: the data-less default text is all zeros
    for stage in (["model.stage=1"], ["model.stage=2", f"model.stage1_ckpt={stage1}"]):
        torch.manual_seed(0)
        module = build_model(make_cfg([*TINY, *stage, "model.terms.ms.weight=1"], tmp_path))
        latent = module.sample_latent(4, emb)
        other, keys = module.resample_noise(latent)
        assert set(keys) == set(latent) - {"y"} and torch.equal(other["y"], emb)
        assert all(not torch.equal(other[k], latent[k]) for k in keys)
        fake = module.generate(latent)[0]
        ctx = phase_of(module, None, None, latent, fake, None, module.discriminate(fake, latent["y"]))
        rng = torch.get_rng_state()
        penalty = module.aux_terms["ms"].g_terms(ctx)["penalty"]
        # By hand, MSGAN's ratio on half the batch redrawn with the same draws: weight 1 / (mean |image
        # difference| / mean |noise difference| + 1e-5).
        torch.set_rng_state(rng)
        half = {k: v[:2] for k, v in latent.items()}
        again, _ = module.resample_noise(half)
        image_gap = (module.generate(again)[0] - fake[:2]).abs().mean()
        noise_gap = sum((again[k] - half[k]).abs().sum() for k in keys) / sum(half[k].numel() for k in keys)
        assert torch.allclose(penalty, 1 / (image_gap / noise_gap + 1e-5))
        run = tmp_path / stage[0][-1]
        run_train([*QUIET, *stage, "model.terms.ms.weight=1"], run)
        values = logged(run, "train/g_ms_penalty")
        assert len(values) == 3 and all(math.isfinite(v) for v in values), values
        assert len(set(values)) > 1, values


# --- stage I for stage II ----------------------------------------------------------------------------------


def fake_checkpoint(path, model_cfg):
    torch.save({"state_dict": {}, "gan_zoo": {"config": {"model": model_cfg}}}, path)
    return path


@pytest.mark.parametrize(
    "override, message",
    [
        (None, "model.stage=2 needs the stage-I model it refines: set model.stage1_ckpt"),
        ("missing", "does not exist"),
        ("dcgan", "is a checkpoint of src.models.dcgan.DCGAN, not of a StackGAN stage I"),
        ("stage2", "is a StackGAN stage-II checkpoint; give the stage-I checkpoint"),
        ("model.stage1_shape=[3,8,8]", "generates 3x16x16 images but this stage II expects 3x8x8"),
        ("text.dim=16", "was trained on 32-d text embeddings but this run's text encoder gives 16-d"),
        ("text.seed=1", "was trained with another text encoder (seed: 0 vs 1)"),
    ],
)
def test_stage2_refuses_an_incompatible_stage1(override, message, stage1, tmp_path):
    overrides = [*QUIET, "model.stage=2"]
    if override == "missing":
        overrides.append(f"model.stage1_ckpt={tmp_path / 'nope.ckpt'}")
    elif override == "dcgan":
        fake = fake_checkpoint(tmp_path / "dcgan.ckpt", {"_target_": "src.models.dcgan.DCGAN"})
        overrides.append(f"model.stage1_ckpt={fake}")
    elif override == "stage2":
        fake = fake_checkpoint(
            tmp_path / "s2.ckpt", {"_target_": "src.models.stackgan.StackGAN", "stage": 2, "stage1_ckpt": "x"}
        )
        overrides.append(f"model.stage1_ckpt={fake}")
    elif override is not None:
        overrides += [f"model.stage1_ckpt={stage1}", override]
    with pytest.raises(ConfigError) as e:
        build_model(make_cfg(overrides, tmp_path))
    assert message in str(e.value)
    if override in (None, "missing", "dcgan"):
        assert "train stage I first" in str(e.value)


def test_cli_reports_a_missing_stage1_in_one_line(tmp_path, capsys):
    from src.train import main

    argv = ["src.train", *QUIET, "model.stage=2", f"hydra.run.dir={tmp_path}", "logger=csv"]
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HYDRA_MAIN_MODULE", "__main__")
        mp.setattr(sys, "argv", argv)
        with pytest.raises(SystemExit) as exit:
            main()
    assert exit.value.code == 2
    err = capsys.readouterr().err
    assert "error: " in err and "model.stage1_ckpt" in err and "Traceback" not in err


def test_stage_both_trains_stage2_from_stage1_in_the_same_command(tmp_path):
    """With the default rich progress bar: stage II starts once stage I's run is closed."""
    keep_bar = [o for o in FAST if "progress" not in o]
    overrides = ["model.stage=both", "trainer.max_steps=2", 'stage2_overrides=["trainer.max_steps=1"]']
    run_train([*keep_bar, *QUIET, *overrides], tmp_path, fast=False)
    last = tmp_path / "stage2" / "checkpoints" / "last.ckpt"
    assert (tmp_path / "checkpoints" / "last.ckpt").is_file() and last.is_file()
    model, cfg, info = build_from_checkpoint(last)
    assert (model.stage, info["g_step"], cfg.model.stage) == (2, 1, 2)
    assert cfg.model.stage1_ckpt == str(tmp_path / "checkpoints" / "last.ckpt")
    assert cfg.trainer.max_steps == 1 and cfg.data.n_train == 48  # the command's overrides, then stage II's


def test_stackgan_needs_captioned_data(tmp_path):
    with pytest.raises(ConfigError, match="needs captioned data"):
        build_model(make_cfg(["model=stackgan", "data=mnist5k", "eval.metrics=[]"], tmp_path))


# --- text encoders -----------------------------------------------------------------------------------------


def test_builtin_encoder_is_deterministic_and_tells_captions_apart():
    texts = ["a small red circle above a large blue square", "a large blue square above a small red circle"]
    a, b = BagOfNgrams(64).encode(texts), BagOfNgrams(64).encode(texts[::-1])
    assert a.shape == (2, 64) and torch.equal(a, b.flip(0))
    assert not torch.allclose(a[0], a[1])  # same words, another order: bigrams differ
    assert not torch.allclose(a, BagOfNgrams(64, seed=1).encode(texts))
    assert torch.equal(
        BagOfNgrams(64).encode(["A small, RED circle!"]), BagOfNgrams(64).encode(["a small red circle"])
    )
    cos = torch.nn.functional.cosine_similarity
    red, crimson, blue = BagOfNgrams(256).encode(["a red circle", "a red disc", "a blue square"])
    assert cos(red, crimson, 0) > cos(red, blue, 0)


def test_sentence_transformers_errors_are_clear(tmp_path, monkeypatch):
    with pytest.raises(DataNotFoundError, match="no such folder"):
        SentenceTransformerEncoder(str(tmp_path / "no-model"), dim=8)
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None)
    with pytest.raises(ConfigError, match="needs the sentence-transformers package"):
        SentenceTransformerEncoder("sentence-transformers/all-MiniLM-L6-v2", dim=384)


def test_sentence_transformers_local_folder_not_a_model(tmp_path):
    pytest.importorskip("sentence_transformers")
    folder = tmp_path / "empty-model"
    folder.mkdir()
    with pytest.raises(DataNotFoundError, match="cannot load this sentence-transformers model"):
        SentenceTransformerEncoder(str(folder), dim=8).encode(["a red circle"])


def test_sentence_transformers_from_a_local_folder_offline(tmp_path, monkeypatch):
    """A tiny random BERT saved as a sentence-transformers model: loads and encodes with no network."""
    pytest.importorskip("sentence_transformers")
    from sentence_transformers import SentenceTransformer, models
    from transformers import BertConfig, BertModel, BertTokenizer

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "a", "red", "blue", "circle", "square"]
    (tmp_path / "vocab.txt").write_text("\n".join(words))
    bert = tmp_path / "bert"
    BertTokenizer(str(tmp_path / "vocab.txt")).save_pretrained(bert)
    config = BertConfig(vocab_size=len(words), hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=32)  # fmt: skip
    BertModel(config).save_pretrained(bert)
    word = models.Transformer(str(bert))
    SentenceTransformer(modules=[word, models.Pooling(16)]).save(str(tmp_path / "st"))
    encoder = SentenceTransformerEncoder(str(tmp_path / "st"), dim=16)
    out = encoder.encode(["a red circle", "a blue square"])
    assert out.shape == (2, 16) and torch.allclose(out.norm(dim=1), torch.full((2,), 4.0), atol=1e-4)
    assert not torch.allclose(out[0], out[1])
    with pytest.raises(ConfigError, match="gives 16-d embeddings but text.dim=8"):
        SentenceTransformerEncoder(str(tmp_path / "st"), dim=8).encode(["a red circle"])


# --- the embedded shapes ---------------------------------------------------------------------------------


def shapes(tmp_path, *overrides):
    dm = build_datamodule(make_cfg([*TINY, "data.n_train=200", "data.n_val=60", *overrides], tmp_path))
    dm.setup()
    return dm


def test_shapes_are_deterministic_given_the_seed(tmp_path):
    a, b = shapes(tmp_path), shapes(tmp_path, "seed=7")  # the run's seed does not change the data
    c = shapes(tmp_path, "data.data_seed=1")
    assert torch.equal(a.data["train"][0], b.data["train"][0]) and a.captions == b.captions
    assert torch.equal(a.data["train"][1], b.data["train"][1])
    assert not torch.equal(a.data["train"][0], c.data["train"][0]) and a.captions != c.captions
    x, y = a.data["train"]
    assert x.dtype == torch.uint8 and x.shape == (200, 3, 32, 32) and y.shape == (200, 2, 32)


def test_contrast_captions_describe_each_image_wrongly_in_one_attribute(tmp_path):
    from src.data.captions import contrast_scene

    plain, dm = shapes(tmp_path), shapes(tmp_path, "data.contrast_captions=3")
    assert torch.equal(plain.data["train"][0], dm.data["train"][0]) and plain.captions == dm.captions
    assert dm.contrast["train"].shape == (200, 3, 32) and "val" not in dm.contrast
    x, y, hard = next(iter(dm.train_dataloader()))
    assert hard.shape == y.shape and not torch.allclose(hard, y)
    assert len(next(iter(plain.train_dataloader()))) == 2
    scenes = {k: v.numpy() for k, v in dm.scenes["train"].items()}
    wrong = contrast_scene(scenes, np.random.default_rng(0))
    for i in range(len(scenes["layout"])):
        changed = [k for k in ("colour", "shape", "size", "layout") if (wrong[k][i] != scenes[k][i]).any()]
        assert len(changed) == 1 and changed[0] in ("colour", "shape"), (i, changed)
        kind = changed[0]
        if scenes["layout"][i] >= 5 and sorted(wrong[kind][i]) == sorted(scenes[kind][i]):
            assert (wrong[kind][i] == scenes[kind][i][::-1]).all()  # a swap of the two objects'
    assert (wrong["shape"] != scenes["shape"]).any() and (wrong["colour"] != scenes["colour"]).any()
    for kind in ("colour", "shape"):  # no object appears or disappears: a one-object scene keeps one
        assert ((wrong[kind] >= 0) == (scenes[kind] >= 0)).all(), kind


def test_shapes_captions_say_what_is_drawn_and_val_is_held_out(tmp_path):
    from src.data.captions import COLOURS, RGB, SHAPES, WORDS, held_out_pairs, object_types

    dm = shapes(tmp_path)
    for split in ("train", "val"):
        scenes = dm.scenes[split]
        for i in range(len(scenes["layout"])):  # every image, and each of its objects
            for j in range(2 if scenes["layout"][i] >= 5 else 1):
                colour, shape = int(scenes["colour"][i, j]), int(scenes["shape"][i, j])
                for text in dm.captions[split][i]:
                    assert any(w in text for w in WORDS["colour"][colour]) and any(
                        w in text for w in WORDS["shape"][shape]
                    ), (text, COLOURS[colour], SHAPES[shape])
        # Every large single object at the centre: the image's centre pixel is its colour.
        singles = ((scenes["layout"] == 0) & (scenes["size"][:, 0] == 1)).nonzero()[:, 0]
        assert len(singles) > 3
        pixels = dm.data[split][0][singles, :, 16, 16].float()
        colours = torch.tensor(RGB, dtype=torch.float32)[scenes["colour"][singles, 0]]
        assert (pixels - colours).abs().amax(1).max() < 20, split

    # Held out: pairings of object types and caption wordings that training never shows.
    def pairs(split):
        s = dm.scenes[split]
        two = s["colour"][:, 1] >= 0
        types = s["colour"][two] * len(SHAPES) + s["shape"][two]
        return {tuple(sorted(t.tolist())) for t in types}

    assert pairs("val") and pairs("train") and not pairs("val") & pairs("train")
    assert pairs("val") <= held_out_pairs(0.2, 0) and len(held_out_pairs(0.2, 0)) == round(
        0.2 * object_types() * (object_types() - 1) / 2
    )
    train_texts = {t for caps in dm.captions["train"] for t in caps}
    assert not train_texts & {t for caps in dm.captions["val"] for t in caps}


# --- the CUB / Oxford-102 release format ----------------------------------------------------------------------


def fabricate_release(root, n=(3, 2), captions=2, dim=16, layout="cub"):
    """A tiny StackGAN release: pickles, caption files and images, like birds.zip + CUB_200_2011."""
    rng = np.random.default_rng(0)
    index, boxes, count = [], [], 0
    for split, size in zip(("train", "test"), n):
        keys = [f"00{c}.Bird_{c}/Bird_{c}_{split}_{i}" for i, c in enumerate(rng.integers(1, 4, size))]
        (root / split).mkdir(parents=True)
        for name, value in (
            ("filenames.pickle", keys),
            ("char-CNN-RNN-embeddings.pickle", rng.standard_normal((size, captions, dim)).astype(np.float32)),
            ("class_info.pickle", [int(k[2]) for k in keys]),
        ):
            with open(root / split / name, "wb") as f:
                pickle.dump(value, f, protocol=2)
        for i, key in enumerate(keys):
            name = key.rsplit("/", 1)[1]
            text = (
                root
                / ("text_c10" if layout == "cub" else f"text_c10/class_{int(key[2]):05d}")
                / (f"{key}.txt" if layout == "cub" else f"{name}.txt")
            )
            text.parent.mkdir(parents=True, exist_ok=True)
            text.write_text("".join(f"caption {k} of {split} bird number {i}\n" for k in range(captions)))
            image = (
                root
                / ("CUB_200_2011/images" if layout == "cub" else "jpg")
                / (f"{key}.jpg" if layout == "cub" else f"{name}.jpg")
            )
            image.parent.mkdir(parents=True, exist_ok=True)
            pixels = np.zeros((60, 80, 3), np.uint8)
            pixels[20:40, 30:50] = (200, 30, 30)  # the "bird", inside its bounding box
            Image.fromarray(pixels).save(image)
            count += 1
            index.append(f"{count} {key}.jpg")
            boxes.append(f"{count} 30 20 20 20")
    if layout == "cub":
        (root / "CUB_200_2011/images.txt").write_text("\n".join(index))
        (root / "CUB_200_2011/bounding_boxes.txt").write_text("\n".join(boxes))
    return root


RELEASE = [
    "data.shape=[3,32,32]",
    "data.stage1_shape=[3,16,16]",
    "text.dim=16",
    "data.batch_size=2",
    "data.num_workers=1",
]


def test_cub_loader_reads_the_release_format(tmp_path):
    root = fabricate_release(tmp_path / "birds")
    cfg = make_cfg(["model=stackgan", "data=cub", f"data.root={root}", *RELEASE], tmp_path)
    dm = build_datamodule(cfg)
    dm.setup()
    x, y = dm.data["train"]
    assert x.shape == (3, 3, 32, 32) and y.shape == (3, 2, 16) and len(dm.data["val"][0]) == 2
    with open(root / "test" / "char-CNN-RNN-embeddings.pickle", "rb") as f:
        assert np.allclose(dm.data["val"][1].numpy(), pickle.load(f))
    assert dm.captions["val"][1] == ["caption 0 of test bird number 1", "caption 1 of test bird number 1"]
    # Cropped around the box (1.5 x its side): the red square fills the middle two thirds.
    assert x[0, 0, 16, 16] > 150 and x[0, 0, 1, 1] < 50 and x[0, 0, 16, 1] < 50
    encoder = dm.text_encoder
    assert isinstance(encoder, PrecomputedEmbeddings)
    assert torch.equal(encoder.encode(["Caption 1 of test bird number 1."])[0], dm.data["val"][1][1, 1])
    with pytest.raises(ConfigError, match="is not a caption of the StackGAN release"):
        encoder.encode(["a small red bird"])
    model = build_model(cfg, dm)
    assert model.figure_texts[0] == "caption 0 of test bird number 0"  # the first held-out captions


def test_cub_release_trains_a_stage1_step_and_oxford_layout_reads(tmp_path):
    root = fabricate_release(tmp_path / "birds")
    model = [o for o in QUIET if not o.startswith(("data", "text"))]
    _, objects = run_train(
        [*model, "trainer.max_steps=1", "data=cub", f"data.root={root}", *RELEASE], tmp_path / "run"
    )
    assert objects["model"].g_step == 1
    flowers = fabricate_release(tmp_path / "flowers", layout="oxford")
    dm = build_datamodule(
        make_cfg(["model=stackgan", "data=oxford102", f"data.root={flowers}", *RELEASE], tmp_path)
    )
    dm.setup()
    assert dm.name == "oxford102" and dm.data["train"][0].shape == (3, 3, 32, 32)


@pytest.mark.parametrize("remove", ["all", "test/filenames.pickle", "text", "image"])
def test_cub_loader_names_what_is_missing(remove, tmp_path):
    root = fabricate_release(tmp_path / "birds")
    with open(root / "train" / "filenames.pickle", "rb") as f:
        key = pickle.load(f)[0]
    target = {
        "all": root,
        "test/filenames.pickle": root / "test" / "filenames.pickle",
        "text": root / "text_c10" / f"{key}.txt",
        "image": root / "CUB_200_2011" / "images" / f"{key}.jpg",
    }[remove]
    shutil.rmtree(target) if target.is_dir() else target.unlink()
    dm = build_datamodule(make_cfg(["model=stackgan", "data=cub", f"data.root={root}", *RELEASE], tmp_path))
    with pytest.raises(DataNotFoundError) as e:
        dm.setup()
    text = str(e.value)
    assert "github.com/hanzhanggit/StackGAN" in text
    expected = {
        "all": f"{root} does not exist",
        "test/filenames.pickle": "has no test/filenames.pickle",
        "text": f"tried {root}/text_c10/{key}.txt",
        "image": f"tried {root}/CUB_200_2011/images/{key}.jpg",
    }
    assert expected[remove] in text, text


def test_release_pickles_may_hold_only_arrays(tmp_path):
    root = fabricate_release(tmp_path / "birds")
    with open(root / "train" / "filenames.pickle", "wb") as f:
        pickle.dump(shutil.rmtree, f)  # unpickling would import and return a function
    dm = build_datamodule(make_cfg(["model=stackgan", "data=cub", f"data.root={root}", *RELEASE], tmp_path))
    pickled = root / "train" / "filenames.pickle"
    with pytest.raises(
        DataError,
        match=re.escape(
            f"{pickled} is not a readable StackGAN release pickle (refusing to load shutil.rmtree)"
        ),
    ):
        dm.setup()


# --- src.sample prompt= ----------------------------------------------------------------------------------------


def test_sample_cli_draws_a_prompt_from_a_stage2_run(stage1, tmp_path, monkeypatch, capsys):
    from src.sample import main

    run = tmp_path / "stage2"
    run_train([*QUIET, "model.stage=2", f"model.stage1_ckpt={stage1}"], run)
    args = [
        f"ckpt={run}",
        "prompt=a small red circle above a large blue square",
        "n=4",
        f"out_dir={tmp_path / 'out'}",
    ]
    monkeypatch.setenv("HYDRA_MAIN_MODULE", "__main__")
    monkeypatch.setattr(sys, "argv", ["src.sample", *args])
    main()
    assert "prompt.png" in capsys.readouterr().out
    prompt = np.asarray(Image.open(tmp_path / "out" / "prompt.png"))
    assert prompt.shape == (2 * 34 + 2, 2 * 34 + 2, 3)  # 2 x 2 grid of 32 px images, 2 px apart
    check_stages_figure(tmp_path / "out" / "stages.png")
