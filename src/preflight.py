"""Checks Hydra runs before it creates the run folder: a folder that cannot be created, or a numeric
setting of the wrong type or out of range, is one `error:` line and exit status 2, not a traceback.

Wired in conf/hydra/default.yaml as a Hydra callback, so it covers `src.train`, `src.eval` and
`src.sample`, single runs and sweeps (before the first job).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from src.errors import ConfigError, GanZooError
from src.utils.run import exit_with_error
from src.validate import check_config


def check_writable(folder: str, key: str) -> None:
    path = Path(folder).expanduser()
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path, prefix=".write-test-"):
            pass
    except OSError as e:
        where = f" ({e.filename})" if e.filename and str(e.filename) != str(path) else ""
        raise ConfigError(
            f"cannot create the output folder {path}: {e.strerror or e}{where}; set paths.log_dir "
            f"(or {key}) to a folder you can write to"
        ) from None


class Preflight(Callback):
    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        self.check(config, config.hydra.run.dir, "hydra.run.dir")

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        self.check(config, config.hydra.sweep.dir, "hydra.sweep.dir")

    @staticmethod
    def check(config: DictConfig, folder: str, key: str) -> None:
        if os.environ.get("LOCAL_RANK", "0") != "0":  # a DDP child: rank 0 checked already
            return
        try:
            check_config(config)
            check_writable(folder, key)
        except GanZooError as e:
            exit_with_error(e)
