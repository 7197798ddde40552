"""cGAN, AC-GAN and InfoGAN: every loss, the conditioning really used, figures, evaluation."""

from __future__ import annotations

import csv
import math

import numpy as np
import pytest
import torch
from conftest import CACHE, CONF, choices, make_cfg, on_built_model, parameters, phase_of, run_train
from hydra.utils import get_class
from omegaconf import OmegaConf
from PIL import Image

from src.build import build_model
from src.errors import ConfigError
from src.losses.auxiliary import DOut, MutualInfoTerm, random_affine
from src.losses.penalties import ZeroCentredPenalty
from src.metrics.conditional import ClassConsistency, best_mapping_accuracy
from src.models.cgan import CGAN
from src.models.infogan import InfoGAN
from src.models.networks.conditional import ConditionalDiscriminator
from src.models.stackgan import StackGAN


def model_class(name: str) -> type:
    """The class conf/model/<name>.yaml builds: its own `_target_`, else its base config's."""
    node = OmegaConf.load(CONF / "model" / f"{name}.yaml")
    if "_target_" in node:
        return get_class(node._target_)
    return model_class(next(d for d in node.defaults if d != "_self_"))


# From conf/model/: the class-conditional models (cGAN, AC-GAN: they need labels), the code models (InfoGAN),
# and every model that trains on the default digits (StackGAN needs captions: test_stackgan).
LABELLED = [m for m in choices("model") if issubclass(model_class(m), CGAN)]
CONDITIONAL = [m for m in choices("model") if issubclass(model_class(m), CGAN | InfoGAN)]
ON_DIGITS = [m for m in choices("model") if not issubclass(model_class(m), StackGAN)]
LOSSES = choices("loss")


TINY = [
    "trainer.max_steps=3",
    "data.batch_size=16",
    "model.n_critic=1",
    "eval.metrics=[]",
    "~callbacks.samples",
]


def logged_rows(run_dir) -> list[dict]:
    with open(run_dir / "csv" / "metrics.csv") as f:
        return [r for r in csv.DictReader(f) if r.get("train/g_loss")]


def g_terms(row: dict) -> dict[str, float]:
    """The G-phase loss terms of a logged row (train/g_adv, train/g_<aux>_<term>)."""
    skip = {"train/g_loss", "train/g_grad_norm", "train/g_step"}
    return {k: float(v) for k, v in row.items() if k.startswith("train/g_") and k not in skip and v != ""}


def best_assignment(pairs, k: int) -> float:
    """Accuracy under the best one-to-one map of the first to the second of each pair (values < k): an exact
    search over assignments by subsets (bitmask dynamic programme), not the Hungarian method."""
    counts = np.zeros((k, k), dtype=np.int64)
    for a, b in pairs:
        counts[int(a), int(b)] += 1
    best = {0: 0}
    for row in range(k):
        step = {}
        for used, total in best.items():
            for col in range(k):
                if not used >> col & 1:
                    key = used | 1 << col
                    step[key] = max(step.get(key, -1), total + int(counts[row, col]))
        best = step
    return max(best.values()) / max(len(pairs), 1)


def test_model_lists_come_from_conf():
    assert {"cgan", "acgan"} <= set(LABELLED) and "infogan" in CONDITIONAL
    assert not set(LABELLED) & {"gan", "dcgan", "infogan", "stackgan"} and "stackgan" not in ON_DIGITS


