"""A descriptor network written as ONNX: backbone → pooling → L2 → whitening → L2, any height and width.

:func:`export_onnx` writes one file (opset 17, the TorchScript exporter, constant folding) whose
graph takes ``image`` ``(N, 3, H, W)`` float32 (normalised with the network's mean and std; N, H
and W dynamic) and gives two outputs:

* ``pooled`` ``(N, C)`` float32: the vector of one scale before the whitening slot (what
  multi-scale extraction combines; for a cirtorch network, after its whiten layer);
* ``descriptor`` ``(N, D)`` float32, unit rows: the single-scale descriptor.

Multi-scale extraction runs the graph once per scale and combines ``pooled`` around it, as torch
does (:mod:`retrieval.search.onnx_extract`); the whitening slot's mean and projection are kept as
the initializers :data:`HEAD_M` and :data:`HEAD_PT` (``(C,)`` and ``(C, D)`` float32) so that
combined vectors can be whitened outside the graph. What the runtime needs besides the graph is in
the model's metadata (keys ``gemseg.*``: the model config, fingerprint, mean/std, image size,
scales and the multi-scale rule).

EfficientNet's TensorFlow-style "same" convolutions compute their padding from the input size in
Python, which a trace would freeze at the sample's size; they are exported as ONNX ``Conv`` with
``auto_pad=SAME_UPPER``, which is the same padding for every size.

Byte stability: exporting the same network twice gives the same bytes (tested); the sample input
is zeros of a fixed size and initializer names follow the module's, so nothing varies by run.
"""
from __future__ import annotations

import hashlib
import json
import time
import warnings
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Iterator, List, Tuple, Union

import torch
import torch.nn as nn
import torch.nn.functional as F

from retrieval.core.config import to_dict
from retrieval.core.errors import ConfigError, ResourceError
from retrieval.model.network import DescriptorNet
from retrieval.model.pooling import GeM

PathLike = Union[str, Path]

ONNX_FORMAT = "gemseg-onnx"
ONNX_VERSION = 1
OPSET = 17
INPUT = "image"
OUTPUTS = ("pooled", "descriptor")
HEAD_M = "gemseg_head_m"
HEAD_PT = "gemseg_head_Pt"
#: Side of the zeros image the graph is traced with (any size works afterwards).
SAMPLE_SIZE = 64


@dataclass
class ExportReport:
    """What :func:`export_onnx` wrote: ``path``, its size and SHA-256, the model's fingerprint,
    the graph's input and output names, and the seconds it took."""

    path: str
    bytes: int
    sha256: str
    fingerprint: str
    dim: int
    input: str = INPUT
    outputs: List[str] = field(default_factory=lambda: list(OUTPUTS))
    seconds: float = 0.0

    def as_dict(self) -> Dict[str, object]:
        return dict(self.__dict__)


def scale_rule(net: nn.Module) -> Tuple[str, float, bool]:
    """How per-scale vectors of ``net`` are made and combined: ``(resize, msp, signed)`` with
    ``resize`` ``"antialias"`` (gemseg: bilinear, antialiased, to ``round(s·H)``) or ``"plain"``
    (cirtorch: bilinear by ``scale_factor``), ``msp`` the exponent of the generalised mean over
    scales and ``signed`` whether that power keeps signs (dirtorch) instead of clamping at 0.
    A network that has its own rule says so by a ``scale_rule`` attribute."""
    own = getattr(net, "scale_rule", None)
    if own is not None:
        return str(own[0]), float(own[1]), bool(own[2])
    pool = getattr(net, "pool", None)
    return "antialias", float(pool.p.detach()) if isinstance(pool, GeM) else 1.0, False


