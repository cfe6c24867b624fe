"""SmoothQuant-style migration for int8 activations (Xiao et al., 2023).

One scale per tensor for a Linear's input is what ONNX Runtime's fastest integer kernel
(``DynamicQuantizeMatMul``) takes, but a layer-norm output with a few outlier channels does
not fit one scale. Dividing input channel j by ``s[j]`` and multiplying the weight's column j
by it leaves the product unchanged and moves the outliers into the weight, which has one scale
per output channel and absorbs them:

    s[j] = max|x[:, j]| ** alpha / max|w[:, j]| ** (1 - alpha)

``max|x[:, j]|`` is calibrated: the model embeds a fixed text set shipped here
(:data:`CALIBRATION_SENTENCES`, written for this purpose, not the test sentences) and each
Linear's input range is recorded on the device as part of the same graphs. Layers reading the
same input (attention q/k/v) share one ``s``, so the division is one multiplication for the
three. The division stays a run-time multiplication (``Linear.input_scale``) rather than being
folded into the layer norm before it: in post-norm encoders (BERT, MPNet, RoBERTa) that layer
norm's output is also the residual stream, which must not be scaled.

Measured on all-MiniLM-L6-v2 (webnn, per-sentence cosine against float32; docs/models.md,
"Precision"): every block Linear per tensor without migration gives min 0.9848 / mean 0.99262
over the 256 test sentences (fails the gate); attention and FFN input per tensor after
migration, FFN output per row (:data:`SMOOTHED_INT8`) min 0.9976 / mean 0.99891 with alpha
0.7 (0.5: 0.9975 / 0.99865; 0.4: 0.99836 mean; 0.9: 0.9960 / 0.99856), and on the
benchmark's 256 sentences (another text set) min 0.9983 / mean 0.99896 (0.5: 0.99878). The
FFN output's input (GELU outputs) still needs one scale per row: migrated to one per tensor
it fell to min 0.974.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

import numpy as np

from ipfs_accelerate.errors import InvalidArgumentError, ModelError
from ipfs_accelerate.models._module import Linear, Module
from ipfs_accelerate.models._precision import _MODE_KERNELS, _check_mode, layer_kind
from ipfs_accelerate.quantization import QuantizedTensor, quantize
from ipfs_accelerate.tensor import Tensor

if TYPE_CHECKING:
    from ipfs_accelerate.models.saving import Smoothing

__all__ = [
    "CALIBRATION_SENTENCES",
    "SMOOTHED_INT8",
    "SMOOTH_ALPHA",
    "record_input_ranges",
    "smooth_int8_inputs",
    "smoothing_pays",
]

#: layer kind -> activation mode after migration: one scale per tensor where migration makes
#: it accurate enough, one per row for the FFN output (GELU outputs)
SMOOTHED_INT8: Mapping[str, str] = MappingProxyType(
    {"attention_in": "int8", "attention_out": "int8", "ffn_in": "int8", "ffn_out": "int8_row"}
)
#: SmoothQuant's migration strength (0: nothing moves to the weight, 1: all of the range);
#: 0.7 was the most accurate of 0.4-0.9 on MiniLM, on two text sets
SMOOTH_ALPHA = 0.7
#: the smallest factor and the range floor: a channel that never fired keeps s = 1
_FLOOR = 1e-5

#: varied English text (lengths, registers, numbers, names, punctuation) to calibrate the
#: input ranges; independent of the test and benchmark sentences
CALIBRATION_SENTENCES: tuple[str, ...] = (
    "The train to Lyon leaves at 7:45 from platform nine.",
    "How do I reset my password if I no longer have access to the email account?",
    "Photosynthesis turns light, water and carbon dioxide into sugar and oxygen.",
    "She finished the marathon in three hours and twelve minutes despite the heat.",
    "Our quarterly revenue grew 14% while operating costs stayed flat.",
    "Add two cups of flour, a pinch of salt and stir until smooth.",
    "Is it safe to take ibuprofen together with paracetamol?",
    "The committee postponed the vote until the auditors file their report.",
    "Neural networks learn representations by adjusting weights with gradient descent.",
    "A quiet street, a closed bakery, and one cat asleep on a warm car roof.",
    "Error 404: the page you requested could not be found on this server.",
    "Which museums in Amsterdam are open on Monday mornings?",
    "The treaty was signed in 1648 and ended thirty years of war in Europe.",
    "Please return the signed contract by Friday, or the offer will lapse.",
    "Volcanic ash grounded hundreds of flights across northern Europe.",
    "He plays the cello in a string quartet that rehearses every Thursday.",
    "The function returns None when the key is missing from the dictionary.",
    "Rain is expected this afternoon, with gusts up to 60 km/h near the coast.",
    "What is the difference between a virus and a bacterium?",
    "The startup raised $12 million to build batteries from sodium instead of lithium.",
    "I left my umbrella on the bus again.",
    "Glaciers in the Alps have lost more than half their volume since 1900.",
    "To install the package, run pip install and restart the interpreter.",
    "The defendant pleaded not guilty to all four charges on Tuesday.",
    "Tomatoes, peppers and eggplants belong to the nightshade family.",
    "Can you recommend a laptop for video editing under 1500 euros?",
    "The orchestra opened with Dvorak's New World Symphony.",
    "Inflation eased to 2.1 percent in March, the lowest reading in three years.",
    "Children learn languages faster when they hear them spoken at home.",
    "The bridge will be closed overnight for maintenance until the end of May.",
    "Why does my sourdough starter smell like acetone?",
    "Mars has two small moons, Phobos and Deimos, both probably captured asteroids.",
    "The hotel offers free breakfast, a rooftop pool and late checkout on request.",
    "A stack overflow usually means the recursion never reaches its base case.",
    "Vaccination rates among teenagers rose after the school campaign.",
    "The goalkeeper saved two penalties and his team won the shootout.",
    "Symptoms include fever, a dry cough and loss of taste or smell.",
    "Shipping to Canada takes five to seven business days.",
    "The novel follows three generations of a fishing family in Norway.",
    "Solar panels produce less power on cloudy days but still generate some.",
    "ok",
    "Thanks, that fixed it!",
    "Where is the nearest pharmacy that is open late tonight?",
    "The algorithm sorts n items in O(n log n) time on average.",
    "Municipal elections will be held on the second Sunday of October.",
    "Coral reefs cover less than one percent of the ocean floor yet host a quarter of"
    " marine species.",
    "The recipe calls for buttermilk, but yogurt thinned with milk works too.",
    "After the merger, the two banks will close forty branches and cut 900 jobs.",
    "Translate this sentence into Spanish, French and German, please.",
    "The spacecraft entered orbit around Jupiter after a five-year journey.",
    "My knee hurts when I walk downstairs but not when I cycle.",
    "Museums across the city offer free entry on the first Sunday of each month.",
    "The patch fixes a race condition that corrupted the cache under heavy load.",
    "Honeybees communicate the direction of flowers with a waggle dance.",
    "The tenant is responsible for minor repairs; the landlord handles the roof.",
    "In the final scene the detective realises the letter was never sent.",
    "Global shipping rates doubled when the canal was blocked for six days.",
    "Do electric cars need less maintenance than petrol ones?",
    "The choir sang in Latin, Greek and Old Church Slavonic.",
    "Store the vaccine between two and eight degrees Celsius.",
    "The league suspended the striker for three matches after the red card.",
    "An index on the user_id column cut the query time from seconds to milliseconds.",
    "The village holds a cheese festival every August with music and fireworks.",
    "Fewer people are reading printed newspapers, but podcasts keep growing.",
)


def record_input_ranges(
    model: Module, run: Callable[[], object]
) -> tuple[dict[str, np.ndarray[Any, Any]], list[list[str]]]:
    """Per Linear path, the largest ``|input|`` of each input feature over everything ``run``
    feeds ``model``; and the groups of Linear paths that read the same input tensor (in order
    of first call). The reductions are taken on the model's device, lazily: on webnn they are
    extra outputs of the forward's own graphs."""
    from ipfs_accelerate import ops

    linears = {id(module): path for path, module in model.named_modules()
               if isinstance(module, Linear)}  # fmt: skip
    pending: list[tuple[str, Tensor]] = []
    readers: dict[int, list[str]] = {}
    held: list[Tensor] = []  # keeps each input alive, so that its id is not reused

    def observe(module: Linear, x: Tensor) -> None:
        path = linears[id(module)]
        flat = x.reshape(-1, x.shape[-1])
        pending.append((path, ops.max(ops.abs(flat), axis=0)))
        group = readers.setdefault(id(x), [])
        if path not in group:
            group.append(path)
        held.append(x)

    modules = [m for m in model.named_modules() if isinstance(m[1], Linear)]
    for _, module in modules:
        module.input_observer = observe
    try:
        run()
    finally:
        for _, module in modules:
            module.input_observer = None
    ranges: dict[str, np.ndarray[Any, Any]] = {}
    for path, reduced in pending:
        value = np.asarray(reduced.numpy(), dtype=np.float32)
        previous = ranges.get(path)
        ranges[path] = value if previous is None else np.maximum(previous, value)
    groups: list[list[str]] = []
    seen: set[str] = set()
    for group in readers.values():
        fresh = [path for path in group if path not in seen]
        if fresh:
            groups.append(fresh)
            seen.update(fresh)
    return ranges, groups


