"""The Triton kernels: the sampler on CUDA, the forward value checks' reductions and the fused per-sample
masked linear layer with its gradients. Importing this package imports Triton; the rest of the package reaches
it through ``_backend.triton_kernels(device)``, which returns None where the kernels cannot run.

Modules, each importing only those above it in this list:

- ``launch``: ``launch``, Triton launches without the JIT's per-call binding, and ``cdiv``;
- ``tiles``: tile sizes, dot precision and the batch split (the wrappers' defaults);
- ``hashing``: ``noise``'s counter-based hash as Triton device functions;
- ``masks``: how kernels read packed mask bits and codebook tables;
- ``sampling``: the samplers (``uniform``, ``sample_index``, ``sample_bits``, ``sample_bits_layers``);
- ``step_values``: the value checks' reductions;
- ``masked_linear``: the masked matmul (forward and input gradient);
- ``weight_grad``: the weight and logit gradients.
"""

from .masked_linear import ACTIVATION_DTYPES, masked_linear, masked_linear_input_grad
from .sampling import LAYER_LOGITS_DTYPES, sample_bits, sample_bits_layers, sample_index, uniform
from .step_values import STEP_VALUES_LOGITS_DTYPES, step_values
from .tiles import (
    DOT_PRECISION,
    INPUT_GRAD_WEIGHT_COPY,
    LARGE_OUTPUT,
    MATMUL_TILES_BY_SHAPE,
    TIME_MAJOR_MIN_PRODUCTS,
    MatmulShape,
    target_programs,
)
from .weight_grad import ESTIMATOR_CODES, NOISE_ESTIMATORS, masked_param_grads, masked_weight_grad

__all__ = [
    "ACTIVATION_DTYPES",
    "DOT_PRECISION",
    "ESTIMATOR_CODES",
    "INPUT_GRAD_WEIGHT_COPY",
    "LARGE_OUTPUT",
    "LAYER_LOGITS_DTYPES",
    "MATMUL_TILES_BY_SHAPE",
    "NOISE_ESTIMATORS",
    "STEP_VALUES_LOGITS_DTYPES",
    "TIME_MAJOR_MIN_PRODUCTS",
    "MatmulShape",
    "masked_linear",
    "masked_linear_input_grad",
    "masked_param_grads",
    "masked_weight_grad",
    "sample_bits",
    "sample_bits_layers",
    "sample_index",
    "step_values",
    "target_programs",
    "uniform",
]
