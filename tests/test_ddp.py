"""DDP on CPU (gloo): two processes on one machine, and two "nodes" (one process each) on loopback.

Each rank must read its own shard of the data and draw its own noise (the effective batch is
world_size x data.batch_size for reals and fakes), and after training G and D must be identical on
every rank."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

import pytest
import torch
from conftest import ROOT

QUIET = ["extras.print_config=false", "trainer.enable_progress_bar=false", "~callbacks.rich_progress_bar"]
ENV = {
    "PYTHONPATH": f"{ROOT / 'tests'}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
    "PYTHONUNBUFFERED": "1",
}


def probe_args(probe):
    return ["+callbacks.probe._target_=probes.SaveRankWeights", f"+callbacks.probe.dirpath={probe}"]


def check_ranks(probe, steps):
    r0, r1 = (torch.load(probe / f"rank{r}.pt", weights_only=True) for r in (0, 1))
    assert r0["steps"] == r1["steps"] == steps
    assert not torch.equal(r0["real"], r1["real"]), "both ranks trained on the same real batch"
    assert not torch.equal(r0["z"], r1["z"]), "both ranks drew the same noise: the fakes are duplicated"
    for net in ("state", "d_state"):  # G, then D
        for k, v in r0[net].items():
            if v.is_floating_point() and "running" not in k:  # BatchNorm statistics are per process
                assert torch.equal(v, r1[net][k]), (net, k)


def run(args, env=None, timeout=300):
    return subprocess.run(
        [sys.executable, "-m", "src.train", *args],
        cwd=ROOT,
        env={**os.environ, **ENV, **(env or {})},
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_ddp_two_cpu_processes_split_the_work_and_stay_identical(tmp_path):
    probe = tmp_path / "probe"
    args = ["trainer=ddp_cpu", "loss=wgan_gp", "trainer.max_steps=3", "data.batch_size=16", *QUIET]
    args += [f"paths.log_dir={tmp_path / 'logs'}", *probe_args(probe)]
    out = run(args)
    assert out.returncode == 0, out.stderr[-3000:]
    check_ranks(probe, {"g_step": 3, "d_step": 15, "world_size": 2})
    runs = list((tmp_path / "logs" / "train" / "runs").iterdir())
    assert len(runs) == 1, f"one Hydra run folder expected, found {runs}"
    assert (runs[0] / "checkpoints" / "last.ckpt").is_file()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_two_nodes_on_loopback_end_with_identical_weights(tmp_path):
    """`trainer.num_nodes=2`, one process per node, as two machines would run it (README: many machines)."""
    probe, port = tmp_path / "probe", free_port()
    args = ["trainer=ddp_cpu", "trainer.devices=1", "trainer.num_nodes=2", "model=gan", "trainer.max_steps=3"]
    args += ["data.batch_size=16", "eval.metrics=[]", "~callbacks.samples", *QUIET, *probe_args(probe)]
    procs = []
    for node in (0, 1):
        env = {
            **os.environ,
            **ENV,
            "MASTER_ADDR": "127.0.0.1",
            "MASTER_PORT": str(port),
            "NODE_RANK": str(node),
        }
        cmd = [sys.executable, "-m", "src.train", *args, f"hydra.run.dir={tmp_path / f'node{node}'}"]
        procs.append(
            subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        )
    outs = [p.communicate(timeout=300)[0].decode(errors="replace") for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs[0][-2000:] + outs[1][-2000:]
    check_ranks(probe, {"g_step": 3, "d_step": 3, "world_size": 2})
    assert (tmp_path / "node0" / "checkpoints" / "last.ckpt").is_file()
