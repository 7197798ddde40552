"""No memory growth over a long run: nothing (graphs, logged tensors, samples) accumulates per step."""

from __future__ import annotations

import sys

import pytest
from conftest import run_train


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/statm")
def test_resident_memory_does_not_climb(tmp_path):
    overrides = ["experiment=ring8_fast", "loss=wgan_gp", "model.n_critic=1", "data.batch_size=64"]
    overrides += ["model.ema_decay=0.99", "trainer.max_steps=1500", "trainer.log_every_n_steps=10"]
    overrides += [
        "trainer.limit_val_batches=0",
        "~callbacks.samples",
        "+callbacks.mem._target_=probes.MemoryProbe",
    ]
    overrides += ["+callbacks.mem.at=[300,1500]"]
    _, objects = run_train(overrides, tmp_path)
    probe = next(cb for cb in objects["trainer"].callbacks if type(cb).__name__ == "MemoryProbe")
    growth = probe.rss[1500] - probe.rss[300]
    # A retained graph or a list of per-step tensors grows by well over this in 1,200 steps.
    assert growth < 25, f"resident memory grew {growth:.1f} MiB from G step 300 to 1500: {probe.rss}"