@pytest.mark.parametrize("loss", LOSSES)
@pytest.mark.parametrize("model", CONDITIONAL)
def test_conditional_model_trains_with_every_loss(model, loss, tmp_path, monkeypatch):
    start = {}
    on_built_model(monkeypatch, lambda m: start.update(parameters(m)))
    metrics, objects = run_train([f"model={model}", f"loss={loss}", *TINY], tmp_path)
    module = objects["model"]
    assert module.g_step == 3
    rows = logged_rows(tmp_path)
    assert len(rows) == 3
    # Every auxiliary term (AC-GAN's classes, InfoGAN's codes) is logged in its phases and changes. The loss's
    # lazy penalties (rpgan's R1 and R2, every 4 D steps) are logged on the steps they run: test_remedies.py.
    own = [n for n, t in module.aux_terms.items() if not isinstance(t, ZeroCentredPenalty)]
    aux = [k for k in rows[0] for name in own if k.startswith((f"train/d_{name}_", f"train/g_{name}_"))]
    assert bool(aux) == bool(own), aux
    for key in ["train/d_loss", "train/g_loss", *aux]:
        values = [float(r[key]) for r in rows]
        assert all(math.isfinite(v) for v in values) and len(set(values)) > 1, (key, values)
    for r in rows:  # G is trained on the adversarial term plus the auxiliary ones
        terms = g_terms(r)
        assert "train/g_adv" in terms and len(terms) == 1 + len([k for k in aux if k.startswith("train/g_")])
        assert float(r["train/g_loss"]) == pytest.approx(sum(terms.values()), rel=1e-5), r
    after = parameters(module)
    prefixes = ["generator.", "discriminator."]
    prefixes += [f"discriminator.heads.{h}." for h in getattr(module.discriminator, "heads", {})]
    for prefix in prefixes:
        moved = [k for k in start if k.startswith(prefix) and not torch.equal(start[k], after[k])]
        assert moved, f"no {prefix}* parameter moved"
    if loss == "wgan":  # clipping applies to the critic path, not to the auxiliary heads
        critic_max = max(p.abs().max().item() for p in module.critic.parameters())
        assert critic_max == pytest.approx(module.loss.clip, rel=1e-6)
        if hasattr(module.discriminator, "heads"):
            heads = [p.abs().max().item() for p in module.discriminator.heads.parameters()]
            assert max(heads) > 0.01


@pytest.mark.parametrize("model", LABELLED)
def test_generator_and_discriminator_use_the_label(model, tmp_path):
    torch.manual_seed(0)
    module = build_model(make_cfg([f"model={model}"], tmp_path)).eval()
    z = torch.randn(4, module.latent_dim)
    a = module.generate({"z": z, "y": torch.zeros(4, dtype=torch.long)})
    b = module.generate({"z": z, "y": torch.full((4,), 7)})
    assert not torch.allclose(a, b)
    if not isinstance(module.discriminator, ConditionalDiscriminator):
        return  # AC-GAN: D reads no label; its class head is tested by training
    for cond in ("projection", "concat"):
        module = build_model(
            make_cfg([f"model={model}", f"model.discriminator.cond={cond}"], tmp_path)
        ).eval()
        da = module.discriminate(a, torch.zeros(4, dtype=torch.long)).adv
        db = module.discriminate(a, torch.full((4,), 7)).adv
        assert da.shape == (4,) and not torch.allclose(da, db), cond


def test_ac_classifier_learns_the_real_labels(tmp_path):
    """With the real labels the AC head beats chance (0.1) within 150 steps, on the training batch and on the
    held-out digits (read from the head by hand). Thresholds from one seeded run (0.84 on both)."""
    overrides = ["model=acgan", "trainer.max_steps=150", "trainer.log_every_n_steps=50", "data.batch_size=32"]
    metrics, objects = run_train([*overrides, "eval.metrics=[]", "~callbacks.samples"], tmp_path)
    assert metrics["train/ac_real_acc"] > 0.5, metrics
    module = objects["model"].eval()
    x, y = objects["datamodule"].data["val"]
    with torch.no_grad():
        pred = module.discriminator(x.float() / 127.5 - 1)[1]["cls"].argmax(1)
    assert (pred == y).float().mean() > 0.5


def test_infogan_q_recovers_the_sampled_codes(tmp_path):
    """The MI term is computed on the codes G was given: Q learns to read them back."""
    overrides = [
        "model=infogan",
        "model.terms.info.weight_cont=1.0",
        "trainer.max_steps=150",
        "trainer.log_every_n_steps=50",
        "data.batch_size=32",
    ]
    metrics, _ = run_train([*overrides, "eval.metrics=[]", "~callbacks.samples"], tmp_path)
    assert metrics["train/info_cat_acc"] > 0.5, metrics
    assert metrics["train/info_cont_mse"] < 1 / 3  # below the variance of U(-1, 1): c_cont is predicted


