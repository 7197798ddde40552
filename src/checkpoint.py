"""Loading gan-zoo checkpoints safely: `torch.load(weights_only=True)` only, never arbitrary unpickling.

Every way a file can be wrong (missing, a folder, truncated, not ours, needing unsafe unpickling)
becomes one `CheckpointError` that names the file.
"""

from __future__ import annotations

import logging
import pickle
import re
import zipfile
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from src.build import build_model
from src.errors import CheckpointError, ConfigError, GanZooError
from src.utils.weights import load_weights

log = logging.getLogger(__name__)

ZIP_MAGIC = b"PK\x03\x04"  # torch.save's default format is a zip archive
PICKLE_MAGIC = b"\x80"  # the legacy format starts with a pickle protocol >= 2 header


def resolve(path: str | Path) -> Path:
    """The checkpoint file for `path`: the file itself, or `<run dir>/checkpoints/last.ckpt`."""
    p = Path(path).expanduser()
    if p.is_dir():
        last = p / "checkpoints" / "last.ckpt"
        if last.is_file():
            return last
        hint = suggest(p)
        raise CheckpointError(
            f"{p} is a directory without checkpoints/last.ckpt; "
            + (f"did you mean ckpt={hint}?" if hint else "give a .ckpt file or a run folder")
        )
    if not p.exists():
        raise CheckpointError(f"checkpoint {p} does not exist")
    return p


def suggest(folder: Path) -> Path | None:
    """The newest checkpoint in `folder` or in run folders up to three levels below it."""
    patterns = ["*.ckpt"] + [f"{'*/' * depth}checkpoints/last.ckpt" for depth in (1, 2, 3)]
    for pattern in patterns:
        found = [f for f in folder.glob(pattern) if f.is_file()]
        if found:
            return max(found, key=lambda f: f.stat().st_mtime)
    return None


