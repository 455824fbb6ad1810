"""Descriptors on onnxruntime: a model exported by :func:`retrieval.model.onnx_export.export_onnx`,
multi-scale around the graph as torch does it.

``OnnxDescriptorNet(path).describe(x)`` takes a normalised batch ``(B, 3, H, W)`` float32 (numpy or
torch) and returns ``(B, D)`` float32 unit rows, the same descriptors as
:func:`retrieval.search.extract.describe_batch` with the torch network (within 1e-4): each scale is
made from the batch by the network's resize rule (:func:`retrieval.search.extract.rescale`, or
cirtorch's plain bilinear resize), run through the graph for its ``pooled`` output, the scales are
combined by the generalised mean with the network's exponent, L2-normalised, whitened with the
whitening stored in the file, and L2-normalised again. ``extract(paths)`` describes image files
(decoded as :class:`retrieval.core.images.ImageDataset` does).

:class:`OnnxNetwork` stands where a :class:`~retrieval.model.network.DescriptorNet` does in
extraction, indexing and search (``--model model.onnx`` of the tools, through
:func:`retrieval.loading.load_model`); its fingerprint is the torch model's, so an index built on
either engine is searched by the other. Concept-masked pooling and co-segmentation re-ranking need
the torch model. The speed of the two engines: ``benchmarks/bench_onnx.py`` (docs/benchmarks.md).
"""
from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from tqdm import tqdm

from retrieval.core.config import from_dict, to_dict
from retrieval.core.errors import ConfigError, ResourceError, WeightsError, first_line
from retrieval.core.images import ImageDataset
from retrieval.model.network import ModelConfig
from retrieval.model.cirtorch import generalized_mean, plain_rescale
from retrieval.model.onnx_export import HEAD_M, HEAD_PT, INPUT, ONNX_FORMAT, OUTPUTS
from retrieval.search.extract import Extracted, rescale

PathLike = Union[str, Path]
ArrayLike = Union[np.ndarray, torch.Tensor]


def _session(path: Path, threads: Optional[int], providers: Optional[Sequence[str]]):
    try:
        import onnxruntime as ort
    except ImportError:
        raise ResourceError("the onnxruntime engine needs the package 'onnxruntime' (pip install 'gemseg[onnx]')") from None
    so = ort.SessionOptions()
    so.log_severity_level = 3
    if threads:
        so.intra_op_num_threads = int(threads)
        so.inter_op_num_threads = 1
    try:
        return ort.InferenceSession(str(path), so, providers=list(providers or ["CPUExecutionProvider"]))
    except Exception as e:  # noqa: BLE001 - onnxruntime raises its own exception types
        raise WeightsError(f"cannot load ONNX model {path}: {first_line(e, 160)}") from None


