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


def squash(text: str) -> str:
    """Hydra's multi-line message as one line: sentences joined, option lists comma-separated, the
    config search path left out."""
    parts: list[str] = []
    for line in text.split("Config search path")[0].splitlines():
        line = line.strip()
        if not line or line.startswith(("full_key:", "object_type=", "reference_type=")):
            continue
        if parts and parts[-1].endswith(":"):
            parts[-1] += " " + line
        elif parts and not parts[-1].endswith((".", ":")) and line.isidentifier():
            parts[-1] += ", " + line  # one option of a list
        else:
            parts.append(line)
    return "".join(
        p if i == 0 else (" " if parts[i - 1].endswith(".") else "; ") + p for i, p in enumerate(parts)
    )


def one_line_hydra_errors() -> None:
    """Hydra reports a bad override (an unknown option or key, bad syntax) on several lines with exit
    status 1; here it is one `error:` line and exit status 2, like every other bad input. Hydra has no
    hook for this, so its reporter is wrapped (`run_and_report`, looked up at call time by `_run_hydra`);
    HYDRA_FULL_ERROR=1 still shows Hydra's own report."""
    import hydra._internal.utils as hydra_utils
    from hydra.errors import CompactHydraException
    from omegaconf.errors import OmegaConfBaseException

    report = hydra_utils.run_and_report

    def run_and_report(func: Any) -> Any:
        try:
            return func()
        except CompactHydraException as e:
            if os.environ.get("HYDRA_FULL_ERROR") == "1":
                raise
            cause = e.__cause__
            detail = f" ({squash(str(cause))})" if isinstance(cause, OmegaConfBaseException) else ""
            override = getattr(e, "override", None)  # a syntax error: which override
            exit_with_error(ConfigError((f"{override}: " if override else "") + squash(str(e)) + detail))
        except Exception as e:  # anything else: as Hydra reports it
            error = e

            def again() -> None:
                raise error

            return report(again)

    hydra_utils.run_and_report = run_and_report
