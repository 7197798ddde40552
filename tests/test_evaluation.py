"""Image metrics, mode-collapse metrics, remedies (packing, minibatch std, EMA) and the offline Inception path."""

from __future__ import annotations

import math
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import CACHE, ROOT, on_built_model, run_train
from torch import nn

from src.data.mnist5k import EmbeddedMNIST
from src.metrics.classifier import load_or_train
from src.metrics.features import INCEPTION_FILE, DomainFeatures, InceptionFeatures, WeightsNotFoundError
from src.metrics.image import RealFake, StackedModes
from src.metrics.modes import ModeCoverage
from src.models.networks.layers import MinibatchStd


@pytest.fixture(scope="module")
def digits():
    dm = EmbeddedMNIST()
    net, acc = load_or_train(dm, CACHE / "classifiers", epochs=6, batch_size=128, lr=1e-3, seed=0)
    x, y = dm.data["val"]
    return net, acc, x.float() / 127.5 - 1, y


def watch_validation(monkeypatch) -> list:
    """(g_step, real, fake, labels) of every validation batch of the run train() is about to make."""
    seen = []

    def hook(module):
        evaluate = module.eval_batch

        def eval_batch(real, labels):
            out = evaluate(real, labels)
            seen.append((module.g_step, real, out["fake"], labels))
            return out

        module.eval_batch = eval_batch

    on_built_model(monkeypatch, hook)
    return seen


def last_validation(seen: list) -> list:
    return [b for b in seen if b[0] == seen[-1][0]]


def fid_by_hand(a, b) -> float:
    """||mu_a - mu_b||^2 + tr(S_a + S_b - 2 (S_a^1/2 S_b S_a^1/2)^1/2), with symmetric eigendecompositions
    (torchmetrics takes the eigenvalues of S_a S_b)."""
    a, b = a.double().numpy(), b.double().numpy()
    s1, s2 = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    w, v = np.linalg.eigh(s1)
    root = (v * np.sqrt(np.clip(w, 0, None))) @ v.T
    m = root @ s2 @ root
    cross = np.sqrt(np.clip(np.linalg.eigvalsh((m + m.T) / 2), 0, None)).sum()
    return float(((a.mean(0) - b.mean(0)) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * cross)


def score(kind, extractor, real, fake, **kw):
    metric = RealFake(kind, extractor, "t", **kw)
    for r, f in zip(real.split(100), fake.split(100)):
        metric.update(real=r, fake=f)
    return {k: float(v) for k, v in metric.compute().items()}


def test_fid_kid_zero_on_identical_sets_and_large_on_different(digits):
    net, _, x, _ = digits
    feats = DomainFeatures(net)
    same_fid = score("fid", feats, x, x)["fid_t"]
    halves_fid = score("fid", feats, x[:250], x[250:])["fid_t"]
    torch.manual_seed(0)
    noise = torch.rand_like(x) * 2 - 1
    noise_fid = score("fid", feats, x, noise)["fid_t"]
    assert abs(same_fid) < 1e-2 and noise_fid > 100 * max(halves_fid, 1e-3) and noise_fid > 10
    # the values themselves, from the features by hand
    with torch.no_grad():  # the classifier's penultimate features
        assert halves_fid == pytest.approx(
            fid_by_hand(net.features(x[:250]), net.features(x[250:])), rel=1e-4
        )
        assert noise_fid == pytest.approx(fid_by_hand(net.features(x), net.features(noise)), rel=1e-4)
    same_kid = score("kid", feats, x, x, kid_subset=100)["kid_t_mean"]
    noise_kid = score("kid", feats, x, noise, kid_subset=100)["kid_t_mean"]
    assert abs(same_kid) < 1e-4 * noise_kid  # unbiased: ~0 up to subset noise, vs orders of magnitude more


def test_inception_score_analogue_rewards_confident_varied_samples(digits):
    net, _, x, y = digits
    logits = DomainFeatures(net, "logits")
    varied = score("is", logits, x, x, is_splits=1)["is_t_mean"]
    ones = score("is", logits, x, x[y == 1][:200].repeat(2, 1, 1, 1), is_splits=1)["is_t_mean"]
    assert varied > 8 and ones < 1.5  # about the number of classes vs about one
    log_p = logits(x).double()  # by hand: exp(E_x KL(p(y|x) || p(y)))
    marginal = log_p.exp().mean(0)
    by_hand = torch.exp((log_p.exp() * (log_p - marginal.log())).sum(1).mean()).item()
    assert varied == pytest.approx(by_hand, rel=1e-4)


class PixelLabel(nn.Module):
    """A stand-in classifier: reads the label off the first pixel (value = label / 10 in [-1, 1] scale)."""

    shape, num_classes, feature_dim = (1, 4, 4), 10, 10

    def forward(self, x):
        return F.one_hot((x[:, 0, 0, 0] * 10).round().long().clamp(0, 9), 10).float()


def images_with_labels(labels, channels=1):
    x = torch.zeros(len(labels), channels, 4, 4)
    x[:, :, 0, 0] = labels.float().reshape(len(labels), -1) / 10
    return x


def test_stacked_modes_by_hand():
    metric = StackedModes(PixelLabel(), 1.0)
    # modes 123 (twice), 124, 456, 7: every channel counts (reading one channel alone would merge 123 and 124)
    labels = torch.tensor([[1, 2, 3], [1, 2, 3], [1, 2, 4], [4, 5, 6], [0, 0, 7]])
    metric.update(fake=images_with_labels(labels, channels=3))
    out = metric.compute()
    p = torch.tensor([0.4, 0.2, 0.2, 0.2])
    assert out["stacked_modes"].item() == 4
    assert out["stacked_kl"].item() == pytest.approx(float((p * (p * 1000).log()).sum()), rel=1e-6)


def test_mode_metrics_by_hand():
    means = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0], [0.0, -1.0]])
    samples = torch.tensor([[1.01, 0.0], [0.99, 0.02], [1.0, -0.02], [0.0, 1.02], [0.5, 0.5], [0.0, -1.2]])
    metric = ModeCoverage(means, std=0.01)
    metric.update(fake=samples)
    out = metric.compute()
    p = torch.tensor([0.75, 0.25])  # 3 HQ samples at mode 0, 1 at mode 1; two are > 3 std away
    assert out["modes"].item() == 2 and out["hq"].item() == pytest.approx(4 / 6)
    assert out["rev_kl"].item() == pytest.approx(float((p * (p * 4).log()).sum()), rel=1e-6)