def test_mutual_information_uses_codes_not_data_labels():
    term = MutualInfoTerm(cat_dims=[10], cont_dim=2, cont_loss="mse")
    codes = torch.arange(8) % 10
    q = torch.cat([torch.nn.functional.one_hot(codes, 10).float() * 20, torch.zeros(8, 2)], 1)
    latent = {"c_cat": codes[:, None], "c_cont": torch.zeros(8, 2)}
    wrong_labels = (codes + 3) % 10
    ctx = phase_of(None, None, wrong_labels, latent, torch.zeros(8, 1), None, DOut(torch.zeros(8), {"q": q}))
    assert term.d_terms(ctx)["mi_cat"].item() < 1e-3  # Q matches the codes, whatever the data labels
    shuffled = {"c_cat": wrong_labels[:, None], "c_cont": torch.zeros(8, 2)}
    ctx.latent = shuffled
    assert term.g_terms(ctx)["mi_cat"].item() > 10  # break the codes and the term says so


def test_random_affine_moves_the_object_and_keeps_the_background():
    x = torch.full((64, 1, 28, 28), -1.0)
    x[:, :, 10:18, 10:18] = 1.0
    torch.manual_seed(0)
    out = random_affine(x, shift=0.1, rotate=15.0, scale=0.15)
    assert out.shape == x.shape
    assert (out[:, :, 0, :] == -1).all()  # what comes in at the border is background, not zeros

    def centre(images):  # centre of mass of the ink (value + 1), (row, column) in pixels
        ink = (images[:, 0] + 1).double()
        grid = torch.arange(28, dtype=torch.float64)
        mass = ink.sum((1, 2))
        return torch.stack([(ink.sum(2) * grid).sum(1) / mass, (ink.sum(1) * grid).sum(1) / mass], 1)

    # A shift moves the (centred) square by up to 0.1 x 28 = 2.8 px in each direction, both ways;
    # rotation and scaling are about the centre, so they leave its centre of mass where it was.
    moved = centre(random_affine(x, shift=0.1, rotate=0.0, scale=0.0)) - centre(x)
    assert moved.abs().max() <= 2.8 + 0.1 and (moved > 1.5).any() and (moved < -1.5).any()
    turned = random_affine(x, shift=0.0, rotate=15.0, scale=0.15)
    assert (centre(turned) - centre(x)).abs().max() < 0.05 and (turned - x).abs().amax((1, 2, 3)).min() > 0.1
    assert not torch.allclose(out[0], out[1])  # each image gets its own transform
    assert torch.allclose(random_affine(x, 0.0, 0.0, 0.0), x, atol=1e-5)
    stroke = torch.full((64, 1, 28, 28), -1.0)
    stroke[:, :, 6:22, 13:15] = 1.0  # a vertical stroke, 2 px wide
    ink = (random_affine(stroke, 0.0, 0.0, 0.0, thickness=1.0) + 1).sum((1, 2, 3))
    base = (stroke + 1).sum((1, 2, 3))
    assert (ink > base + 1).any() and (ink < base - 1).any()  # thicker and thinner strokes, per image
    slanted = random_affine(stroke, 0.0, 0.0, 0.0, shear=0.5)
    top, bottom = slanted[:, 0, 7].argmax(1).float(), slanted[:, 0, 20].argmax(1).float()
    lean = top - bottom  # the stroke's top moves sideways against its bottom: slanted handwriting
    assert (lean > 2).any() and (lean < -2).any()
    assert (random_affine(stroke, 0.0, 0.0, 0.0)[:, 0, 7].argmax(1) == 13).all()


