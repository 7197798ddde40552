"""Image metrics, mode-collapse metrics, remedies (packing, minibatch std, EMA) and the offline Inception path."""

from __future__ import annotations

import math
import os
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F
from conftest import CACHE, ROOT, run_train
from torch import nn

from src.data.mnist5k import EmbeddedMNIST
from src.metrics.classifier import load_or_train
from src.metrics.features import INCEPTION_FILE, DomainFeatures, InceptionFeatures, WeightsNotFoundError
from src.metrics.image import ClassCoverage, RealFake, StackedModes
from src.metrics.modes import ModeCoverage
from src.models.networks.layers import MinibatchStd


@pytest.fixture(scope="module")
def digits():
    dm = EmbeddedMNIST()
    net, acc = load_or_train(dm, CACHE / "classifiers", epochs=6, batch_size=128, lr=1e-3, seed=0)
    x, y = dm.data["val"]
    return net, acc, x.float() / 127.5 - 1, y


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
    noise = torch.rand_like(x) * 2 - 1
    noise_fid = score("fid", feats, x, noise)["fid_t"]
    assert abs(same_fid) < 1e-2 and noise_fid > 100 * max(halves_fid, 1e-3) and noise_fid > 10
    same_kid = score("kid", feats, x, x, kid_subset=100)["kid_t_mean"]
    noise_kid = score("kid", feats, x, noise, kid_subset=100)["kid_t_mean"]
    assert abs(same_kid) < 1e-4 * noise_kid  # unbiased: ~0 up to subset noise, vs orders of magnitude more


def test_inception_score_analogue_rewards_confident_varied_samples(digits):
    net, _, x, y = digits
    logits = DomainFeatures(net, "logits")
    varied = score("is", logits, x, x, is_splits=1)["is_t_mean"]
    ones = score("is", logits, x, x[y == 1][:200].repeat(2, 1, 1, 1), is_splits=1)["is_t_mean"]
    assert varied > 8 and ones < 1.5  # about the number of classes vs about one


class PixelLabel(nn.Module):
    """A stand-in classifier: reads the label off the first pixel (value = label / 10 in [-1, 1] scale)."""

    shape, num_classes, feature_dim = (1, 4, 4), 10, 10

    def forward(self, x):
        return F.one_hot((x[:, 0, 0, 0] * 10).round().long().clamp(0, 9), 10).float()


def images_with_labels(labels, channels=1):
    x = torch.zeros(len(labels), channels, 4, 4)
    x[:, :, 0, 0] = labels.float().reshape(len(labels), -1) / 10
    return x


def test_class_coverage_by_hand():
    metric = ClassCoverage(PixelLabel(), 1.0, torch.ones(10))  # the data: uniform over 10 classes
    metric.update(fake=images_with_labels(torch.arange(5).repeat(8)))  # samples: 5 classes, evenly
    out = metric.compute()
    assert out["classes_covered"].item() == 5
    assert out["class_kl"].item() == pytest.approx(math.log(2), abs=1e-6)


def test_stacked_modes_by_hand():
    metric = StackedModes(PixelLabel(), 1.0)
    labels = torch.tensor([[1, 2, 3], [1, 2, 3], [4, 5, 6], [0, 0, 7]])
    metric.update(fake=images_with_labels(labels, channels=3))
    out = metric.compute()
    p = torch.tensor([0.5, 0.25, 0.25])
    assert out["stacked_modes"].item() == 3
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


def test_stacked_mnist_data_and_modes(tmp_path):
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
    assert x.shape == (2000, 3, 28, 28) and int(y.max()) < 1000 and dm.num_classes == 1000
    src_x, src_y = dm.classifier_source.data["train"]
    first = (src_x[:, 0] == x[0, 0]).all(-1).all(-1).nonzero()[0, 0]
    assert int(src_y[first]) == int(y[0]) // 100
    assert 1 <= metrics["val/stacked_modes"] <= 300 and metrics["val/stacked_kl"] > 0
    assert objects["trainer"].checkpoint_callback.monitor == "val/stacked_modes"


def test_image_metrics_run_in_training_and_pick_the_best_checkpoint(tmp_path):
    metrics, objects = run_train(
        ["trainer.max_steps=2", "data.batch_size=16", "trainer.limit_val_batches=4"], tmp_path
    )
    for key in ("fid_domain", "kid_domain_mean", "is_domain_mean", "classes_covered", "class_kl"):
        assert math.isfinite(metrics[f"val/{key}"]), key
    assert objects["trainer"].checkpoint_callback.monitor == "val/fid_domain"


def test_pack_minibatch_std_and_ema_train(tmp_path):
    overrides = [
        "model=gan",
        "data=ring8",
        "model.pack=2",
        "model.discriminator.mbstd=4",
        "model.ema_decay=0.9",
    ]
    _, objects = run_train([*overrides, "trainer.max_steps=5", "data.batch_size=16"], tmp_path)
    module = objects["model"]
    assert module.discriminator.trunk[0](torch.zeros(8, 4)).shape == (8, 4)  # packed: 2 samples x 2 coords
    g, ema = dict(module.generator.named_parameters()), dict(module.ema_generator.named_parameters())
    assert all(not torch.equal(g[k], ema[k]) for k in g if "weight" in k)
    assert module.sampler is module.ema_generator


def test_ema_update_is_the_exponential_average():
    net = nn.Linear(2, 2)
    from src.losses import NonSaturating
    from src.models.module import GANModule

    class G(nn.Linear):
        shape = (2,)

    module = GANModule(
        G(2, 2), nn.Linear(2, 1), NonSaturating(), {"lr": 1e-3}, {"lr": 1e-3}, 2, ema_decay=0.5
    )
    before = module.ema_generator.weight.clone()
    with torch.no_grad():
        module.generator.weight.add_(1.0)
    module.g_step = 1
    module.update_ema()
    assert torch.allclose(module.ema_generator.weight, 0.5 * before + 0.5 * module.generator.weight)
    del net


def test_minibatch_std_sees_the_batch_variety():
    same = MinibatchStd(4)(torch.ones(8, 3))
    varied = MinibatchStd(4)(torch.randn(8, 3))
    assert same.shape == (8, 4) and same[:, -1].abs().max() < 1e-3 and varied[:, -1].min() > 0.1


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
    fid = score("fid", InceptionFeatures(tmp_path / INCEPTION_FILE), x, x)["fid_t"]
    assert math.isfinite(fid) and abs(fid) < 1e-2
    with pytest.raises(WeightsNotFoundError, match="not a usable Inception weights file"):
        (tmp_path / "bad.pth").write_bytes(b"not a checkpoint")
        InceptionFeatures(tmp_path / "bad.pth")