def load_checkpoint(path: str | Path) -> tuple[DictConfig, dict[str, Any], dict[str, Any]]:
    """(the run's config, the model's state_dict, info: path, d_step, g_step, epoch) of a checkpoint."""
    file = resolve(path)
    unreadable = f"{file} is not a readable checkpoint (truncated or corrupt?)"
    foreign = f"{file} is not a gan-zoo checkpoint"
    try:
        with open(file, "rb") as f:
            head = f.read(4)
    except OSError as e:
        raise CheckpointError(f"cannot read {file}: {e.strerror}") from None
    if not head:
        raise CheckpointError(f"{unreadable}: the file is empty")
    if head.startswith(ZIP_MAGIC):
        if zipfile.is_zipfile(file) and not has_pickle(file):
            raise CheckpointError(f"{foreign} (a zip archive, not a PyTorch file)")
    elif not head.startswith(PICKLE_MAGIC):
        raise CheckpointError(f"{foreign} (not a PyTorch file)")
    try:
        ckpt = torch.load(file, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        found = re.search(r"GLOBAL (\S+) was not an allowed global", str(e))
        if found:
            raise CheckpointError(
                f"{file} needs unsafe unpickling (it stores the Python object {found.group(1)}); "
                "gan-zoo loads checkpoints with weights_only=True only and will not run code from a file"
            ) from None
        raise CheckpointError(unreadable) from None
    except (RuntimeError, EOFError, ValueError, OSError):
        raise CheckpointError(unreadable) from None
    state = ckpt.get("gan_zoo") if isinstance(ckpt, dict) else None
    if not isinstance(state, dict) or not isinstance(state.get("config"), dict) or "state_dict" not in ckpt:
        raise CheckpointError(
            f"{foreign} (no gan_zoo config; `python -m src.train` writes checkpoints with one)"
        )
    info = {
        "path": file,
        "d_step": state.get("d_step"),
        "g_step": state.get("g_step"),
        "epoch": ckpt.get("epoch"),
        "wandb_id": state.get("wandb_id"),
        "choices": state.get("choices"),
    }
    return OmegaConf.create(upgrade_config(state["config"])), ckpt["state_dict"], info


def has_pickle(file: Path) -> bool:
    with zipfile.ZipFile(file) as z:
        return any(name.endswith("/data.pkl") for name in z.namelist())


GROUPS = ("model", "loss", "data")


def group_choices() -> dict[str, str]:
    """The options picked for the groups a checkpoint must match (model=dcgan loss=wgan_gp data=mnist5k)."""
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return {}
    choices = HydraConfig.get().runtime.choices
    return {g: str(choices[g]) for g in GROUPS if choices.get(g) is not None}


def check_resume(ckpt_path: str, cfg: DictConfig, model: torch.nn.Module) -> str | None:
    """Check that the checkpoint to resume fits this command (the groups it was trained with, its
    weights' names and shapes) before the Trainer loads it with a raw traceback; return the W&B run it
    was logging to, so that resuming continues that run."""
    try:
        old_cfg, state, info = load_checkpoint(ckpt_path)
    except CheckpointError as e:
        raise ConfigError(f"ckpt_path={ckpt_path}: {e}") from None
    old = dict(info.get("choices") or {})
    new = dict(model.choices)
    differ = [g for g in GROUPS if g in old and g in new and old[g] != new[g]]
    for g in GROUPS:  # checkpoints without the names: compare what the groups build
        if g not in old and OmegaConf.select(old_cfg, f"{g}._target_") != OmegaConf.select(
            cfg, f"{g}._target_"
        ):
            differ.append(g)
    mine = model.state_dict()
    misfit = sorted(set(mine) ^ set(state)) or [
        k for k in mine if tuple(mine[k].shape) != tuple(getattr(state[k], "shape", ()))
    ]
    if differ or misfit:
        trained = " ".join(f"{g}={old[g]}" for g in GROUPS if g in old)
        asked = " ".join(f"{g}={new[g]}" for g in GROUPS if g in new)
        if differ and trained and asked:
            detail = f"this command has {asked}"
        else:
            changed = settings_diff(old_cfg, cfg)
            detail = f"its weights do not fit this model ({misfit[0] if misfit else differ[0]})" + (
                f"; settings that differ: {', '.join(changed)}" if changed else ""
            )
        raise ConfigError(
            f"ckpt_path={ckpt_path} was trained with {trained or 'another model'}; {detail}. To resume it, "
            f"run `python -m src.train {trained + ' ' if trained else ''}ckpt_path={ckpt_path}` with the "
            "overrides it was trained with; to start fresh, leave out ckpt_path"
        )
    schedule = OmegaConf.select(old_cfg, "model.lr_schedule") or {}
    total = OmegaConf.select(cfg, "model.lr_schedule.total_steps")
    if schedule.get("name") == "linear_decay" and schedule.get("total_steps") != total:
        log.warning(
            "model.lr_schedule=linear_decay: %s was trained with total_steps=%s, this run has %s; the learning "
            "rate follows the new schedule from here, so the result differs from a run that long from the "
            "start (model.lr_schedule.name=constant extends exactly)",
            ckpt_path,
            schedule.get("total_steps"),
            total,
        )
    return info["wandb_id"]


def settings_diff(old: DictConfig, new: DictConfig, limit: int = 4) -> list[str]:
    """`key: old -> new` for the model/loss/data settings that differ (the first `limit`)."""
    from src.validate import leaves

    def flat(cfg: DictConfig) -> dict:
        return dict(leaves({g: OmegaConf.to_container(cfg[g], resolve=True) for g in GROUPS if g in cfg}))

    a, b = flat(old), flat(new)
    keys = [k for k in b if k in a and a[k] != b[k] and not k.startswith("data.root")]
    return [f"{k}: {a[k]} -> {b[k]}" for k in keys[:limit]]


def build_from_checkpoint(
    path: str | Path, device: str | torch.device = "cpu"
) -> tuple[torch.nn.Module, DictConfig, dict[str, Any]]:
    """The trained model of a checkpoint, on `device`, in eval mode."""
    cfg, state, info = load_checkpoint(path)
    try:
        model = build_model(cfg)
    except GanZooError as e:
        raise CheckpointError(f"{info['path']}: its stored config no longer builds a model: {e}") from e
    load_weights(
        model, state, f"{info['path']}: its weights do not fit the model its config builds", CheckpointError
    )
    model.d_step, model.g_step = info["d_step"] or 0, info["g_step"] or 0
    return model.to(device).eval(), cfg, info


def load_stage1(path: str | None, stage: int | str = 2) -> tuple[dict, dict[str, torch.Tensor]] | None:
    """StackGAN stage II's input (conf/model/stackgan.yaml, `stage1_source`): (stage-I settings, its generator's
    weights) from a stage-I checkpoint or run folder; None for another stage or without a path."""
    from src.models.stackgan import NOT_FOR, STAGE1_HINT
    from src.text.encoders import identity_of

    if str(stage) != "2" or not path:
        return None
    try:
        cfg, state, info = load_checkpoint(path)
    except CheckpointError as e:
        raise ConfigError(f"model.stage1_ckpt: {e}; {STAGE1_HINT}") from None
    file, model = info["path"], OmegaConf.to_container(cfg.get("model") or OmegaConf.create(), resolve=True)
    target = str(model.get("_target_", ""))
    if not target.endswith(".StackGAN"):
        raise ConfigError(
            f"model.stage1_ckpt={file} is a checkpoint of {target or 'an unknown model'}, not of a StackGAN "
            f"stage I; {STAGE1_HINT}"
        )
    if str(model.get("stage")) not in ("1", "both"):
        raise ConfigError(
            f"model.stage1_ckpt={file} is a StackGAN stage-II checkpoint; give the stage-I checkpoint "
            f"(this one refines {model.get('stage1_ckpt')})"
        )
    spec = {
        "ckpt": str(file),
        "shape": [int(s) for s in model.get("stage1_shape") or []],
        "latent_dim": int(model["latent_dim"]),
        "c_dim": int(model["c_dim"]),
        # What the encoder is, not its config: a _target_ here would be instantiated when this spec is read back.
        "text_encoder": identity_of(model.get("text_encoder") or {}),
        "generator": {k: v for k, v in (model.get("generator") or {}).items() if k not in NOT_FOR[1]},
    }
    prefix = "ema_generator." if any(k.startswith("ema_generator.") for k in state) else "generator."
    return spec, {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}


# Checkpoints written before optimizers and schedules became Hydra partials and auxiliary terms config nodes
# (gan-zoo 0.4): their flat keys, in today's terms.
OPTIMIZERS = {"adam": "Adam", "adamw": "AdamW", "rmsprop": "RMSprop", "sgd": "SGD"}
TERMS = {
    "ms": ("src.losses.auxiliary.ModeSeekingTerm", {"mode_seeking": "weight"}),
    "ac": ("src.losses.auxiliary.ClassTerm", {"class_weight": "weight", "d_on_fake": "d_on_fake"}),
    "ca": ("src.losses.text.KLTerm", {"kl_weight": "weight"}),
    "match": ("src.losses.text.MismatchTerm", {"mismatch_weight": "weight", "mismatch_contrast": "contrast"}),
    "itc": (
        "src.losses.text.TextMatchTerm",
        {"text_match": "weight", "text_match_temperature": "temperature"},
    ),
}


def upgrade_config(config: dict[str, Any]) -> dict[str, Any]:
    """A stored run config in today's keys (a checkpoint of an earlier version); today's configs pass unchanged."""
    model = config.get("model")
    if not isinstance(model, dict) or "terms" in model:
        return config
    for key in ("optimizer_g", "optimizer_d"):
        options = model.get(key)
        if isinstance(options, dict) and "name" in options:
            name = options.pop("name")
            options.update(
                {
                    "_target_": f"torch.optim.{OPTIMIZERS[name]}" if name in OPTIMIZERS else name,
                    "_partial_": True,
                }
            )
    schedule = model.get("lr_schedule")
    if isinstance(schedule, dict) and "name" in schedule:
        name = schedule.pop("name")
        linear = {"_target_": "src.models.schedules.LinearDecay", "_partial_": True, **schedule}
        model["lr_schedule"] = linear if name == "linear_decay" else None
    terms = model["terms"] = {}
    for term, (target, keys) in TERMS.items():
        options = {new: model.pop(old) for old, new in keys.items() if old in model}
        if options and (term == "ac" or options.get("weight")):  # AC-GAN always had its term
            terms[term] = {"_target_": target, **options}
    if "ac" in terms:
        terms["ac"]["num_classes"] = model.get("num_classes")
    if "mi" in model:
        mi = model.pop("mi") or {}
        terms["info"] = {"_target_": "src.losses.auxiliary.MutualInfoTerm", "cat_dims": model.get("cat_dims"),
                         "cont_dim": model.get("cont_dim"), **mi}  # fmt: skip
    elif str(model.get("_target_", "")).endswith(".InfoGAN"):  # InfoGAN from before `mi`: the paper's term
        terms["info"] = {"_target_": "src.losses.auxiliary.MutualInfoTerm", "cat_dims": model.get("cat_dims"),
                         "cont_dim": model.get("cont_dim")}  # fmt: skip
    model.pop("stage2_overrides", None)
    return config