def test_invariance_term_reads_codes_from_transformed_fakes(tmp_path):
    """model.terms.info.invariance: Q also has to read c1 from shifted/rotated/scaled fakes; 0 turns it off."""
    torch.manual_seed(0)
    cfg = make_cfg(["model=infogan", "model.terms.info.invariance=0.5"], tmp_path)
    module = build_model(cfg)
    term = module.aux_terms["info"]
    latent = module.sample_latent(16)
    fake = module.generate(latent)
    ctx = phase_of(module, None, None, latent, fake, None, module.discriminate(fake))
    terms = term.g_terms(ctx)
    assert set(terms) == {"mi_cat", "mi_cont", "mi_cat_aug"}
    # By hand: invariance x weight_cat x cross-entropy of Q's c1 logits on moved fakes against c1.
    torch.manual_seed(1)
    value = term.invariance_terms(ctx)["mi_cat_aug"].item()
    torch.manual_seed(1)
    moved = random_affine(fake, **cfg.model.terms.info.augment)
    assert (moved - fake).abs().amax((1, 2, 3)).min() > 0.01  # every fake was moved
    logits = module.discriminate(moved).aux["q"][:, : cfg.model.cat_dims[0]]
    by_hand = (
        0.5
        * cfg.model.terms.info.weight_cat
        * torch.nn.functional.cross_entropy(logits, latent["c_cat"][:, 0])
    )
    assert value == pytest.approx(by_hand.item(), rel=1e-5)
    terms["mi_cat_aug"].backward()  # it trains G through the transform
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in module.generator.parameters())
    wrong = {**latent, "c_cat": (latent["c_cat"] + 1) % 10}
    torch.manual_seed(0)
    a = term.invariance_terms(ctx)["mi_cat_aug"].item()
    torch.manual_seed(0)
    b = term.invariance_terms(phase_of(module, None, None, wrong, fake, None, ctx.d_fake))[
        "mi_cat_aug"
    ].item()
    assert a != b
    off = build_model(make_cfg(["model=infogan", "model.terms.info.invariance=0"], tmp_path)).aux_terms[
        "info"
    ]
    assert "mi_cat_aug" not in off.g_terms(phase_of(module, None, None, latent, fake, None, ctx.d_fake))
    with pytest.raises(ValueError, match="unknown keys"):
        MutualInfoTerm(augment={"flip": 1})


def test_real_image_terms_ask_q_for_balanced_confident_categories(tmp_path):
    """model.terms.info.real_balance / real_confidence: on real images Q should use every value of c1 equally
    (batch marginal near uniform) and each confidently (low entropy); no data labels are read."""
    term = MutualInfoTerm(cat_dims=[10], cont_dim=0, real_balance=1.0, real_confidence=1.0)
    latent = {"c_cat": (torch.arange(20) % 10)[:, None]}
    fake = DOut(torch.zeros(20), {"q": torch.zeros(20, 10)})

    def real_terms(q_real, labels=None):
        ctx = phase_of(
            None,
            torch.zeros(20, 1),
            labels,
            latent,
            torch.zeros(20, 1),
            DOut(torch.zeros(20), {"q": q_real}),
            fake,
        )
        return {k: v.item() for k, v in term.d_terms(ctx).items() if k.startswith("real_")}

    spread = torch.nn.functional.one_hot(torch.arange(20) % 10, 10).float() * 30
    one_class = torch.nn.functional.one_hot(torch.full((20,), 3), 10).float() * 30
    assert real_terms(spread)["real_balance"] < 1e-6 and real_terms(spread)["real_confidence"] < 1e-6
    assert real_terms(one_class)["real_balance"] == pytest.approx(math.log(10), abs=1e-4)  # all on one value
    assert real_terms(torch.zeros(20, 10))["real_confidence"] == pytest.approx(
        math.log(10), abs=1e-4
    )  # unsure
    assert real_terms(spread, torch.full((20,), 3)) == real_terms(spread)  # the data labels play no part
    ctx = phase_of(None, None, None, latent, torch.zeros(20, 1), None, fake)
    assert set(term.g_terms(ctx)) == {"mi_cat"}  # D phase only: G never sees the real batch
    assert not any(
        k.startswith("real_")
        for k in MutualInfoTerm(cont_dim=0).d_terms(
            phase_of(None, None, None, latent, torch.zeros(20, 1), DOut(torch.zeros(20), {"q": spread}), fake)
        )
    )
    with pytest.raises(ValueError, match="real_balance, real_confidence and real_consistency must be >= 0"):
        MutualInfoTerm(real_consistency=-1)


