"""Patch feature extractors behind one interface.

``extractor(patches (P, n, 3 + C) float32 in patch units, farthest-point ordered) -> (P, d) float32``;
``extractor.inputs`` says which per-point channels ``C`` it expects (``"xyz"``: none).

* :class:`CosaradExtractor` -- the trained COSARAD network (:mod:`.model`), inference only.
* :class:`~cosarad_ros.core.anomaly.baselines.FpfhExtractor` -- hand-crafted FPFH descriptors
  (the ablation of the paper), in :mod:`.baselines`.

:func:`make_extractor` picks one by name.
"""
from __future__ import annotations

import abc
import hashlib
import os

import numpy as np

__all__ = ["PatchFeatureExtractor", "CosaradExtractor", "make_extractor"]


class PatchFeatureExtractor(abc.ABC):
    """Maps patches to features."""

    name: str = ""
    dim: int = 0
    #: the patch inputs the extractor takes (a key of :data:`.model.INPUT_CHANNELS`)
    inputs: str = "xyz"
    #: how many leading points of each patch it needs in farthest-point order (0: order-free)
    fps_prefix: int = 64

    @abc.abstractmethod
    def __call__(self, patches: np.ndarray) -> np.ndarray:
        """``(P, n, 3 + C)`` -> ``(P, dim)`` float32."""

    @abc.abstractmethod
    def fingerprint(self) -> str:
        """A string that changes whenever the features would (used in cache keys)."""


class CosaradExtractor(PatchFeatureExtractor):
    """The COSARAD network as a feature extractor (inference mode, batch norm folded into the
    linear layers: :func:`~.model.fold_batchnorm`; a model instance is snapshotted when the
    extractor is built, as its fingerprint is).

    Args:
        model: path of a ``.safetensors`` model, ``None`` for the shipped default, or a
            :class:`~cosarad_ros.core.anomaly.model.CosaradNet` instance.
        device: ``"cpu"``, ``"cuda"``, ... (``"auto"``: CUDA when available).
        batch_size: patches per forward pass.
        num_threads: torch intra-op threads (``None``: leave torch's setting).
    """

    name = "cosarad"

    def __init__(self, model=None, *, device: str = "cpu", batch_size: int = 128, num_threads: int | None = None):
        import torch

        from .model import CosaradNet, ModelInfo, default_model_path, load_model

        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        self.device = torch.device(device)
        self.batch_size = int(batch_size)
        self.num_threads = num_threads
        if isinstance(model, CosaradNet):
            self.model = model.to(self.device).eval()
            self.info = ModelInfo()
            self.path = None
            h = hashlib.sha1()
            for k, v in sorted(model.state_dict().items()):
                h.update(k.encode())
                h.update(v.detach().cpu().numpy().tobytes())
            self._fp = "net-" + h.hexdigest()[:16]
        else:
            path = default_model_path() if model is None else os.fspath(model)
            self.model, self.info = load_model(path, device=self.device)
            self.path = os.path.abspath(path)
            with open(path, "rb") as f:
                self._fp = "file-" + hashlib.sha1(f.read()).hexdigest()[:16]
        self.dim = self.model.feature_dim
        self.inputs = self.model.inputs
        # the first set abstraction takes its centroids as this prefix (presorted); FPS is greedy,
        # so ordering more points would not change them
        self.fps_prefix = int(self.model.backbone.config.levels[0].npoint)
        from .model import fold_batchnorm

        self._net = fold_batchnorm(self.model)  # what __call__ runs (same outputs, faster)

    @property
    def classes_seen(self) -> tuple[str, ...]:
        return tuple(self.info.classes_seen)

    def fingerprint(self) -> str:
        return self._fp

    def __call__(self, patches: np.ndarray) -> np.ndarray:
        import torch

        p = np.asarray(patches, dtype=np.float32)
        c = 3 + self.model.in_channels
        if p.ndim != 3 or p.shape[2] != c:
            raise ValueError(f"patches must have shape (P, n, {c}) for a model with {self.inputs!r} inputs, "
                             f"got {p.shape}")
        out = np.zeros((len(p), self.dim), dtype=np.float32)
        if len(p) == 0:
            return out
        old = torch.get_num_threads()
        if self.num_threads:
            torch.set_num_threads(self.num_threads)
        try:
            with torch.inference_mode():
                for s in range(0, len(p), self.batch_size):
                    x = torch.from_numpy(p[s:s + self.batch_size]).to(self.device)
                    out[s:s + len(x)] = self._net(x, presorted=True).cpu().numpy()
        finally:
            if self.num_threads:
                torch.set_num_threads(old)
        return out


def make_extractor(name: str, *, model=None, device: str = "cpu", **kwargs) -> PatchFeatureExtractor:
    """Extractor by name: ``"cosarad"`` (learned) or ``"fpfh"`` (hand-crafted baseline)."""
    if name == "cosarad":
        return CosaradExtractor(model, device=device, **kwargs)
    if name == "fpfh":
        from .baselines import FpfhExtractor

        return FpfhExtractor(**kwargs)
    raise ValueError(f"unknown feature extractor {name!r}; choose 'cosarad' or 'fpfh'")
