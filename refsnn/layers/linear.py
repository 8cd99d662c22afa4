"""Linear: y = x Wᵀ + b on the last axis, forward and backward.

    x [T, N, ..., in] viewed as X [rows, in],  W [out, in],  b [out]
    forward    Y = X Wᵀ + b                                    [rows, out]
    backward   dL/dW = Gᵀ X,  dL/db = Σ_rows G,  dL/dX = G W   (G = dL/dY [rows, out])

The products run on refsnn.threads.matmul (BLAS blocks whose bits do not depend on the thread count).
"""
import math

import numpy as np

from ..module import Module, check_flag, check_int, float_dtype
from ..threads import matmul
from .common import check_channels, check_input, save_for_backward, saved_for_backward, uniform


class Linear(Module):
    """``y = x Wᵀ + b`` on the last axis of ``[T, N, ..., in_features]``; weight ``[out, in]``.

    Initialization as ``torch.nn.Linear``: W, b ~ U(-1/√in, 1/√in). The layer keeps a reference
    to its input (not a copy) for the weight gradient.
    """

    def __init__(self, in_features, out_features, bias=True, rng=None, dtype=np.float32):
        super().__init__()
        in_features, out_features = check_int(in_features, "in_features", 1), check_int(out_features, "out_features", 1)
        dtype = float_dtype(dtype)
        rng = np.random.default_rng(0) if rng is None else rng
        self.in_features, self.out_features = in_features, out_features
        bound = 1.0 / math.sqrt(in_features)
        self.add_param("weight", uniform(rng, bound, (out_features, in_features), dtype))
        if check_flag(bias, "bias"):
            self.add_param("bias", uniform(rng, bound, (out_features,), dtype))
        self._saved = None

    def forward(self, x):
        x = check_input(self, x, None, min_ndim=3)
        check_channels(self, x, -1, self.in_features, "features")
        weight = self.params["weight"]
        x2 = x.reshape(-1, self.in_features)                 # X [rows, in]
        y = matmul(x2, weight.T)                             # Y = X Wᵀ [rows, out]
        if "bias" in self.params:
            y += self.params["bias"]
        out_shape = x.shape[:-1] + (self.out_features,)
        save_for_backward(self, out_shape, x.dtype, x2, weight, x.shape)
        return y.reshape(out_shape)

    def backward(self, grad_out):
        (x2, weight, in_shape), g = saved_for_backward(self, grad_out)
        g2 = g.reshape(-1, self.out_features)                # G [rows, out]
        self.grads["weight"] += matmul(g2.T, x2)             # dL/dW = Gᵀ X
        if "bias" in self.params:
            self.grads["bias"] += g2.sum(axis=0, dtype=np.float64)    # dL/db = Σ_rows G
        return matmul(g2, weight).reshape(in_shape)          # dL/dX = G W

    def extra_repr(self):
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={'bias' in self.params}"