def test_real_consistency_asks_q_for_the_same_c1_on_a_moved_real_image(tmp_path):
    """model.terms.info.real_consistency: Q's c1 on a shifted / rotated / scaled real image must match its c1 on the
    image itself; with no movement the term is zero; it trains D (and Q) only; the default turns it on."""
    torch.manual_seed(0)
    module = build_model(make_cfg(["model=infogan"], tmp_path))
    term = module.aux_terms["info"]
    assert (term.real_balance, term.real_confidence, term.real_consistency) == (1.0, 0.5, 1.0)
    real = torch.rand(16, 1, 28, 28) * 2 - 1
    latent = module.sample_latent(16)
    fake = module.generate(latent).detach()
    d_real, d_fake = module.discriminate_pair(real, None, fake, None)
    ctx = phase_of(module, real, None, latent, fake, d_real, d_fake)
    torch.manual_seed(0)
    moved = term.d_terms(ctx)["real_consistency"]
    assert torch.isfinite(moved) and moved > 0
    moved.backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in module.discriminator.parameters())
    term.augment = dict.fromkeys(term.augment, 0.0)
    d_real = module.discriminate_pair(real, None, fake, None)[0]
    still = term.d_terms(phase_of(module, real, None, latent, fake, d_real, d_fake))["real_consistency"]
    assert still.abs() < 1e-4 < moved  # the same image: nothing to be consistent about
    assert "real_consistency" not in term.g_terms(ctx)
    paper = build_model(make_cfg(["experiment=infogan_mnist"], tmp_path)).aux_terms["info"]
    assert not (paper.real_balance or paper.real_confidence or paper.real_consistency)  # the paper has none
    # the default logs all three, each step its own (the non-saturating loss: no R1 / R2 terms in the sums)
    run_train(["model=infogan", "loss=nonsaturating", *TINY], tmp_path / "run")
    keys = [f"train/d_info_real_{k}" for k in ("balance", "confidence", "consistency")]
    rows = logged_rows(tmp_path / "run")
    values = [tuple(float(r[k]) for k in keys) for r in rows]
    assert len(values) == 3 and all(math.isfinite(v) for row in values for v in row), values
    assert all(len({row[i] for row in values}) == 3 for i in range(3)), values
    for r in rows:  # and they are part of D's loss: adversarial term + every InfoGAN term
        info = [float(v) for k, v in r.items() if k.startswith("train/d_info_")]
        assert len(info) >= 3 + len(keys)  # mi_cat, mi_cont, mi_cat_aug and the real-image terms
        expected = float(r["train/d_adv"]) + sum(info)
        assert float(r["train/d_loss"]) == pytest.approx(expected, rel=1e-5), r


@pytest.mark.parametrize("model", ON_DIGITS)
def test_joint_d_batch_scores_real_and_fake_in_one_batch(model, tmp_path, monkeypatch):
    """model.d_batch=joint: one D pass over real + fake. Without BatchNorm it equals two passes; with it,
    the batch statistics are those of both together, so the scores differ. It trains, with the aux heads."""
    torch.manual_seed(0)
    disc = make_cfg([f"model={model}"], tmp_path).model.discriminator
    no_bn = ["model.discriminator.norm=none"] + (
        ["model.discriminator.head_norm=none"] if disc.get("head_hidden") else []
    )
    module = build_model(make_cfg([f"model={model}", "model.d_batch=joint", *no_bn], tmp_path))
    real, fake = torch.rand(6, 1, 28, 28) * 2 - 1, torch.rand(6, 1, 28, 28) * 2 - 1
    y_real, y_fake = torch.arange(6), torch.arange(6).flip(0)
    joint = module.discriminate_pair(real, y_real, fake, y_fake)
    module.d_batch = "separate"
    apart = module.discriminate_pair(real, y_real, fake, y_fake)
    for a, b in zip(joint, apart):
        assert torch.allclose(a.adv, b.adv, atol=1e-6) and a.aux.keys() == b.aux.keys()
        assert all(torch.allclose(a.aux[k], b.aux[k], atol=1e-5) for k in a.aux)
    assert joint[0].aux.keys() == set(getattr(module.discriminator, "heads", {}))  # every head, split in two
    assert not torch.allclose(joint[0].adv, joint[1].adv)
    with_bn = build_model(
        make_cfg([f"model={model}", "model.d_batch=joint", "model.discriminator.norm=batch"], tmp_path)
    )
    joint_bn = with_bn.discriminate_pair(real, y_real, fake, y_fake)[0].adv
    with_bn.d_batch = "separate"
    assert not torch.allclose(joint_bn, with_bn.discriminate_pair(real, y_real, fake, y_fake)[0].adv)
    sizes = []  # in training, D's batches: real + fake together (16 + 16), once per D step and per G step
    on_built_model(
        monkeypatch, lambda m: m.discriminator.register_forward_hook(lambda _, x, o: sizes.append(len(x[0])))
    )
    metrics, objects = run_train([f"model={model}", "model.d_batch=joint", *TINY], tmp_path / "run")
    assert objects["model"].g_step == 3 and math.isfinite(metrics["train/g_loss"])
    assert sizes.count(32) == 2 * 3, sizes
    with pytest.raises(ValueError, match="model.d_batch must be 'separate' or 'joint', got 'both'"):
        build_model(make_cfg([f"model={model}", "model.d_batch=both"], tmp_path))