def test_stacked_mnist_data_and_modes(tmp_path, monkeypatch, digits):
    seen = watch_validation(monkeypatch)
    metrics, objects = run_train(
        [
            "data=stacked_mnist",
            "data.n_train=2000",
            "data.n_val=300",
            "trainer.max_steps=2",
            "data.batch_size=16",
        ],
        tmp_path,
    )
    dm = objects["datamodule"]
    x, y = dm.data["train"]
    assert x.shape == (2000, 3, 28, 28) and dm.num_classes == 1000
    # Each image is three source digits, its label the three-digit number they make.
    src_x, src_y = dm.classifier_source.data["train"]
    for i in range(20):
        digits_of = [int(src_y[(src_x[:, 0] == x[i, c]).all(-1).all(-1).nonzero()[0, 0]]) for c in range(3)]
        assert int(y[i]) == 100 * digits_of[0] + 10 * digits_of[1] + digits_of[2], i
    assert len(y.unique()) > 500  # the modes are mixed, not one per channel position
    # The metrics, by hand: the digit classifier on each channel of the samples, modes and KL to uniform.
    net = digits[0]
    fake = torch.cat([b[2] for b in last_validation(seen)])
    assert len(fake) == 300
    with torch.no_grad():
        read = [net(fake[:, c : c + 1]).argmax(1) for c in range(3)]
    counts = torch.bincount(100 * read[0] + 10 * read[1] + read[2], minlength=1000).double()
    p = counts[counts > 0] / counts.sum()
    assert metrics["val/stacked_modes"] == (counts > 0).sum().item()
    assert metrics["val/stacked_kl"] == pytest.approx((p * (p * 1000).log()).sum().item(), rel=1e-5)
    assert objects["trainer"].checkpoint_callback.monitor == "val/stacked_modes"


