"""Triton launches that skip the JIT's per-call binding once a specialisation has been compiled.

``kernel[grid](*args, **constexprs)`` binds the arguments, derives their
specialisation and looks the compiled kernel up on every call: about 20 us of
Python a launch on the H100 hosts, against a launch's few microseconds, and a
fused training step makes 60 of them. ``launch`` keys the compiled kernel by
the properties Triton specialises on, read in a few tuple operations:

- a tensor: its dtype and whether its address is 16-byte aligned;
- an int: whether it is 1 (compiled in as a constant), divisible by 16, and
  which of int32, int64 or uint64 holds it;
- a float: nothing (always fp32); a bool: its value;
- the keyword arguments (constexprs, ``num_warps``...) by value, and the current device.

The first launch of a key goes through ``kernel[grid]``, which compiles (or
finds) the kernel; later launches of that key call its launcher directly.
Even these keys cost about 10 us of Python for a launch of 20 arguments, so
launches are first looked up by a cheaper key, the arguments' values (a
tensor by its dtype and address modulo 16; a float by its type), which
determines Triton's: a training step repeats the same sizes and strides at
every layer of a shape. Ints that change from launch to launch (a seed, a
sample offset) miss that lookup and take the specialisation's; the
value-keyed table holds at most ``RECENT_LIMIT`` entries. Where
that cannot be done the same way, every launch takes ``kernel[grid]``: under
Triton's interpreter, while launch hooks are set (profilers such as proton set
them), and with a Triton whose compiled kernels lack the launcher's attributes.
Triton's global knobs (debug, instrumentation) are read at a key's first launch only.
"""

from __future__ import annotations

import torch
import triton

from .._interpreter import INTERPRETED

try:
    from triton import knobs as _knobs
except ImportError:  # a Triton before 3.4: no launch-hook knobs to read
    _knobs = None
_driver = triton.runtime.driver
_LAUNCHER_ATTRIBUTES = ("run", "function", "packed_metadata")
_INT32, _UINT64 = 2**31, 2**63

# (kernel, device, argument keys, keyword arguments) -> (compiled kernel, the constexprs' values in signature order)
_compiled: dict[tuple, tuple] = {}
# (id(kernel), device, argument values, keyword arguments) -> (kernel, compiled kernel, constexprs' values)
_recent: dict[tuple, tuple] = {}
RECENT_LIMIT = 4096


def argument_key(value) -> tuple:
    """What Triton's specialisation reads of a launch argument (see the module docstring)."""
    if type(value) is int:  # the common case first: sizes and strides (a bool is not an int here)
        return value == 1, value % 16 == 0, -_INT32 <= value < _INT32, value < _UINT64
    if isinstance(value, torch.Tensor):
        return value.dtype, value.data_ptr() % 16 == 0
    if isinstance(value, bool):
        return bool, value
    if isinstance(value, float):
        return (float,)
    if isinstance(value, int):  # an int subclass (an IntEnum...): Triton reads it as an int
        return argument_key(int(value))
    raise TypeError(f"launch() takes tensors, ints, floats and bools as runtime arguments, got {type(value).__name__}")


def _arguments_key(args: tuple) -> tuple:
    """``argument_key`` of every argument, inlined for the ints and tensors that make up most launches."""
    return tuple(
        (value == 1, value % 16 == 0, -_INT32 <= value < _INT32, value < _UINT64)
        if type(value) is int
        else (value.dtype, value.data_ptr() % 16 == 0)
        if type(value) is torch.Tensor or type(value) is torch.nn.Parameter
        else argument_key(value)
        for value in args
    )


def _values_key(args: tuple) -> tuple:
    """The arguments as ``_recent`` keys them: ints by value, tensors by dtype and address modulo 16,
    anything else by ``argument_key``. Equal value keys have equal ``_arguments_key``."""
    # Every tensor by (dtype, address mod 16), subclasses too: argument_key's (dtype, aligned) would equal
    # (dtype, 0 or 1).
    return tuple(
        value
        if type(value) is int
        else (value.dtype, value.data_ptr() & 15)
        if isinstance(value, torch.Tensor)
        else argument_key(value)
        for value in args
    )


def _remember(key: tuple, bound: tuple) -> None:
    """Enter a bound launch in ``_recent``, emptied first when full (changing ints fill it one launch at a time)."""
    if len(_recent) >= RECENT_LIMIT:
        _recent.clear()
    _recent[key] = bound


def _hook_set(hook) -> bool:
    """A launch hook is set: a callable, or a Triton ``HookChain`` (3.5 and later) with calls in it."""
    return hook is not None and bool(getattr(hook, "calls", True))


def _hooks_set() -> bool:
    return _knobs is None or _hook_set(_knobs.runtime.launch_enter_hook) or _hook_set(_knobs.runtime.launch_exit_hook)


def launch(kernel, grid: tuple, *args, **constexprs) -> None:
    """``kernel[grid](*args, **constexprs)``, calling the compiled kernel's launcher directly after its first launch.

    Args:
        kernel: a ``triton.jit`` function whose runtime arguments are all positional and come first.
        grid: one to three program counts.
        args: the runtime arguments (tensors, ints, floats, bools), in the kernel's order.
        constexprs: the compile-time arguments and launch options (``num_warps``...), by keyword.

    Example::

        >>> launch(_uniform_kernel, (blocks, batch), seed_ptr, key, first, out, numel, SEED_ON_DEVICE=False, BLOCK=1024)
    """
    if INTERPRETED or _hooks_set():
        kernel[grid](*args, **constexprs)
        return
    device = torch.cuda.current_device()
    options = tuple(constexprs.items())
    recent_key = (id(kernel), device, _values_key(args), options)
    bound = _recent.get(recent_key)
    if bound is None:
        key = (kernel, device, _arguments_key(args), options)
        bound = _compiled.get(key)
        if bound is None:
            compiled = kernel[grid](*args, **constexprs)
            if all(hasattr(compiled, name) for name in _LAUNCHER_ATTRIBUTES):
                tail = tuple(constexprs[name] for name in kernel.arg_names[len(args) :])
                _compiled[key] = kernel, compiled, tail  # the kernel held: its id in _recent's keys stays its own
            return
        _remember(recent_key, bound)
    _, compiled, tail = bound
    grid_x, grid_y, grid_z = (*grid, 1, 1)[:3]
    stream = _driver.active.get_current_stream(device)
    compiled.run(
        grid_x, grid_y, grid_z, stream, compiled.function, compiled.packed_metadata, None, None, None, *args, *tail
    )


def cdiv(a: int, b: int) -> int:
    """ceil(a / b) for ints on the host (``triton.cdiv`` is a constexpr function: slow to call from Python)."""
    return -(-a // b)