class OnnxDescriptorNet:
    """A gemseg ONNX descriptor model on onnxruntime.

    Attributes:
        path: the ``.onnx`` file. meta: its ``gemseg.*`` metadata.
        mean, std: the normalisation its input expects. image_size, scales: its defaults.
        dim: D. fingerprint: the torch model's fingerprint (descriptors are interchangeable with
            that model's).
    """

    def __init__(self, path: PathLike, *, threads: Optional[int] = None,
                 providers: Optional[Sequence[str]] = None) -> None:
        try:
            import onnx
            from onnx import numpy_helper
        except ImportError:
            raise ResourceError("the onnxruntime engine needs the package 'onnx' (pip install 'gemseg[onnx]')") from None
        self.path = Path(path)
        if not self.path.is_file():
            raise WeightsError(f"ONNX model not found: {self.path}")
        try:
            model = onnx.load(str(self.path))
        except Exception as e:  # noqa: BLE001 - protobuf decode errors
            raise WeightsError(f"cannot read ONNX model {self.path}: {first_line(e, 160)}") from None
        self.meta: Dict[str, str] = {p.key: p.value for p in model.metadata_props}
        if self.meta.get("gemseg.format") != ONNX_FORMAT:
            raise WeightsError(f"{self.path} is not a gemseg ONNX model (written by gemseg export --onnx)")
        self.mean: Tuple[float, ...] = tuple(json.loads(self.meta["gemseg.mean"]))
        self.std: Tuple[float, ...] = tuple(json.loads(self.meta["gemseg.std"]))
        self.image_size = int(self.meta["gemseg.image_size"])
        self.scales: List[float] = [float(s) for s in json.loads(self.meta["gemseg.scales"])]
        self.resize = self.meta["gemseg.resize"]
        self.msp = float(self.meta["gemseg.msp"])
        self.msp_signed = self.meta.get("gemseg.msp_signed") == "1"
        self.head_scales = self.meta.get("gemseg.head_scales", "any")
        self.dim = int(self.meta["gemseg.dim"])
        self.fingerprint = self.meta["gemseg.fingerprint"]
        self.config: Dict[str, Any] = json.loads(self.meta["gemseg.config"])
        self.head_m: Optional[torch.Tensor] = None
        self.head_Pt: Optional[torch.Tensor] = None
        if self.meta.get("gemseg.whitened") == "1":
            inits = {i.name: i for i in model.graph.initializer}
            self.head_m = torch.from_numpy(numpy_helper.to_array(inits[HEAD_M]).astype(np.float32))
            self.head_Pt = torch.from_numpy(numpy_helper.to_array(inits[HEAD_PT]).astype(np.float32))
        del model
        self.session = _session(self.path, threads, providers)

    # -- one batch -------------------------------------------------------------------------
    def pooled(self, x: ArrayLike) -> torch.Tensor:
        """One scale: ``x (B, 3, H, W)`` float32 → the graph's ``pooled`` output ``(B, C)`` float32."""
        arr = x.detach().cpu().numpy() if torch.is_tensor(x) else np.asarray(x)
        out = self.session.run([OUTPUTS[0]], {INPUT: np.ascontiguousarray(arr, dtype=np.float32)})[0]
        return torch.from_numpy(out)

    def head(self, v: torch.Tensor) -> torch.Tensor:
        """The whitening stored in the file, then L2: ``(B, C)`` → ``(B, D)`` float32."""
        if self.head_Pt is not None:
            v = (v - self.head_m) @ self.head_Pt
        return F.normalize(v, dim=-1)

    def _rescale(self, x: torch.Tensor, s: float) -> torch.Tensor:
        return plain_rescale(x, s) if self.resize == "plain" else rescale(x, s)

    def describe(self, x: ArrayLike, scales: Optional[Sequence[float]] = None) -> np.ndarray:
        """Descriptors of a batch of equal-size images.

        Args:
            x: ``(B, 3, H, W)`` float32, normalised with :attr:`mean` / :attr:`std`.
            scales: resize factors (default: the model's); scale 1 is ``x`` itself.
        Returns:
            ``(B, D)`` float32, unit L2 rows.
        """
        t = x if torch.is_tensor(x) else torch.from_numpy(np.asarray(x, dtype=np.float32))
        t = t.detach().float().cpu()
        scales = list(scales or self.scales)
        if self.head_scales != ("ms" if len(scales) > 1 else "ss") and self.head_scales != "any":
            raise ConfigError(f"{self.path} holds the {'multi' if self.head_scales == 'ms' else 'single'}-scale Lw "
                              f"of its cirtorch model; export it again with the scales you use")
        pooled = [self.pooled(self._rescale(t, s)) for s in scales]
        v = generalized_mean(pooled, self.msp if len(scales) > 1 else 1.0, self.msp_signed)
        return self.head(v).numpy().astype(np.float32, copy=False)

    # -- files -----------------------------------------------------------------------------
    def extract(self, paths: Sequence[PathLike], *, image_size: Optional[int] = None,
                scales: Optional[Sequence[float]] = None, progress: bool = False) -> Extracted:
        """Describe image files one at a time (decoding in this process); unreadable ones are
        skipped and reported. Returns :class:`retrieval.search.extract.Extracted`."""
        t0 = time.perf_counter()
        paths = [str(p) for p in paths]
        ds = ImageDataset(paths, image_size or self.image_size, mean=self.mean, std=self.std)
        rows: List[np.ndarray] = []
        ok: List[str] = []
        failures: List[Tuple[str, str]] = []
        for i in tqdm(range(len(ds)), desc="extract (onnxruntime)", unit="img", disable=not progress, leave=False):
            _, t, reason = ds[i]
            if t is None:
                failures.append((paths[i], reason or "unreadable"))
                continue
            rows.append(self.describe(t[None], scales)[0])
            ok.append(paths[i])
        X = np.stack(rows).astype(np.float32) if rows else np.zeros((0, self.dim), np.float32)
        return Extracted(np.ascontiguousarray(X), ok, failures, time.perf_counter() - t0)


class _BackboneInfo:
    """What tools read of a backbone: its name, normalisation and channel count."""

    def __init__(self, name: str, mean: Sequence[float], std: Sequence[float], out_channels: int) -> None:
        self.name, self.mean, self.std, self.out_channels = name, tuple(mean), tuple(std), int(out_channels)


class OnnxNetwork(nn.Module):
    """An exported model where a DescriptorNet goes (see the module docstring): ``config`` (the
    exported model's :class:`~retrieval.model.network.ModelConfig`, image size and scales
    changeable), ``dim``, ``fingerprint()``, ``backbone`` (name, mean, std only) and
    ``describe_scales(x, scales)``, which :func:`retrieval.search.extract.describe_batch` calls."""

    def __init__(self, path: PathLike, *, threads: Optional[int] = None,
                 providers: Optional[Sequence[str]] = None) -> None:
        super().__init__()
        self.onnx = OnnxDescriptorNet(path, threads=threads, providers=providers)
        cfg = dict(self.onnx.config)
        cfg.update(weights=str(path), concepts=None, object_factor=None)
        self.config: ModelConfig = from_dict(ModelConfig, cfg, where=f"{path}: gemseg.config")
        self._exported = json.dumps(to_dict(self.config), sort_keys=True)
        self.backbone = _BackboneInfo(self.config.backbone, self.onnx.mean, self.onnx.std, self.onnx.dim)
        self.concepts = None

    @property
    def dim(self) -> int:
        return self.onnx.dim

    @property
    def has_whitening(self) -> bool:
        return self.onnx.head_Pt is not None

    def fingerprint(self) -> str:
        """The torch model's fingerprint; changed image size or scales change it (as for torch)."""
        now = json.dumps(to_dict(self.config), sort_keys=True)
        if now == self._exported:
            return self.onnx.fingerprint
        return hashlib.sha1(f"{self.onnx.fingerprint}:{now}".encode()).hexdigest()[:16]

    def set_concepts(self, concepts: Any) -> None:
        if concepts is not None:
            raise ConfigError("concept-masked pooling needs the torch model, not an ONNX file")

    def describe_scales(self, x: torch.Tensor, scales: Sequence[float]) -> torch.Tensor:
        """x (B, 3, H, W) float32 → (B, D) float32 unit rows, on x's device."""
        return torch.from_numpy(self.onnx.describe(x.detach().cpu(), scales)).to(x.device)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.describe_scales(x, [1.0])

    def extra_repr(self) -> str:
        return f"onnx={self.onnx.path}, dim={self.dim}"