@pytest.mark.parametrize("model", ON_DIGITS)
def test_mode_seeking_term_compares_two_samples_of_one_condition(model, tmp_path):
    """model.terms.ms.weight=w: G pays w / (image distance / noise distance) for a second draw of the same
    labels / codes with fresh noise; a G that ignores its noise pays far more; it trains with every model."""
    torch.manual_seed(0)
    module = build_model(make_cfg([f"model={model}", "model.terms.ms.weight=2.0"], tmp_path))
    term = module.aux_terms["ms"]
    latent = module.sample_latent(8, torch.arange(8) % 10 if isinstance(module, CGAN) else None)
    redrawn, keys = module.resample_noise(latent)
    assert keys == ["z"] and not torch.equal(redrawn["z"], latent["z"])
    assert all(torch.equal(redrawn[k], v) for k, v in latent.items() if k != "z")  # same condition
    fake = module.generate(latent)
    ctx = phase_of(module, None, None, latent, fake, None, module.discriminate(fake, latent.get("y")))
    torch.manual_seed(1)
    loss = term.g_terms(ctx)["penalty"]
    # By hand: half the batch (4) redrawn with the same noise draw; 2 / (mean |dG| / mean |dz| + 1e-5).
    torch.manual_seed(1)
    first = {k: v[:4] for k, v in latent.items()}
    second = module.resample_noise(first)[0]
    image_gap = (module.generate(second) - fake[:4]).abs().mean()
    noise_gap = (second["z"] - first["z"]).abs().mean()
    assert loss.item() == pytest.approx((2.0 / (image_gap / noise_gap + 1e-5)).item(), rel=1e-5)
    assert term.d_terms(ctx) == {} and torch.isfinite(loss)
    loss.backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in module.generator.parameters())
    module.generate = lambda lat: fake[: lat["z"].shape[0]].detach() + 1e-3 * lat["z"].mean()  # noise ignored
    assert term.g_terms(ctx)["penalty"] > 100 * loss.detach()
    assert "ms" not in build_model(make_cfg([f"model={model}"], tmp_path)).aux_terms  # off by default
    run_train([f"model={model}", "model.terms.ms.weight=1.0", *TINY], tmp_path / "run")
    rows = logged_rows(tmp_path / "run")
    values = [float(r["train/g_ms_penalty"]) for r in rows]
    assert len(values) == 3 and all(math.isfinite(v) for v in values) and len(set(values)) > 1
    for r in rows:  # the penalty is part of G's loss
        assert float(r["train/g_loss"]) == pytest.approx(sum(g_terms(r).values()), rel=1e-5), r
    with pytest.raises(ValueError, match="model.terms.ms.weight must be >= 0"):
        build_model(make_cfg([f"model={model}", "model.terms.ms.weight=-1"], tmp_path))