class _Graph(nn.Module):
    """What is exported: ``x (N, 3, H, W)`` → ``(pooled (N, C), descriptor (N, D))``, the whitening
    slot as plain buffers (so their initializer names are known)."""

    def __init__(self, net: DescriptorNet) -> None:
        super().__init__()
        self.net = net
        if net.has_whitening:
            P = net.whiten_P[: net.dim].detach().float()
            self.register_buffer(HEAD_M, net.whiten_m.detach().float().clone())
            self.register_buffer(HEAD_PT, P.t().contiguous().clone())
        self.whitened = net.has_whitening

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        pooled = self.net.pooled(x)
        f = pooled
        if self.whitened:
            f = (f - getattr(self, HEAD_M)) @ getattr(self, HEAD_PT)
        return pooled, F.normalize(f, dim=-1)


def _same_pad(x: torch.Tensor, k: Tuple[int, int], stride: Tuple[int, int], dilation: Tuple[int, int]) -> torch.Tensor:
    """TensorFlow "same" padding of ``x`` for a convolution (extra row/column at the end)."""
    pads = []
    for size, kk, ss, dd in zip(x.shape[-2:], k, stride, dilation):
        total = max((-(-int(size) // ss) - 1) * ss + (kk - 1) * dd + 1 - int(size), 0)
        pads.append((total // 2, total - total // 2))
    (top, bottom), (left, right) = pads
    return F.pad(x, [left, right, top, bottom]) if top or bottom or left or right else x


def _same_conv_function(kernel: Tuple[int, int], stride: Tuple[int, int], dilation: Tuple[int, int],
                        groups: int, bias: bool) -> type:
    """A TensorFlow "same" convolution as an autograd Function of tensors only (the TorchScript
    exporter accepts no Python scalars there): torch computes it with the padding of each size;
    its ONNX symbol is one ``Conv`` with ``auto_pad=SAME_UPPER`` (the runtime pads each size alike)."""
    attrs = dict(auto_pad_s="SAME_UPPER", kernel_shape_i=list(kernel), strides_i=list(stride),
                 dilations_i=list(dilation), group_i=int(groups))

    def run(x, weight, b=None):
        return F.conv2d(_same_pad(x, kernel, stride, dilation), weight, b, stride, 0, dilation, groups)

    if bias:
        class SameConv(torch.autograd.Function):
            @staticmethod
            def forward(ctx, x, weight, b):  # type: ignore[override]
                return run(x, weight, b)

            @staticmethod
            def symbolic(g, x, weight, b):  # type: ignore[override]
                return g.op("Conv", x, weight, b, **attrs)
    else:
        class SameConv(torch.autograd.Function):  # type: ignore[no-redef]
            @staticmethod
            def forward(ctx, x, weight):  # type: ignore[override]
                return run(x, weight)

            @staticmethod
            def symbolic(g, x, weight):  # type: ignore[override]
                return g.op("Conv", x, weight, **attrs)
    return SameConv


def _same_padding_convs(net: nn.Module) -> List[nn.Module]:
    try:
        from efficientnet_lite_pytorch.utils import Conv2dDynamicSamePadding
    except ImportError:
        return []
    return [m for m in net.modules() if isinstance(m, Conv2dDynamicSamePadding)]


@contextmanager
def _exportable(net: nn.Module) -> Iterator[None]:
    """Within: the network's dynamic "same" convolutions go through :func:`_same_conv_function`."""
    convs = _same_padding_convs(net)
    for m in convs:
        fn = _same_conv_function(tuple(m.weight.shape[-2:]), tuple(m.stride), tuple(m.dilation), m.groups,
                                 m.bias is not None)
        m._gemseg_forward = m.forward
        m.forward = ((lambda x, m=m, fn=fn: fn.apply(x, m.weight, m.bias)) if m.bias is not None
                     else (lambda x, m=m, fn=fn: fn.apply(x, m.weight)))
    try:
        yield
    finally:
        for m in convs:
            m.forward = m._gemseg_forward
            del m._gemseg_forward


def onnx_metadata(net: DescriptorNet) -> Dict[str, str]:
    """The ``gemseg.*`` metadata written with the graph (all values strings)."""
    resize, msp, signed = scale_rule(net)
    return {
        "gemseg.format": ONNX_FORMAT,
        "gemseg.version": str(ONNX_VERSION),
        "gemseg.fingerprint": net.fingerprint(),
        "gemseg.config": json.dumps(to_dict(net.config), sort_keys=True),
        "gemseg.mean": json.dumps(list(net.backbone.mean)),
        "gemseg.std": json.dumps(list(net.backbone.std)),
        "gemseg.image_size": str(int(net.config.image_size)),
        "gemseg.scales": json.dumps([float(s) for s in net.config.scales]),
        "gemseg.resize": resize,
        "gemseg.msp": repr(msp),
        "gemseg.msp_signed": "1" if signed else "0",
        "gemseg.dim": str(int(net.dim)),
        "gemseg.whitened": "1" if net.has_whitening else "0",
        "gemseg.head_scales": head_scales(net),
    }


def head_scales(net: DescriptorNet) -> str:
    """Which scale counts the exported whitening is for: ``"any"``, or ``"ms"`` / ``"ss"`` for a
    cirtorch network whose precomputed Lw differs between several scales and one."""
    lw_for = getattr(net, "lw_for", None)
    if lw_for is None or not net.has_whitening:
        return "any"
    return "ms" if len(net.config.scales) > 1 else "ss"


def export_onnx(net: DescriptorNet, path: PathLike, *, opset: int = OPSET) -> ExportReport:
    """Write ``net`` (eval mode, on the CPU, float32) to ``path`` as ONNX; see the module docstring.

    The file is written to a temporary name next to ``path`` and renamed.

    Raises:
        ConfigError: a network with concept-masked pooling (its masks come from a factorisation,
            not a fixed graph).
        ResourceError: the ``onnx`` package is missing (``pip install 'gemseg[onnx]'``).
    """
    try:
        import onnx
    except ImportError:
        raise ResourceError("ONNX export needs the package 'onnx' (pip install 'gemseg[onnx]')") from None
    if net.concepts is not None:
        raise ConfigError("a network with concept-masked pooling cannot be exported to ONNX; export it without --concepts")
    t0 = time.perf_counter()
    if hasattr(net, "use_lw_for"):  # a cirtorch network: the Lw of its configured scales
        net.use_lw_for(len(net.config.scales))
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    was_training = net.training
    device = next(net.parameters()).device
    net.cpu().eval()
    graph = _Graph(net).eval()
    sample = torch.zeros(1, 3, SAMPLE_SIZE, SAMPLE_SIZE)
    tmp = out.with_name(out.name + ".tmp")
    try:
        with _exportable(net), warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation and trace notes
            torch.onnx.export(
                graph, (sample,), str(tmp), dynamo=False, opset_version=opset, do_constant_folding=True,
                input_names=[INPUT], output_names=list(OUTPUTS),
                dynamic_axes={INPUT: {0: "batch", 2: "height", 3: "width"},
                              OUTPUTS[0]: {0: "batch"}, OUTPUTS[1]: {0: "batch"}})
        model = onnx.load(str(tmp))
        if net.has_whitening:
            names = {i.name for i in model.graph.initializer}
            if not {HEAD_M, HEAD_PT} <= names:  # the exporter renamed them: fail loudly, not silently wrong
                raise AssertionError(f"the ONNX graph lost the whitening initializers {HEAD_M}, {HEAD_PT}")
        del model.metadata_props[:]
        for k, v in onnx_metadata(net).items():
            model.metadata_props.add(key=k, value=v)
        model.producer_name = "gemseg"
        onnx.save(model, str(tmp))
        tmp.replace(out)
    finally:
        if tmp.exists():
            tmp.unlink()
        net.to(device).train(was_training)
    data = out.read_bytes()
    return ExportReport(str(out), len(data), hashlib.sha256(data).hexdigest(), net.fingerprint(), net.dim,
                        seconds=time.perf_counter() - t0)