def test_image_metrics_run_in_training_and_pick_the_best_checkpoint(tmp_path, monkeypatch, digits):
    seen = watch_validation(monkeypatch)
    metrics, objects = run_train(
        ["trainer.max_steps=2", "data.batch_size=16", "trainer.limit_val_batches=4"], tmp_path
    )
    keys = (
        "fid_domain",
        "kid_domain_mean",
        "is_domain_mean",
        "classes_covered",
        "class_kl",
        "precision",
        "recall",
    )
    for key in keys + ("density", "coverage", "class_min_share", "class_max_share", "class_share_9"):
        assert math.isfinite(metrics[f"val/{key}"]), key
    samples = objects["trainer"].callbacks  # the class-balance chart is written with the sample figures
    assert any(p.name.startswith("class_balance_epoch") for cb in samples for p in getattr(cb, "written", []))
    assert objects["trainer"].checkpoint_callback.monitor == "val/fid_domain"
    # By hand on the batches of the last evaluation: FID of the classifier features of real vs fake, and
    # the classes the classifier reads in the samples against the training labels' histogram.
    net = digits[0]
    batches = last_validation(seen)
    real, fake = torch.cat([b[1] for b in batches]), torch.cat([b[2] for b in batches])
    assert len(real) == len(fake) == 4 * 16
    with torch.no_grad():
        assert metrics["val/fid_domain"] == pytest.approx(
            fid_by_hand(net.features(real), net.features(fake)), rel=1e-3
        )
        counts = torch.bincount(net(fake).argmax(1), minlength=10).double()
    data = torch.bincount(objects["datamodule"].data["train"][1], minlength=10).double()
    p, q = counts / counts.sum(), data / data.sum()
    assert metrics["val/classes_covered"] == (counts > 0).sum().item()
    kl = (p[p > 0] * (p[p > 0] / q[p > 0]).log()).sum().item()
    assert metrics["val/class_kl"] == pytest.approx(kl, rel=1e-4, abs=1e-6)
    assert metrics["val/class_max_share"] == pytest.approx(p.max().item(), rel=1e-5)
    # precision / recall on the same features, by torch-fidelity's k-NN rule written out here
    with torch.no_grad():
        fr, ff = net.features(real).double(), net.features(fake).double()
    radius = lambda a: torch.cdist(a, a).sort(1).values[:, 3]  # noqa: E731  (k = 3; itself at 0)
    precision = (torch.cdist(ff, fr) <= radius(fr)[None]).any(1).double().mean().item()
    recall = (torch.cdist(fr, ff) <= radius(ff)[None]).any(1).double().mean().item()
    assert (metrics["val/precision"], metrics["val/recall"]) == (
        pytest.approx(precision),
        pytest.approx(recall),
    )


def test_pack_minibatch_std_and_ema_train(tmp_path, monkeypatch):
    overrides = [
        "model=gan",
        "data=ring8",
        "model.pack=2",
        "model.discriminator.mbstd=4",
        "model.ema_decay=0.9",
    ]
    weights = []  # G's weights when the average starts (its copy), then after every G step

    def hook(module):
        weights.append({k: v.detach().clone() for k, v in module.ema_generator.named_parameters()})
        update = module.ema.update

        def update_ema(average, net, step):
            weights.append({k: v.detach().clone() for k, v in net.named_parameters()})
            update(average, net, step)

        module.ema.update = update_ema

    on_built_model(monkeypatch, hook)
    _, objects = run_train([*overrides, "trainer.max_steps=5", "data.batch_size=16"], tmp_path)
    module = objects["model"]
    # Packing: D scores pairs of 2D points (4 inputs) and a pair's score reads both of its points.
    d = module.discriminator.eval()
    assert [m for m in d.modules() if isinstance(m, nn.Linear)][0].in_features == 2 * 2
    torch.manual_seed(0)
    x = torch.randn(16, 2)
    scores = d(x)
    assert scores.shape == (8,)
    nudged = x.clone()
    nudged[3] += 1.0  # the second point of pair 1
    assert scores[1] != d(nudged)[1]
    # Minibatch std over groups of 4 packed inputs (i, i + 2, i + 4, i + 6: ProGAN's strided groups):
    # a pair's score changes with another pair of its group, not with one of the other group.
    moved = x.clone()
    moved[4:6] += 1.0  # pair 2, in the group of pair 0
    after = d(moved)
    assert after[0] != scores[0] and after[1] == scores[1]
    # EMA: by hand from G's weights after each of the 5 steps, e <- 0.9 e + 0.1 g, starting from G's copy.
    assert len(weights) == 1 + 5
    expected = dict(weights[0])
    for step in weights[1:]:
        expected = {k: 0.9 * v + 0.1 * step[k] for k, v in expected.items()}
    for k, v in module.ema_generator.named_parameters():
        assert torch.allclose(v, expected[k], atol=1e-6), k
        assert not torch.equal(v, weights[-1][k]) and not torch.equal(v, weights[0][k]), k
    assert module.sampler is module.ema_generator