def smooth_int8_inputs(
    model: Module,
    ranges: Mapping[str, np.ndarray[Any, Any]],
    groups: list[list[str]],
    *,
    alpha: float = SMOOTH_ALPHA,
    modes: Mapping[str, str] = SMOOTHED_INT8,
) -> list[str]:
    """Migrate the input ranges of the 8-bit Linear layers whose kind ``modes`` gives one
    scale per tensor (``"int8"``) into their weights, and set every listed kind's
    ``activations`` to its mode; returns the migrated layers' paths.

    ``ranges`` and ``groups`` are :func:`record_input_ranges`'. The layers of one group share
    one ``s`` (from the largest weight column over the group) and one ``input_scale`` tensor.
    Each weight is requantized from its dequantized values times ``s``, one scale per output
    channel as the loader quantizes. A model already migrated raises ModelError: its
    recorded ranges would be those before the division, its weights those after."""
    from ipfs_accelerate import hal
    from ipfs_accelerate.tensor import from_numpy

    if not 0.0 <= alpha <= 1.0:
        raise InvalidArgumentError(f"smooth_int8_inputs: alpha must be in [0, 1], got {alpha!r}")
    for kind, mode in modes.items():
        _check_mode(mode, f"the mode of {kind!r}")
    layers = {path: module for path, module in model.named_modules()
              if isinstance(module, Linear)}  # fmt: skip
    for path, module in layers.items():
        if module.input_scale is not None:
            raise ModelError(
                f"smooth_int8_inputs: {type(model).__name__}.{path} is migrated already; "
                "load the model again to calibrate it anew"
            )
    migrated: list[str] = []
    for group in groups:
        chosen = [path for path in group if _migratable(path, layers[path], modes, ranges)]
        if not chosen:
            continue
        weights = {path: _float_weight(layers[path]) for path in chosen}
        column = np.max([np.abs(w).max(axis=0) for w in weights.values()], axis=0)
        extent = np.max([ranges[path] for path in chosen], axis=0)
        s = np.ones_like(extent)
        live = (extent > _FLOOR) & (column > _FLOOR)
        s[live] = extent[live] ** alpha / column[live] ** (1.0 - alpha)
        s = np.clip(s, _FLOOR, 1.0 / _FLOOR).astype(np.float32)
        device = layers[chosen[0]].weight.device
        inverse = from_numpy((1.0 / s).astype(np.float32), device)
        hal.mark_parameter(inverse)
        for path in chosen:
            module = layers[path]
            module.weight = quantize(from_numpy(weights[path] * s, device), bits=8, axis=0)
            module.input_scale = inverse
            migrated.append(path)
    for path, linear in layers.items():
        chosen_mode = modes.get(layer_kind(path))
        weight = linear.weight
        if chosen_mode is not None and isinstance(weight, QuantizedTensor) and weight.bits == 8:
            linear.activations = chosen_mode
    return migrated