def test_discriminator_fc_norm_is_its_own_setting():
    from src.models.networks import DCGANDiscriminator

    kinds = lambda net: {type(m).__name__ for m in net.trunk}  # noqa: E731
    assert "BatchNorm1d" in kinds(DCGANDiscriminator((1, 28, 28), fc_dim=32))
    net = DCGANDiscriminator((1, 28, 28), fc_dim=32, fc_norm="none")
    assert "BatchNorm1d" not in kinds(net) and "BatchNorm2d" in kinds(net)
    with pytest.raises(ValueError, match="valid choices"):
        DCGANDiscriminator((1, 28, 28), fc_dim=32, fc_norm="weird")


def test_discriminator_leak_sets_every_leaky_relu(tmp_path):
    """model.discriminator.leak: the negative slope of D's LeakyReLUs, the Q head's included (InfoGAN: 0.1)."""
    module = build_model(make_cfg(["model=infogan", "model.discriminator.leak=0.1"], tmp_path))
    slopes = {m.negative_slope for m in module.discriminator.modules() if isinstance(m, torch.nn.LeakyReLU)}
    assert slopes == {0.1}
    default = build_model(make_cfg(["model=infogan"], tmp_path))
    assert {
        m.negative_slope for m in default.discriminator.modules() if isinstance(m, torch.nn.LeakyReLU)
    } == {0.2}


def test_figures_have_the_expected_grids(tmp_path):
    run_train(["model=infogan", "trainer.max_steps=1", "eval.metrics=[]"], tmp_path / "info")
    run_train(["model=cgan", "trainer.max_steps=1", "eval.metrics=[]"], tmp_path / "cgan")
    run_train(["model=dcgan", "trainer.max_steps=1", "eval.metrics=[]"], tmp_path / "dcgan")
    side = 10 * 30 + 2  # 10 images of 28 px, 2 px padding
    for run, names in (("info", ["c1", "c2", "c3"]), ("cgan", ["classes"]), ("dcgan", ["traversal"])):
        for name in names:
            img = Image.open(tmp_path / run / "samples" / f"{name}_epoch000.png")
            assert img.size == (side, side), (run, name, img.size)

    def grid(run, name):
        return np.asarray(Image.open(tmp_path / run / "samples" / f"{name}_last.png")).astype(float)

    def cell(img, row, col):  # the image at (row, col) of the grid
        return img[2 + 30 * row : 30 + 30 * row, 2 + 30 * col : 30 + 30 * col]

    def differ(a, b):
        return np.abs(a - b).mean() > 0

    # c1 / classes: each row one value (image changes from row to row), each column one noise
    for run, name in (("info", "c1"), ("cgan", "classes")):
        img = grid(run, name)
        assert all(differ(cell(img, r, 0), cell(img, r + 1, 0)) for r in range(9)), (run, name)
        assert differ(cell(img, 0, 0), cell(img, 0, 1)), (run, name)
    # c2, c3 and the noise traversal: one latent per row, swept along the row
    for run, name in (("info", "c2"), ("info", "c3"), ("dcgan", "traversal")):
        img = grid(run, name)
        assert all(differ(cell(img, r, 0), cell(img, r, 9)) for r in range(10)), (run, name)


@pytest.mark.parametrize("model", LABELLED)
def test_conditional_model_refuses_unlabelled_data(model, tmp_path):
    folder = tmp_path / "images"
    folder.mkdir()
    for i in range(20):
        Image.fromarray(np.random.default_rng(i).integers(0, 255, (28, 28), dtype=np.uint8)).save(
            folder / f"{i}.png"
        )
    overrides = [f"model={model}", "data=image_folder", f"data.path={folder}", "data.shape=[1,28,28]", *TINY]
    with pytest.raises(ConfigError, match="needs labelled data"):
        run_train(overrides, tmp_path / "run")


def test_best_mapping_accuracy_matches_hand_computation():
    confusion = np.array([[0, 9, 1], [8, 0, 2], [1, 1, 8]])  # codes permute the labels
    assert best_mapping_accuracy(confusion) == pytest.approx((9 + 8 + 8) / 30)
    assert best_mapping_accuracy(np.eye(4) * 5) == 1.0


