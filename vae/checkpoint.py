"""One file per model: safetensors weights plus JSON metadata, written atomically.

safetensors holds only tensors and a string map, so loading never runs code (PyTorch's own
security notes rank it above `torch.load(weights_only=True)`, which has had bypasses). The
metadata holds the model config, data set, metrics and loss history: enough to rebuild the
model from the file alone. Optimizer state rides along as tensors for exact resumes.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from .atomic import SHARED, atomic_path
from .errors import CheckpointError, ConfigError
from .models import Autoencoder, ModelConfig

FORMAT = "latent-explorer/1"
_META_KEY = "latent_explorer"
_MODEL, _OPTIM, _TRAINER = "model/", "optimizer/", "trainer/"


@dataclass
class Checkpoint:
    model: Autoencoder
    path: Path | None = None
    dataset: dict = field(default_factory=dict)
    metrics: dict = field(default_factory=dict)  # test figures at the last evaluation
    history: list = field(default_factory=list)  # one dict per epoch
    train: dict = field(default_factory=dict)  # TrainConfig as a dict
    epoch: int = 0  # epochs completed
    batches_done: int = 0  # batches of the next epoch trained too (a stop mid-epoch), else 0
    optimizer_state: dict | None = None
    trainer_state: dict = field(default_factory=dict)  # name -> tensor: what resuming mid-epoch needs
    extra: dict = field(default_factory=dict)

    @property
    def config(self) -> ModelConfig:
        return self.model.config

    def metadata(self) -> dict:
        return {"format": FORMAT, "model_config": self.config.to_dict(), "dataset": self.dataset,
                "metrics": self.metrics, "history": self.history, "train": self.train,
                "epoch": self.epoch, "batches_done": self.batches_done, "extra": self.extra}


def save_checkpoint(ckpt: Checkpoint, path: str | Path, storage: torch.dtype | None = None) -> Path:
    """Written atomically (vae/atomic.py): a crash at any moment leaves either the old file or
    the new one, never a torn one. `storage=torch.float16`
    stores the floating-point weights at half the size (they load back into float32 models)."""
    path = Path(path)
    tensors = {_MODEL + k: _stored(v, storage) for k, v in ckpt.model.state_dict().items()}
    meta = ckpt.metadata() | ({"storage": str(storage).removeprefix("torch.")} if storage else {})
    if ckpt.optimizer_state is not None:
        opt_tensors, meta["optimizer"] = _flatten_optimizer(ckpt.optimizer_state)
        tensors.update(opt_tensors)
    tensors.update({_TRAINER + k: v.detach().cpu().contiguous() for k, v in ckpt.trainer_state.items()})
    with atomic_path(path, SHARED) as tmp:  # a checkpoint is for every reader
        save_file(tensors, str(tmp), metadata={_META_KEY: json.dumps(meta)})
    ckpt.path = path
    return path


def _stored(tensor: torch.Tensor, storage: torch.dtype | None) -> torch.Tensor:
    t = tensor.detach().cpu()
    return (t.to(storage) if storage is not None and t.is_floating_point() else t).contiguous()


def store_half(path: str | Path) -> Path:
    """Rewrite a weights-only checkpoint with float16 weights (half the size). Callers check that
    the model's figures survive it (`vae.cli` measures before and after)."""
    ck = load_checkpoint(path)
    if ck.optimizer_state is not None:
        raise CheckpointError(f"{path}: has optimizer state; float16 storage is for weights-only files")
    return save_checkpoint(ck, path, storage=torch.float16)


def strip_optimizer(path: str | Path) -> Path:
    """Rewrite a checkpoint without its optimizer state (a third of the size: what ships)."""
    ck = load_checkpoint(path)
    ck.optimizer_state = None
    return save_checkpoint(ck, path)


def read_metadata(path: str | Path) -> dict:
    """The JSON metadata alone (cheap: reads the header, not the weights)."""
    from safetensors import safe_open

    path = _existing(path)
    try:
        with safe_open(str(path), framework="pt") as f:
            raw = (f.metadata() or {}).get(_META_KEY)
    except (SafetensorError, OSError, ValueError) as err:
        raise CheckpointError(f"{path}: not a readable checkpoint ({err})") from err
    return _parse_meta(path, raw)


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> Checkpoint:
    """Rebuild the model from the file alone. Any problem raises CheckpointError naming the file."""
    path = _existing(path)
    meta = read_metadata(path)
    try:
        tensors = load_file(str(path), device=str(map_location))
    except (SafetensorError, OSError, ValueError, RuntimeError) as err:
        raise CheckpointError(f"{path}: corrupt or truncated checkpoint ({err})") from err
    try:
        model = Autoencoder(ModelConfig.from_dict(meta["model_config"]))
    except (ConfigError, TypeError, KeyError) as err:
        raise CheckpointError(f"{path}: invalid model config ({err})") from err
    weights = {k[len(_MODEL):]: v for k, v in tensors.items() if k.startswith(_MODEL)}
    try:
        model.load_state_dict(weights, strict=True)
    except RuntimeError as err:
        raise CheckpointError(f"{path}: weights do not match the model config ({err})") from err
    model.eval()
    optim = None
    if "optimizer" in meta:
        optim = _unflatten_optimizer({k: v for k, v in tensors.items() if k.startswith(_OPTIM)}, meta["optimizer"])
    trainer_state = {k[len(_TRAINER):]: v for k, v in tensors.items() if k.startswith(_TRAINER)}
    return Checkpoint(model=model, path=path, dataset=meta.get("dataset", {}), metrics=meta.get("metrics", {}),
                      history=meta.get("history", []), train=meta.get("train", {}), epoch=int(meta.get("epoch", 0)),
                      batches_done=int(meta.get("batches_done", 0)), optimizer_state=optim,
                      trainer_state=trainer_state, extra=meta.get("extra", {}))


def _existing(path: str | Path) -> Path:
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    return path


def _parse_meta(path: Path, raw: str | None) -> dict:
    if raw is None:
        raise CheckpointError(f"{path}: a safetensors file, but not a Latent Explorer checkpoint (no metadata)")
    try:
        meta = json.loads(raw)
    except json.JSONDecodeError as err:
        raise CheckpointError(f"{path}: checkpoint metadata is not valid JSON ({err})") from err
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise CheckpointError(f"{path}: unknown checkpoint format {meta.get('format') if isinstance(meta, dict) else meta!r}")
    return meta


def _flatten_optimizer(state: dict) -> tuple[dict[str, torch.Tensor], dict]:
    tensors, scalars = {}, {}
    for idx, per_param in state["state"].items():
        for key, value in per_param.items():
            if torch.is_tensor(value):
                tensors[f"{_OPTIM}{idx}/{key}"] = value.detach().cpu().contiguous()
            else:
                scalars[f"{idx}/{key}"] = value
    return tensors, {"param_groups": state["param_groups"], "scalars": scalars}


def _unflatten_optimizer(tensors: dict[str, torch.Tensor], meta: dict) -> dict:
    state: dict[int, dict] = {}
    for name, value in tensors.items():
        idx, key = name[len(_OPTIM):].split("/", 1)
        state.setdefault(int(idx), {})[key] = value
    for name, value in meta.get("scalars", {}).items():
        idx, key = name.split("/", 1)
        state.setdefault(int(idx), {})[key] = value
    return {"state": state, "param_groups": meta["param_groups"]}