def smoothing_pays(model: Module, device: str) -> bool:
    """Whether a model just loaded in int8 should be migrated by default: the backend
    multiplies per-tensor int8 inputs in integers (``Backend.integer_kernel``
    ``"dynamic_quantized_linear"``: webnn, ONNX Runtime's ``DynamicQuantizeMatMul``), the
    model holds 8-bit per-channel Linear weights of a kind :data:`SMOOTHED_INT8` gives one
    scale per tensor, and no layer is migrated already (a saved migrated model reloads its
    scales). Elsewhere per-tensor inputs would be rounded in float: slower than per row, and
    less accurate than weight-only."""
    from ipfs_accelerate import hal

    if not hal.get_backend(device).integer_kernel(_MODE_KERNELS["int8"]):
        return False
    layers = [(path, m) for path, m in model.named_modules() if isinstance(m, Linear)]
    if any(module.input_scale is not None for _, module in layers):
        return False
    return any(_per_tensor_8bit(path, module, SMOOTHED_INT8) for path, module in layers)


def _per_tensor_8bit(path: str, module: Linear, modes: Mapping[str, str]) -> bool:
    """Whether ``modes`` gives the layer one input scale per tensor and it holds 8-bit
    per-channel weights: the layers the migration can move ranges into."""
    weight = module.weight
    return (
        modes.get(layer_kind(path)) == "int8"
        and isinstance(weight, QuantizedTensor)
        and weight.bits == 8
        and weight.block_size is None
    )


