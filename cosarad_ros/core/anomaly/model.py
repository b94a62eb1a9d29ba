"""The COSARAD patch feature extractor (forward pass only) and its weight files.

Tarvo, Wan, Chen, "Contrastive Learning on 3D Point Clouds for Robotic Geometric Defect
Detection" (COSARAD): a PointNet++ MSG backbone maps a patch to ``h in R^1024``; the contrastive
head ``Dropout(0.4) -> BN(1024) -> ReLU -> Linear(1024, 256) -> BN -> ReLU -> Linear(256, d) ->
L2 norm`` maps ``h`` to a unit feature ``z in R^d`` (``d = 64``).

Weights are stored with safetensors (no pickled code is ever executed when loading); the
architecture and provenance (classes seen in training, training command and cost) travel as JSON
in the file's metadata, so one file is a complete model.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field

import torch
from torch import nn

from .pointnet2 import BACKBONE_PRESETS, BackboneConfig, PointNet2MSG

__all__ = ["CosaradNet", "ModelInfo", "save_model", "load_model", "check_arch", "default_model_path", "fold_batchnorm",
           "FORMAT_VERSION",
           "INPUT_CHANNELS"]

FORMAT_VERSION = "cosarad-model/1"

#: per-point channels after x, y, z for each kind of patch input
INPUT_CHANNELS = {"xyz": 0, "xyz+deviation": 1}


class CosaradNet(nn.Module):
    """PointNet++ MSG backbone + contrastive projection head.

    Args:
        backbone: a preset name of :data:`~cosarad_ros.core.anomaly.pointnet2.BACKBONE_PRESETS`
            or a :class:`BackboneConfig`.
        feature_dim: ``d``, the size of the L2-normalised output.
        hidden_dim: width of the head's hidden layer (256 in the paper).
        dropout: dropout probability at the head's input (0.4 in the paper).
        inputs: what each patch point carries: ``"xyz"`` (the paper) or ``"xyz+deviation"``
            (coordinates plus the point's deviation from the good templates, see
            :mod:`.surfaces`; an addition to the paper).
    """

    def __init__(self, backbone: str | BackboneConfig = "small", *, feature_dim: int = 64,
                 hidden_dim: int = 256, dropout: float = 0.4, inputs: str = "xyz"):
        super().__init__()
        if feature_dim < 1 or hidden_dim < 1 or not 0.0 <= dropout < 1.0:
            raise ValueError(f"invalid head sizes feature_dim={feature_dim} hidden_dim={hidden_dim} dropout={dropout}")
        if inputs not in INPUT_CHANNELS:
            raise ValueError(f"unknown patch inputs {inputs!r}; choose from {sorted(INPUT_CHANNELS)}")
        self.inputs = inputs
        self.in_channels = INPUT_CHANNELS[inputs]
        self.backbone = PointNet2MSG(backbone, in_channels=self.in_channels)
        self.backbone_config = self.backbone.config
        self.feature_dim = int(feature_dim)
        self.hidden_dim = int(hidden_dim)
        self.dropout = float(dropout)
        h = self.backbone.out_dim
        self.head = nn.Sequential(
            nn.Dropout(dropout), nn.BatchNorm1d(h), nn.ReLU(inplace=True),
            nn.Linear(h, hidden_dim), nn.BatchNorm1d(hidden_dim), nn.ReLU(inplace=True),
            nn.Linear(hidden_dim, feature_dim),
        )

    def embed(self, patches: torch.Tensor, *, presorted: bool = False) -> torch.Tensor:
        """Backbone descriptor ``h``: ``(B, N, 3 + C) -> (B, 1024)``."""
        return self.backbone(patches, presorted=presorted)

    def forward(self, patches: torch.Tensor, *, presorted: bool = False) -> torch.Tensor:
        """``(B, N, 3 + C)`` patches in patch units (radius 2, centred) -> ``(B, d)`` unit features.

        ``presorted``: the points of each patch are in farthest-point order (as
        :func:`~cosarad_ros.core.anomaly.patches.extract_patches` writes them).
        """
        z = self.head(self.backbone(patches, presorted=presorted))
        return nn.functional.normalize(z, dim=-1)

    def arch(self) -> dict:
        return {"backbone": self.backbone_config.to_dict(), "feature_dim": self.feature_dim,
                "hidden_dim": self.hidden_dim, "dropout": self.dropout, "inputs": self.inputs}

    @classmethod
    def from_arch(cls, arch: dict) -> "CosaradNet":
        try:
            return cls(BackboneConfig.from_dict(arch["backbone"]), feature_dim=int(arch["feature_dim"]),
                       hidden_dim=int(arch["hidden_dim"]), dropout=float(arch["dropout"]),
                       inputs=str(arch.get("inputs", "xyz")))
        except KeyError as exc:
            raise ValueError(f"model architecture record lacks {exc}") from exc


@dataclass(frozen=True)
class ModelInfo:
    """Provenance stored next to the weights.

    Attributes:
        classes_seen: classes whose patches were used in training (the honest-evaluation record).
        patch_points: points per patch the model was trained with.
        extra: free-form JSON-able facts (training command, epochs, wall time, final loss...).
    """

    classes_seen: tuple[str, ...] = ()
    patch_points: int = 512
    extra: dict = field(default_factory=dict)


def save_model(path: str, model: CosaradNet, info: ModelInfo | None = None, *, half: bool = False) -> None:
    """Write ``model`` to a safetensors file with its architecture and ``info`` as metadata.

    Args:
        half: store float tensors as float16 (half the size; loaded back as float32).
    """
    from safetensors.torch import save_file

    info = info or ModelInfo()
    tensors = {}
    for k, v in model.state_dict().items():
        v = v.detach().cpu().contiguous()
        if half and v.is_floating_point():
            v = v.half()
        tensors[k] = v
    meta = {"format": FORMAT_VERSION, "arch": json.dumps(model.arch()),
            "classes_seen": json.dumps(list(info.classes_seen)),
            "patch_points": str(int(info.patch_points)), "extra": json.dumps(info.extra, default=str)}
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = path + ".tmp"
    save_file(tensors, tmp, metadata=meta)
    os.replace(tmp, path)


#: bounds of the head sizes a model file may ask for (the backbone must be a known preset)
MAX_FEATURE_DIM = 1024
MAX_HIDDEN_DIM = 4096


def check_arch(arch, *, name: str = "model") -> dict:
    """Validate an architecture record from a model file against the known architectures.

    The backbone must be one of :data:`~cosarad_ros.core.anomaly.pointnet2.BACKBONE_PRESETS`,
    ``feature_dim`` in ``[1, MAX_FEATURE_DIM]``, ``hidden_dim`` in ``[1, MAX_HIDDEN_DIM]``,
    ``dropout`` in ``[0, 1)`` and ``inputs`` one of :data:`INPUT_CHANNELS`: nothing is built
    from a record that fails, so a crafted file cannot make the loader allocate a huge network.

    Returns:
        ``arch`` (a dict).

    Raises:
        ValueError: naming ``name`` and the offending entry.
    """
    if not isinstance(arch, dict):
        raise ValueError(f"{name}: architecture record must be a JSON object, got {type(arch).__name__}")
    try:
        backbone = BackboneConfig.from_dict(arch["backbone"])
    except (KeyError, ValueError, TypeError) as exc:
        raise ValueError(f"{name}: architecture has no valid backbone ({str(exc)[:200]})") from None
    if backbone not in BACKBONE_PRESETS.values():
        raise ValueError(f"{name}: the backbone is none of the known architectures ({', '.join(BACKBONE_PRESETS)})")
    for key, hi in (("feature_dim", MAX_FEATURE_DIM), ("hidden_dim", MAX_HIDDEN_DIM)):
        v = arch.get(key)
        if not isinstance(v, int) or isinstance(v, bool) or not 1 <= v <= hi:
            raise ValueError(f"{name}: architecture {key} must be an integer in [1, {hi}], got {v!r}")
    d = arch.get("dropout")
    if not isinstance(d, (int, float)) or isinstance(d, bool) or not 0.0 <= d < 1.0:
        raise ValueError(f"{name}: architecture dropout must be in [0, 1), got {d!r}")
    if arch.get("inputs", "xyz") not in INPUT_CHANNELS:
        raise ValueError(f"{name}: architecture inputs must be one of {sorted(INPUT_CHANNELS)}, "
                         f"got {arch.get('inputs')!r}")
    return arch


def load_model(path: str | None = None, *, device: str | torch.device = "cpu") -> tuple[CosaradNet, ModelInfo]:
    """Load a model written by :func:`save_model` (``None`` -> the shipped default).

    The metadata is read and checked (:func:`check_arch`), the network built and every tensor's
    name, dtype and shape in the file's header compared with it before any weight is read.

    Returns:
        ``(model in eval mode, ModelInfo)``.

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: the file is not a COSARAD safetensors model, asks for an unknown
            architecture, or does not match its architecture.
    """
    from safetensors import safe_open

    path = default_model_path() if path is None else os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"COSARAD model file not found: {path}")
    try:
        with safe_open(path, framework="pt", device="cpu") as f:
            meta = f.metadata() or {}
            if meta.get("format") != FORMAT_VERSION:
                raise ValueError(f"{path} is not a COSARAD model (format {meta.get('format')!r}, "
                                 f"expected {FORMAT_VERSION!r})")
            try:
                arch = json.loads(meta["arch"])
                info = ModelInfo(classes_seen=tuple(json.loads(meta.get("classes_seen", "[]"))),
                                 patch_points=int(meta.get("patch_points", 512)),
                                 extra=json.loads(meta.get("extra", "{}")))
            except (KeyError, ValueError, TypeError) as exc:
                raise ValueError(f"{path}: corrupt model metadata ({exc})") from None
            model = CosaradNet.from_arch(check_arch(arch, name=path))
            expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
            keys = set(f.keys())
            if keys != set(expected):
                missing, extra = sorted(set(expected) - keys), sorted(keys - set(expected))
                raise ValueError(f"{path}: weights do not match the stored architecture (missing "
                                 f"{missing[:3]}, unexpected {extra[:3]})")
            for k in expected:
                sl = f.get_slice(k)
                shape = tuple(sl.get_shape())
                if shape != expected[k]:
                    raise ValueError(f"{path}: tensor {k} has shape {list(shape)}, the architecture needs "
                                     f"{list(expected[k])}")
                if sl.get_dtype() not in ("F16", "BF16", "F32", "F64", "I64"):
                    raise ValueError(f"{path}: tensor {k} has unsupported dtype {sl.get_dtype()}")
            state = {k: f.get_tensor(k) for k in expected}
    except ValueError:
        raise
    except Exception as exc:  # safetensors raises its own error types for corrupt headers
        raise ValueError(f"{path} is not a readable safetensors model file: {exc}") from exc
    state = {k: (v.float() if v.is_floating_point() else v) for k, v in state.items()}
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise ValueError(f"{path}: weights do not match the stored architecture: {exc}") from exc
    return model.to(device).eval(), info


def fold_batchnorm(model: CosaradNet) -> CosaradNet:
    """An inference copy of ``model`` (eval mode) with every ``Linear -> BatchNorm1d`` pair of the
    backbone's shared MLPs and of the head merged into one ``Linear`` (Ioffe & Szegedy 2015: in
    eval mode batch norm is a fixed affine map, so ``BN(Wx) = (s W) x + (beta - s mu)`` with
    ``s = gamma / sqrt(var + eps)``). Same outputs up to float rounding, fewer passes over the
    activations; not for training (the copy has no batch-norm statistics left to update).
    """
    import copy

    m = copy.deepcopy(model).eval()

    def fold(seq: nn.Sequential) -> nn.Sequential:
        layers, i = [], 0
        mods = list(seq)
        while i < len(mods):
            a = mods[i]
            b = mods[i + 1] if i + 1 < len(mods) else None
            if isinstance(a, nn.Linear) and isinstance(b, nn.BatchNorm1d) and b.track_running_stats:
                with torch.no_grad():
                    scale = b.weight / torch.sqrt(b.running_var + b.eps)
                    lin = nn.Linear(a.in_features, a.out_features, bias=True)
                    lin.weight.copy_(a.weight * scale[:, None])
                    bias = a.bias if a.bias is not None else torch.zeros_like(b.running_mean)
                    lin.bias.copy_((bias - b.running_mean) * scale + b.bias)
                layers.append(lin.to(a.weight.device))
                i += 2
            else:
                layers.append(a)
                i += 1
        return nn.Sequential(*layers).eval()

    for mod in m.modules():
        if hasattr(mod, "net") and isinstance(mod.net, nn.Sequential):
            mod.net = fold(mod.net)
    m.head = fold(m.head)
    return m


def default_model_path() -> str:
    """Path of the shipped default model (``cosarad_ros/models/cosarad_default.safetensors``)."""
    return os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
                        "models", "cosarad_default.safetensors")
