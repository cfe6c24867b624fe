"""The op set, as functions. Tensor methods and operators call these.

Every function validates its arguments (shapes, broadcasting, axes, dtypes, devices) and
raises a typed error from :mod:`ipfs_accelerate.errors` naming the op, the shapes and the
dtypes; then it dispatches to the tensors' backend. Semantics follow numpy (and the Python
array API) for names, broadcasting, promotion, ``keepdims`` and negative axes, and PyTorch for
neural-network ops numpy lacks.
"""

from __future__ import annotations

from ipfs_accelerate.ops import _autograd as _autograd  # registers the backward rules
from ipfs_accelerate.ops._elementwise import (
    abs,
    add,
    ceil,
    clamp,
    cos,
    div,
    equal,
    erf,
    exp,
    floor,
    floor_divide,
    gelu,
    greater,
    greater_equal,
    isfinite,
    isinf,
    isnan,
    less,
    less_equal,
    log,
    logical_and,
    logical_not,
    logical_or,
    logical_xor,
    maximum,
    minimum,
    mul,
    neg,
    not_equal,
    pow,
    reciprocal,
    relu,
    remainder,
    round,
    rsqrt,
    sigmoid,
    sign,
    silu,
    sin,
    sqrt,
    square,
    sub,
    tanh,
    where,
)
from ipfs_accelerate.ops._losses import (
    cross_entropy,
    mse_loss,
    multiple_negatives_ranking_loss,
)
from ipfs_accelerate.ops._nn import (
    conv1d,
    conv2d,
    dropout,
    layer_norm,
    linear,
    log_softmax,
    matmul,
    scaled_dot_product_attention,
    softmax,
)
from ipfs_accelerate.ops._quantize import dequantize_linear, quantize_linear
from ipfs_accelerate.ops._reduce import (
    all,
    any,
    argmax,
    argmin,
    max,
    mean,
    min,
    prod,
    std,
    sum,
    var,
)
from ipfs_accelerate.ops._shape import (
    astype,
    broadcast_to,
    clone,
    concat,
    contiguous,
    copy_,
    embedding,
    expand,
    flatten,
    gather,
    getitem,
    index_add,
    matrix_transpose,
    pad,
    permute,
    reshape,
    setitem,
    slice,
    split,
    squeeze,
    stack,
    swapaxes,
    to_device,
    transpose,
    unsqueeze,
)

# array-API / numpy aliases
subtract = sub
multiply = mul
divide = div
true_divide = div
negative = neg
power = pow
clip = clamp
concatenate = concat
take = gather
expand_dims = unsqueeze

__all__ = [
    "abs", "add", "all", "any", "argmax", "argmin", "astype", "broadcast_to", "ceil", "clamp",
    "clip", "clone", "concat", "concatenate", "contiguous", "conv1d", "conv2d", "copy_", "cos",
    "cross_entropy", "dequantize_linear", "div", "divide", "dropout", "embedding", "equal",
    "erf", "exp", "expand", "expand_dims", "flatten", "floor", "floor_divide", "gather", "gelu",
    "getitem", "greater", "greater_equal", "index_add", "isfinite", "isinf", "isnan",
    "layer_norm", "less", "less_equal",
    "linear", "log", "log_softmax", "logical_and", "logical_not", "logical_or", "logical_xor",
    "matmul", "matrix_transpose", "max", "maximum", "mean", "min", "minimum", "mse_loss", "mul",
    "multiple_negatives_ranking_loss", "multiply", "neg", "negative", "not_equal", "pad",
    "permute", "pow", "power",
    "prod", "quantize_linear", "reciprocal", "relu", "remainder", "reshape", "round", "rsqrt",
    "scaled_dot_product_attention", "setitem", "sigmoid", "sign", "silu", "sin", "slice",
    "softmax", "split", "sqrt", "square", "squeeze", "stack", "std", "sub", "subtract", "sum",
    "swapaxes", "take", "tanh", "to_device", "transpose", "true_divide", "unsqueeze", "var",
    "where",
]  # fmt: skip
