"""Stateless and batch-statistics layers: Linear, Conv2d, pooling, BatchNorm, Dropout, Flatten, ReLU, Scale,
Threshold.

    linear.py        Linear
    conv.py          Conv2d: its three paths (im2col + GEMM NCHW or channels-last, event-driven), the choice;
                     Conv1d as a Conv2d of height 1
    conv_patches.py  im2col and col2im, NCHW and channels-last; the geometry of the taps
    conv_events.py   the event-driven forward and weight gradient for sparse (spike) inputs
    pool.py          AvgPool2d, SumPool2d, AdaptiveAvgPool2d, MaxPool2d
    norm.py          BatchNorm1d, BatchNorm2d
    elementwise.py   Dropout, Flatten, ReLU, ClippedReLU, Scale, Threshold (NIR's)
    common.py        input checks, what is saved for the backward, kernel launch

Every layer takes time-major input ``[T, N, ...]``. Layers without memory across time fold T into
the batch (``[T*N, ...]``), so one call processes all steps. The maths follows PyTorch's modules
(same parameter names, shapes, default initialization, output sizes and tie rules), which the
tests check against torch autograd; each fast Numba kernel has a plain NumPy reference beside it,
which tests/test_layer_reference.py checks it against (docs/verification.md, "Fast kernels
against their references"; the paths and their speed: docs/performance.md, "Matrix products and
convolutions").

``forward`` saves what ``backward`` needs; ``backward`` consumes it (a second ``backward`` for one
``forward`` raises, as PyTorch does without ``retain_graph``), returns the input gradient and adds
the parameter gradients into ``self.grads``. Computation runs in the dtype of the input, which
must be the dtype of the layer's parameters and buffers (refsnn.module's rule: ``.to(...)``
converts a model). Sums over the batch (bias gradients, BatchNorm statistics) accumulate in
float64 or pairwise along a contiguous axis (NumPy's sum; along any other axis it adds one row
at a time), so float32 results keep float32 accuracy at any batch × time × spatial size. Layers keep
references to their inputs rather than copies (Linear, BatchNorm): do not modify an input in
place between forward and backward.
"""
from .conv import Conv1d, Conv2d
from .elementwise import ClippedReLU, Dropout, Flatten, ReLU, Scale, Threshold
from .linear import Linear
from .norm import BatchNorm1d, BatchNorm2d
from .pool import AdaptiveAvgPool2d, AvgPool2d, MaxPool2d, SumPool2d

__all__ = ["AdaptiveAvgPool2d", "AvgPool2d", "BatchNorm1d", "BatchNorm2d", "ClippedReLU", "Conv1d", "Conv2d", "Dropout",
           "Flatten", "Linear", "MaxPool2d", "ReLU", "Scale", "SumPool2d", "Threshold"]
