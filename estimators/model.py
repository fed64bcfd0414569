"""The stochastic transformer: causal attention whose q, k, v, o projections carry per-sample masks.

Token embedding + learned positions; ``n_layer`` pre-LayerNorm blocks
(x + attn(ln(x)), then x + mlp(ln(x)) with a dense GELU MLP); a final
LayerNorm and a dense LM head. Output: logits [B, T, vocab].
"""

from __future__ import annotations

import contextlib

import torch
import torch.nn as nn
import torch.nn.functional as F

from . import _checks, implementations, ops, step_value_check
from .config import PRESETS, ModelConfig
from .gradients import ESTIMATORS, NEEDS_UNIFORM
from .implementations import MaskDraw

PROJECTIONS = ("q", "k", "v", "o")
LOGIT_INIT_BIAS = 1.5  # added to the logit of the largest code: most weights start "kept"


class StochasticLinear(nn.Module):
    """y_b = x_b (W * m_b)^T + bias, m_b = D_b . c, D_b = estimator(logits, U_b).

    ``param_id`` names this layer's noise stream (see ``noise.uniform``). The codebook c is the buffer
    ``codebook`` [K]; every implementation reads its current values when it runs (the Triton kernels from
    device memory), so ``load_state_dict``, ``.to()`` and in-place edits of it take effect at the next call.
    """

    def __init__(self, d_in: int, d_out: int, config: ModelConfig, param_id: int):
        super().__init__()
        self.param_id = param_id
        self.weight = nn.Parameter(torch.empty(d_out, d_in))
        self.bias = nn.Parameter(torch.empty(d_out))
        self.logits = nn.Parameter(torch.empty(d_out, d_in, config.num_categories))
        self.register_buffer("codebook", torch.tensor(config.codebook_values, dtype=torch.float32))

    def forward(self, x: torch.Tensor, draw: MaskDraw) -> torch.Tensor:
        return implementations.lookup(draw.implementation).apply(x, self, draw)