def test_ema_update_is_the_exponential_average():
    from src.models.ema import EMA

    net, average = nn.Linear(2, 2), nn.Linear(2, 2)
    ema = EMA(0.9, start=1)
    ema.update(average, net, step=1)  # until `start`: a copy
    assert torch.equal(average.weight, net.weight)
    before = average.weight.clone()
    with torch.no_grad():
        net.weight.add_(1.0)
    ema.update(average, net, step=2)
    assert torch.allclose(average.weight, 0.9 * before + 0.1 * net.weight)
    with pytest.raises(ValueError, match=r"ema_decay must be in \(0, 1\)"):
        EMA(1.0)
    # BatchNorm's running statistics are averaged like the weights (evaluation reads them); its counter copied
    bn, bn_average = nn.BatchNorm1d(2), nn.BatchNorm1d(2)
    ema.update(bn_average, bn, step=1)
    bn(torch.tensor([[1.0, 2.0], [3.0, 6.0]]))  # running_mean 0 -> (0.2, 0.4): momentum 0.1 x the batch mean
    ema.update(bn_average, bn, step=2)
    assert torch.allclose(bn_average.running_mean, 0.1 * torch.tensor([0.2, 0.4]))
    assert bn_average.num_batches_tracked.item() == 1


def test_minibatch_std_sees_the_batch_variety():
    torch.manual_seed(0)
    same = MinibatchStd(4)(torch.ones(8, 3))
    x = torch.randn(8, 3)
    varied = MinibatchStd(4)(x)
    assert same.shape == (8, 4) and same[:, -1].abs().max() < 1e-3 and varied[:, -1].min() > 0.1
    # By hand: sample i is in the group {i % 2, i % 2 + 2, ...} (8 samples, groups of 4, strided as in
    # ProGAN); its extra feature is the mean over features of the group's standard deviation.
    assert torch.equal(varied[:, :3], x)
    for i in range(8):
        group = x[i % 2 :: 2]
        assert varied[i, -1].item() == pytest.approx(group.std(0, correction=0).mean().item(), rel=1e-4)


def test_inception_without_weights_gives_the_clear_message(tmp_path):
    overrides = ["eval.feature_extractor=inception", "eval.inception_download=false", "trainer.max_steps=1"]
    with pytest.raises(
        WeightsNotFoundError, match=f"{INCEPTION_FILE}.*put it at.*eval.feature_extractor=domain"
    ):
        run_train(overrides, tmp_path)
    env = {**os.environ, "GAN_ZOO_CACHE": str(tmp_path / "nocache"), "TORCH_HOME": str(tmp_path / "torch")}
    args = [*overrides, f"paths.log_dir={tmp_path}", "extras.print_config=false"]
    out = subprocess.run(
        [sys.executable, "-m", "src.train", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 2 and INCEPTION_FILE in out.stderr and "Traceback" not in out.stderr + out.stdout


def test_inception_download_failure_is_fast_and_clear(tmp_path, monkeypatch):
    import time

    import src.metrics.features as features

    monkeypatch.setattr(features, "INCEPTION_URL", "http://127.0.0.1:9/weights.pth")  # nothing listens there
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    start = time.perf_counter()
    with pytest.raises(WeightsNotFoundError, match="download failed"):
        features.inception_weights(None, tmp_path, download=True, timeout=5)
    assert time.perf_counter() - start < 20


def test_inception_features_work_when_the_weights_are_there(tmp_path, monkeypatch):
    import torch_fidelity.feature_extractor_inceptionv3 as tfi

    with monkeypatch.context() as patch:  # a weights file of the right layout (random values) for the test
        patch.setattr(tfi, "load_state_dict_from_url", lambda *a, **k: {})
        patch.setattr(tfi.FeatureExtractorInceptionV3, "load_state_dict", lambda self, *a, **k: None)
        torch.save(tfi.FeatureExtractorInceptionV3("x", ["2048"]).state_dict(), tmp_path / INCEPTION_FILE)
    torch.manual_seed(0)
    x = torch.rand(4, 1, 28, 28) * 2 - 1
    features = InceptionFeatures(tmp_path / INCEPTION_FILE)
    fid = score("fid", features, x, x)["fid_t"]
    assert math.isfinite(fid) and abs(fid) < 1e-2
    # (random weights give features of ~1e-8, so any FID here is ~0: what is checked is the input the
    # network gets and that its 2048 features depend on the image)
    seen = []
    features.net.register_forward_pre_hook(lambda _, args: seen.append(args[0]))
    out = features(x)
    by_hand = ((x + 1) * 127.5).round().to(torch.uint8).expand(-1, 3, -1, -1)  # [-1, 1] -> 0..255, RGB
    assert torch.equal(seen[0], by_hand) and out.shape == (4, 2048)
    assert not torch.allclose(out, features(-x), rtol=1e-3, atol=0)
    with pytest.raises(WeightsNotFoundError, match="not a usable Inception weights file"):
        (tmp_path / "bad.pth").write_bytes(b"not a checkpoint")
        InceptionFeatures(tmp_path / "bad.pth")