def test_class_consistency_reads_real_images_as_their_labels(tmp_path):
    from src.data.mnist5k import EmbeddedMNIST
    from src.metrics.classifier import load_or_train

    dm = EmbeddedMNIST()
    net, test_acc = load_or_train(dm, CACHE / "classifiers", epochs=6, batch_size=128, lr=1e-3, seed=0)
    assert test_acc > 0.95
    x, y = dm.data["val"]
    x = x.float() / 127.5 - 1
    right, wrong = ClassConsistency(net, test_acc), ClassConsistency(net, test_acc)
    right.update(fake=x, latent={"y": y})
    wrong.update(fake=x, latent={"y": (y + 1) % 10})
    with torch.no_grad():
        by_hand = (net(x).argmax(1) == y).float().mean().item()  # share of digits read as their label
    assert right.compute()["class_consistency"] == pytest.approx(by_hand, abs=1e-6)
    assert wrong.compute()["class_consistency"] < 0.05


def test_evaluation_metrics_are_logged_and_monitored(tmp_path, monkeypatch):
    """val/c1_acc: Q's c1 on the held-out digits against their labels; val/c1_sample_acc: the digit classifier
    on samples against the c1 they were drawn with; each under the best code-to-label map, checked by hand."""
    seen = []  # (g_step, labels, Q's c1 on the real batch, sampled c1, the samples) of every validation batch
    real_batches = []

    def watch(module):
        evaluate = module.eval_batch

        def eval_batch(real, labels):
            out = evaluate(real, labels)
            with torch.no_grad():
                q = module.discriminator.eval()(real)[1]["q"][:, : module.cat_dims[0]].argmax(1)
            seen.append((module.g_step, labels, q, out["latent"]["c_cat"][:, 0], out["fake"]))
            real_batches.append((module.g_step, real, labels))
            return out

        module.eval_batch = eval_batch

    on_built_model(monkeypatch, watch)
    overrides = ["model=infogan", "trainer.max_steps=2", "data.batch_size=16", "trainer.limit_val_batches=3"]
    metrics, objects = run_train(overrides, tmp_path)
    last = [b for b in seen if b[0] == seen[-1][0]]  # the batches of the last validation
    assert len(last) == 3 and all(b[1] is not None for b in last)
    c1_acc = best_assignment([(q, y) for _, labels, qs, _, _ in last for q, y in zip(qs, labels)], 10)
    assert metrics["val/c1_acc"] == pytest.approx(c1_acc, abs=1e-6)
    classifier = objects["model"].metrics["c1_sample_acc"].evaluator.net
    with torch.no_grad():
        read = [(c, d) for _, _, _, codes, fake in last for c, d in zip(codes, classifier(fake).argmax(1))]
    assert metrics["val/c1_sample_acc"] == pytest.approx(best_assignment(read, 10), abs=1e-6)
    assert objects["trainer"].checkpoint_callback.monitor == "val/c1_acc"
    assert list(tmp_path.glob("checkpoints/best_*.ckpt"))
    # within-c1 diversity: samples grouped by the c1 they were drawn with, real digits by their label
    features = objects["model"].metrics["within_diversity"].extractor
    with torch.no_grad():
        fake = features(torch.cat([b[4] for b in last])).double()
        real = features(torch.cat([r for _, r, _ in real_batches[-3:]])).double()
    codes, labels = torch.cat([b[3] for b in last]), torch.cat([b[1] for b in last])

    def spread(x, groups):
        d = [torch.pdist(x[groups == g]).mean().item() for g in groups.unique() if (groups == g).sum() > 1]
        return sum(d) / len(d)

    assert metrics["val/within_diversity"] == pytest.approx(
        spread(fake, codes) / spread(real, labels), rel=1e-4
    )
    for key in ("code1_rotation", "code2_width", "rotation_rho", "width_rho", "rotation_code", "width_code"):
        assert f"val/{key}" in metrics, key
    with pytest.raises(ConfigError, match="class_consistency do\\(es\\) not apply.*available: c1_acc"):
        run_train([*overrides, "eval.metrics=[class_consistency]"], tmp_path / "bad")