class CausalSelfAttention(nn.Module):
    def __init__(self, config: ModelConfig, layer: int):
        super().__init__()
        self.n_head = config.n_head
        d = config.d_model
        self.q, self.k, self.v, self.o = (
            StochasticLinear(d, d, config, param_id=len(PROJECTIONS) * layer + j) for j in range(len(PROJECTIONS))
        )

    def forward(self, x: torch.Tensor, draw: MaskDraw) -> torch.Tensor:
        batch, time, width = x.shape

        def heads(y):
            return y.view(batch, time, self.n_head, width // self.n_head).transpose(1, 2)

        q, k, v = self._query_key_value(x, draw)
        y = F.scaled_dot_product_attention(heads(q), heads(k), heads(v), is_causal=True)
        return self.o(y.transpose(1, 2).reshape(batch, time, width), draw)

    def _query_key_value(self, x: torch.Tensor, draw: MaskDraw):
        """q, k, v of x: the three at once where the implementation can (``Implementation.apply_stacked``: the
        same values, less of the host's work) and no hook would be skipped; else module by module."""
        layers = (self.q, self.k, self.v)
        if all(map(_calls_only_its_forward, layers)):
            stacked = implementations.lookup(draw.implementation).apply_stacked(x, layers, draw)
            if stacked is not None:
                return stacked.split([layer.weight.shape[0] for layer in layers], -1)
        return tuple(layer(x, draw) for layer in layers)


def _calls_only_its_forward(module: nn.Module) -> bool:
    """Whether calling ``module`` runs ``StochasticLinear.forward`` and nothing else: no subclass's forward, and
    no hook of its own or global (what ``nn.Module.__call__`` checks)."""
    hooks = nn.modules.module
    return type(module).forward is StochasticLinear.forward and not (
        module._forward_hooks
        or module._forward_pre_hooks
        or module._backward_hooks
        or module._backward_pre_hooks
        or hooks._global_forward_hooks
        or hooks._global_forward_pre_hooks
        or hooks._global_backward_hooks
        or hooks._global_backward_pre_hooks
    )


class Block(nn.Module):
    def __init__(self, config: ModelConfig, layer: int):
        super().__init__()
        self.ln_attn = nn.LayerNorm(config.d_model)
        self.attn = CausalSelfAttention(config, layer)
        self.ln_mlp = nn.LayerNorm(config.d_model)
        self.mlp = nn.Sequential(
            nn.Linear(config.d_model, config.d_ff), nn.GELU(), nn.Linear(config.d_ff, config.d_model)
        )

    def forward(self, x: torch.Tensor, draw: MaskDraw) -> torch.Tensor:
        x = x + self.attn(self.ln_attn(x), draw)
        return x + self.mlp(self.ln_mlp(x))


class StochasticTransformer(nn.Module):
    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        self.token_embedding = nn.Embedding(config.vocab_size, config.d_model)
        self.position_embedding = nn.Embedding(config.seq_len, config.d_model)
        self.blocks = nn.ModuleList(Block(config, layer) for layer in range(config.n_layer))
        self.ln_final = nn.LayerNorm(config.d_model)
        self.head = nn.Linear(config.d_model, config.vocab_size, bias=False)
        # Listed once: the forward checks their logits every call (a plain tuple: not registered twice).
        self._stochastic = tuple(m for m in self.modules() if isinstance(m, StochasticLinear))
        self._stochastic_names = tuple(n for n, m in self.named_modules() if isinstance(m, StochasticLinear))
        self._mask_tables = {}  # device tables of the logits' addresses (draw_ahead, StepValueCheck)

    def stochastic_layers(self) -> list[StochasticLinear]:
        """The model's ``StochasticLinear`` layers, as built (listed once; replacing one later is not seen)."""
        return list(self._stochastic)

    def reset_parameters(self, generator: torch.Generator) -> None:
        """Deterministic init from ``generator`` (CPU): N(0, 0.02) weights, zero biases, N(0, 1) logits, the
        logit of each layer's largest code (in its ``codebook`` buffer now) raised by ``LOGIT_INIT_BIAS``."""
        for name, p in self.named_parameters():
            with torch.no_grad():
                if name.endswith("logits"):
                    p.copy_(torch.randn(p.shape, generator=generator))
                    codebook = self.get_submodule(name.rpartition(".")[0]).codebook
                    p[..., int(codebook.argmax())] += LOGIT_INIT_BIAS
                elif "ln_" in name:
                    p.fill_(1.0 if name.endswith("weight") else 0.0)
                elif name.endswith("bias"):
                    p.zero_()
                else:
                    p.copy_(torch.randn(p.shape, generator=generator) * 0.02)

    def forward(
        self,
        tokens: torch.Tensor,
        estimator: str,
        implementation: str,
        seed: int | torch.Tensor,
        tau: float = 1.0,
        sample_offset: int = 0,
    ) -> torch.Tensor:
        """Next-token logits of a batch, every row drawing its own weight masks.

        Row b is sample ``sample_offset + b``: its masks depend only on
        (``seed``, that sample index, the layer, the weight), never on the
        batch it sits in, the device or the implementation, so every
        implementation computes the same function.

        Args:
            tokens: token ids, int64 or int32 ``[B, T]`` with ``1 <= T <= config.seq_len`` and ids in
                ``[0, config.vocab_size)``.
            estimator: one of ``ESTIMATORS``: the gradient estimator of the masks' backward pass.
            implementation: one of ``IMPLEMENTATIONS`` (``"current"`` runs B = 1 only), ``FLOOR``
                (``"shared"``: every row uses the first row's mask, the cost floor), or a name that
                ``implementations.register`` added.
            seed: the noise every mask is drawn from: an int in [0, 2**64) (Python, numpy, or a 0-d integer
                tensor on the CPU, an int64's 64 bits read as unsigned), or a 0-d int64 tensor on the model's
                CUDA device, whose value the kernels read when they run (its 64 bits are the seed).
                A CUDA graph captured with a tensor seed draws the masks of the seed's current value at each
                replay (see "Device speed in your own loop" in the README); the forward pass snapshots the
                value, so changing the tensor afterwards does not change this pass's backward.
            tau: the estimator's temperature, a finite number > 0.
            sample_offset: the sample index of row 0, an int in [0, 2**32 - B].

        Returns:
            logits ``[B, T, config.vocab_size]``, in the model's dtype.

        Raises:
            ValueError: on a bad argument or value, naming the valid ones; on the CPU, for an fp16 or bf16
                model under autocast to another dtype (torch's CPU LayerNorm cannot run it).

        Example::

            >>> model = build_model("small", seed=0)
            >>> tokens = torch.randint(0, 1024, (2, 64))
            >>> logits = model(tokens, estimator="ste", implementation="bmm", seed=1234)
            >>> next_token_loss(logits, tokens).backward()
        """
        _checks.check_choice("estimator", estimator, ESTIMATORS)
        method = implementations.lookup(implementation)
        tau = _checks.check_tau(tau)
        device = self.token_embedding.weight.device
        seed = (ops.check_seed if torch.compiler.is_compiling() else _checks.check_seed)(seed, device)
        if isinstance(seed, torch.Tensor):
            seed = seed.clone()  # this pass's value: the backward recomputes noise from it
        _checks.check_tokens(tokens, self.config.vocab_size, self.config.seq_len, device)
        batch, time = tokens.shape
        try:
            sample_offset = _checks.check_int("sample_offset", sample_offset, 0, 2**32 - batch)
        except (TypeError, ValueError):
            raise ValueError(f"sample_offset must be an int in [0, 2**32 - batch], got {sample_offset!r}") from None
        method.check_batch(batch)
        if device.type == "cpu" and torch.is_autocast_enabled("cpu"):
            norms = (self.ln_final, *(norm for block in self.blocks for norm in (block.ln_attn, block.ln_mlp)))
            _checks.check_autocast_mix(device, {p.dtype for norm in norms for p in norm.parameters()})
        margin = _checks.tau_scale_margin(NEEDS_UNIFORM[estimator], self.config.num_categories)
        # Triton launches on the current CUDA device: make it the model's (the backward's are the engine's).
        with torch.cuda.device(device) if device.type == "cuda" else contextlib.nullcontext():
            # Compiled: the checks as one graph node (reading the values in the graph would break it).
            check = ops.StepValueCheck if torch.compiler.is_compiling() else step_value_check.StepValueCheck
            values = check(
                tokens,
                self.config.vocab_size,
                [layer.logits for layer in self._stochastic],
                tau,
                margin,
                self._mask_tables,
                {name: layer.codebook for name, layer in zip(self._stochastic_names, self._stochastic, strict=True)},
            )
            samples = range(sample_offset, sample_offset + batch)
            drawn = method.draw_ahead(self._stochastic, seed, samples, self._mask_tables)
            draw = MaskDraw(estimator, implementation, tau, seed, samples, drawn)
            positions = torch.arange(time, device=tokens.device)
            x = self.token_embedding(values.safe_tokens) + self.position_embedding(positions)
            for block in self.blocks:
                x = block(x, draw)
            logits = self.head(self.ln_final(x))
            values.result()  # on CUDA, read only now: the host did not wait for the device to reach the checks
        return logits


def next_token_loss(logits: torch.Tensor, tokens: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
    """The training loss: cross-entropy of ``logits[:, t]`` [B, T, vocab] against ``tokens[:, t + 1]`` [B, T].

    Needs B >= 1, T >= 2 (a next token to predict) and vocab >= 1, with logits and tokens on one device.
    Every target counts (no id is ignored). Token ids are not range-checked here: that would synchronise
    the device a second time each step, and the model's forward has checked the tokens it ran on; an id
    outside [0, vocab) raises torch's IndexError on the CPU (a device-side assert on CUDA).
    """
    if not isinstance(logits, torch.Tensor) or not logits.is_floating_point():
        raise TypeError(f"logits must be a floating-point tensor [B, T, vocab], got {_checks._describe(logits)}")
    if logits.dim() != 3 or logits.shape[-1] < 1:
        raise ValueError(f"logits must have shape [B, T, vocab >= 1], got {tuple(logits.shape)}")
    if not isinstance(tokens, torch.Tensor) or tokens.dtype not in (torch.int64, torch.int32):
        raise TypeError(f"tokens must be a torch.int64 or torch.int32 tensor, got {_checks._describe(tokens)}")
    if tuple(tokens.shape) != tuple(logits.shape[:2]):
        raise ValueError(f"tokens {tuple(tokens.shape)} must be the logits' [B, T] {tuple(logits.shape[:2])}")
    if tokens.device != logits.device:
        raise ValueError(f"tokens are on {tokens.device}, the logits on {logits.device}: move one to the other")
    if tokens.shape[0] < 1 or tokens.shape[1] < 2:
        raise ValueError(f"next-token loss needs B >= 1 rows of T >= 2 tokens, got [B, T] = {tuple(tokens.shape)}")
    _checks.check_choice("reduction", reduction, ("mean", "sum", "none"))
    vocab = logits.shape[-1]
    targets = tokens[:, 1:].reshape(-1).long()
    # ignore_index out of every id's range: F.cross_entropy's default (-100) would skip such targets silently.
    return F.cross_entropy(logits[:, :-1].reshape(-1, vocab), targets, reduction=reduction, ignore_index=-(2**62))


def build_model(preset: str | ModelConfig, device: str | torch.device = "cpu", seed: int = 0) -> StochasticTransformer:
    """Build a float32 stochastic transformer, initialised deterministically.

    Weights N(0, 0.02), biases 0, LayerNorms (1, 0), mask logits N(0, 1) with
    the largest code's logit raised by ``LOGIT_INIT_BIAS`` (most weights start
    kept). The initialisation draws from its own generator: the caller's RNG
    does not move.

    Args:
        preset: a name in ``PRESETS`` (``"seed"``, ``"small"``) or a ``ModelConfig``.
        device: where the parameters live.
        seed: an int in [0, 2**64): the initialisation's seed (not the masks').

    Returns:
        a ``StochasticTransformer`` on ``device``.

    Example::

        >>> model = build_model("seed", device="cuda", seed=0)
        >>> sum(p.numel() for p in model.parameters())
    """
    if isinstance(preset, ModelConfig):
        config = preset
    else:
        _checks.check_choice("preset", preset, PRESETS)
        config = PRESETS[preset]
    seed = _checks.check_seed(seed)
    device = _checks.check_device(device)
    with torch.random.fork_rng(devices=[]):  # the modules' default init must not move the caller's RNG
        model = StochasticTransformer(config)
    model.reset_parameters(torch.Generator().manual_seed(seed))
    return model.to(device)