def _migratable(
    path: str, module: Linear, modes: Mapping[str, str], ranges: Mapping[str, Any]
) -> bool:
    return _per_tensor_8bit(path, module, modes) and path in ranges


def _float_weight(module: Linear) -> np.ndarray[Any, Any]:
    weight = module.weight
    assert isinstance(weight, QuantizedTensor)
    return np.asarray(weight.dequantize_numpy(), dtype=np.float32)


def restore_smoothing(model: Module, saved: Smoothing, source: str) -> None:
    """Set a loaded model's migrated ``input_scale`` s and int8 activation modes from a saved
    checkpoint's record (``saving.smoothing_from_checkpoint``): layers that shared one scale
    share one tensor again (the webnn lowering quantizes their common input once). Modes are
    set where the layer holds 8-bit weights (a migrated model loaded in float32 keeps float
    inputs, and its scales). A layer the model does not have, or a scale of the wrong size,
    raises CheckpointError."""
    from ipfs_accelerate import hal
    from ipfs_accelerate.errors import CheckpointError
    from ipfs_accelerate.tensor import from_numpy

    layers = {path: m for path, m in model.named_modules() if isinstance(m, Linear)}
    shared: dict[bytes, Tensor] = {}
    for path, values in saved.scales.items():
        layer = layers.get(path)
        if layer is None:
            raise CheckpointError(f"{source}: input scale for {path!r}, not a Linear layer")
        width = layer.weight.shape[1]
        if values.shape != (width,):
            raise CheckpointError(
                f"{source}: {path + '.input_scale'!r} has shape {values.shape}, the layer takes"
                f" {width} inputs"
            )
        tensor = shared.get(values.tobytes())
        if tensor is None:
            tensor = from_numpy(np.ascontiguousarray(values), layer.weight.device)
            hal.mark_parameter(tensor)
            shared[values.tobytes()] = tensor
        layer.input_scale = tensor
    for path, mode in saved.activations.items():
        layer = layers.get(path)
        if layer is None:
            raise CheckpointError(f"{source}: activation mode for {path!r}, not a Linear layer")
        if mode != "float" and mode not in _MODE_KERNELS:
            known = ["float", *_MODE_KERNELS]
            raise CheckpointError(
                f"{source}: the saved activation mode of {path!r} is {mode!r}, not one of {known}"
            )
        weight = layer.weight
        if isinstance(weight, QuantizedTensor) and weight.bits == 8:
            layer.activations = mode
