"""torch: tensors and modules as keys, tensors as stored results (raw bytes, no torch.load).

Key of a tensor: dtype, shape and the BLAKE3 of its contiguous bytes; neither the device nor
``requires_grad`` is part of it (a GPU tensor is hashed from a host copy). Key of an
``nn.Module``: for every submodule in order, its name, class (qualified name + code
fingerprint), ``training`` flag, public attributes (hyper-parameters such as a convolution's
stride or a dropout's ``p``), hooks, and every parameter and buffer by name and content.

A stored tensor is its raw bytes plus dtype, shape and device; it is rebuilt contiguous, with
``requires_grad=False``, on the device it was computed on if that exists here, else on the CPU
with one warning per device.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from persistmemo._types import Carrier, Unsupported
from persistmemo._types._common import (
    canonical,
    class_identity,
    digest,
    qualname,
    seq,
    text,
    u64,
)
from persistmemo.errors import SerializationError

# Module machinery (parameter/buffer/submodule dicts, hook tables: encoded in their own places)
# and state derived from parameters (RNN weight lists and their weakrefs) stay out of the
# attributes; every other attribute, public or private, is part of the key.
_MODULE_SKIP = frozenset(vars(torch.nn.Module())) | {
    "_flat_weights", "_flat_weight_refs", "_compiled_call_impl"}
_HOOKS = ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_backward_pre_hooks")
_warned_devices: set[str] = set()


class DeviceFallbackWarning(UserWarning):
    """A stored tensor's device does not exist in this process: it is returned on the CPU."""


_DTYPE_NAMES: dict[Any, str] = {}


def _dtype_name(dtype: torch.dtype) -> str:
    name = _DTYPE_NAMES.get(dtype)
    if name is None:
        name = _DTYPE_NAMES[dtype] = str(dtype).removeprefix("torch.")
    return name


def _raw(t: torch.Tensor) -> Any:
    """The tensor's bytes as a 1-D uint8 numpy view (copied only when not contiguous/on CPU)."""
    if t.layout is not torch.strided:
        raise Unsupported(f"{t.layout} tensors are not supported; pass t.to_dense()")
    if t.device.type != "cpu":
        if t.device.type == "meta":
            raise Unsupported("meta tensors carry no data")
        t = t.detach().cpu()
    if t.is_quantized:
        raise Unsupported("quantized tensors are not supported; pass t.dequantize()")
    if t.requires_grad:
        t = t.detach()
    if t.is_conj():
        t = t.resolve_conj()
    if t.is_neg():
        t = t.resolve_neg()
    if not t.is_contiguous():
        t = t.contiguous()
    if t.numel() == 0:
        return np.empty(0, np.uint8)
    return t.reshape(-1).view(torch.uint8).numpy()


def _tensor_body(t: torch.Tensor) -> bytes:
    head = text("torch.Tensor") + text(_dtype_name(t.dtype)) + u64(t.dim())
    return head + b"".join(u64(n) for n in t.shape) + digest(_raw(t))


def _function_id(fn: Any) -> bytes:
    from persistmemo.keys import code_fingerprint, function_identity

    if not callable(fn):
        raise Unsupported(f"a hook of type {qualname(type(fn))} is not callable")
    return text(function_identity(fn)) + text(code_fingerprint(fn))


def _attrs_body(m: torch.nn.Module) -> bytes:
    """Attributes (hyper-parameters, private settings, unregistered tensors such as a mask):
    plain values in one canonical tuple, functions by identity. Parameters, buffers and
    submodules live in their own dicts, not in ``vars(m)``: they are encoded elsewhere."""
    import types

    plain, funcs = [], []
    for k in sorted(vars(m)):
        v = vars(m)[k]
        if k in _MODULE_SKIP or isinstance(v, torch.nn.Module):
            continue
        if isinstance(v, (types.FunctionType, types.BuiltinFunctionType)):
            funcs.append(text(k) + _function_id(v))
        else:
            plain.append((k, v))
    try:
        body = canonical(tuple(plain))
    except Unsupported:
        for k, v in plain:  # name the attribute that has no encoding
            try:
                canonical(v)
            except Unsupported as exc:
                raise Unsupported(f"attribute {k!r}: {exc}; give the class a "
                                  "__persistmemo_key__ method or register_key_encoder() it"
                                  ) from None
        raise
    return body + seq(funcs)


def _one_module(path: str, m: torch.nn.Module, seen: dict[int, int]) -> bytes:
    out = text(path) + class_identity(type(m)) + (b"T" if m.training else b"F") + _attrs_body(m)
    for hooks in _HOOKS:
        found = getattr(m, hooks, None)
        out += seq(_function_id(h) for h in found.values()) if found else _EMPTY
    tensors = sorted([*m._parameters.items(), *m._buffers.items()], key=lambda kv: kv[0])
    out += seq(text(k) + _module_tensor(t, seen) for k, t in tensors)
    return out


def _module_tensor(t: torch.Tensor | None, seen: dict[int, int]) -> bytes:
    """A parameter or buffer; one met before in this module (tied weights: an encoder's and a
    decoder's embedding) is a reference to its first place, so tied and untied models with
    equal values differ (training them gives different results)."""
    if t is None:
        return b"N"
    first = seen.get(id(t))
    if first is not None:
        return b"R" + u64(first)
    seen[id(t)] = len(seen)
    return _tensor_body(t)


_EMPTY = u64(0)


def _module_body(m: torch.nn.Module) -> bytes:
    parts = []
    seen: dict[int, int] = {}  # id of a parameter/buffer -> its order of first appearance
    try:
        for path, sub in m.named_modules(remove_duplicate=False):
            try:
                parts.append(_one_module(path, sub, seen))
            except Unsupported as exc:
                raise Unsupported(f"submodule {path or '<root>'!r}: {exc}") from None
    except RecursionError:
        raise Unsupported("the module contains itself (a cycle of submodules)") from None
    return text("torch.nn.Module") + seq(parts)


def key_encoder(cls: type) -> Callable[[Any], bytes]:
    """Return the key encoder for a torch class (tensor, Parameter, Module, dtype, ...)."""
    if issubclass(cls, torch.nn.Module):
        return _refuse_compiled if cls.__name__ == "OptimizedModule" else _module_body
    if issubclass(cls, torch.Tensor):
        if cls not in (torch.Tensor, torch.nn.Parameter):
            return _refuse_subclass
        return _tensor_body
    if cls is torch.dtype:
        return lambda d: text("torch.dtype") + text(_dtype_name(d))
    if cls is torch.device:  # a device argument can change the result (numerics, errors)
        return lambda d: text("torch.device") + text(str(d))
    if cls is torch.Size:
        return lambda s: text("torch.Size") + seq(u64(n) for n in s)
    return _refuse_subclass


def _refuse_compiled(m: Any) -> bytes:
    raise Unsupported("a torch.compile()d module wraps compiled code that has no canonical "
                      "encoding; pass the original module (model._orig_mod) as the argument")


def _refuse_subclass(v: Any) -> bytes:
    raise Unsupported(f"{qualname(type(v))} is a subclass that may carry more state than its"
                      " data; use register_key_encoder()")


# -- results -----------------------------------------------------------------------------------


def _encode_tensor(t: torch.Tensor) -> Carrier:
    try:
        raw = _raw(t)
    except Unsupported as exc:
        raise SerializationError(f"cannot store a tensor: {exc}") from None
    meta = {"dtype": _dtype_name(t.dtype), "shape": list(t.shape), "device": str(t.device)}
    return Carrier("torch:tensor", meta, [raw])


def _refuse_module(m: Any) -> Carrier:
    raise SerializationError(
        f"a {qualname(type(m))} (torch.nn.Module) can only be stored with serializer='pickle' "
        "and a secret, which runs code on load; return model.state_dict() instead (a dict of "
        "tensors is stored without pickle) and load it into a fresh model"
    )


def value_encoder(cls: type) -> Callable[[Any], Carrier] | None:
    """Return the result encoder for a torch class, or None for unsupported classes."""
    if issubclass(cls, torch.nn.Module):
        return _refuse_module
    if cls in (torch.Tensor, torch.nn.Parameter):
        return _encode_tensor
    if cls is torch.dtype:
        return lambda d: Carrier("torch:dtype", _dtype_name(d))
    if cls is torch.device:
        return lambda d: Carrier("torch:device", str(d))
    if cls is torch.Size:
        return lambda s: Carrier("torch:size", list(s))
    return None


def _dtype(name: Any) -> torch.dtype:
    dtype = getattr(torch, str(name), None)
    if not isinstance(dtype, torch.dtype):
        raise ValueError(f"unknown torch dtype {name!r}")
    return dtype


def _device(name: str) -> torch.device:
    """The stored device if it exists here, else the CPU (with one warning per device)."""
    device = torch.device(name)
    if device.type == "cpu" or _exists(device):
        return device
    if name not in _warned_devices:
        _warned_devices.add(name)
        msg = (f"persistmemo: a cached tensor was computed on {name!r}, which does not exist in "
               "this process; returning it on the CPU")
        logging.getLogger("persistmemo").warning("%s", msg)
        warnings.warn(msg, DeviceFallbackWarning, stacklevel=2)
    return torch.device("cpu")


def _exists(device: torch.device) -> bool:
    """Whether ``device`` (cuda:1, mps, xpu:0, ...) is usable in this process."""
    try:
        if device.type == "mps":
            return bool(torch.backends.mps.is_available())
        backend = getattr(torch, device.type, None)
        if backend is None or not backend.is_available():
            return False
        return device.index is None or device.index < int(backend.device_count())
    except Exception:  # a backend without these functions: treat as absent
        return False


def decode(name: str, meta: Any, buffers: list[memoryview]) -> Any:
    """Rebuild a stored torch value."""
    if name == "dtype":
        return _dtype(meta)
    if name == "device":
        return torch.device(str(meta))
    if name == "size":
        return torch.Size([int(n) for n in meta])
    if name != "tensor":
        raise ValueError(f"unknown torch carrier {name!r}")
    dtype = _dtype(meta["dtype"])
    shape = [int(n) for n in meta["shape"]]
    (raw,) = buffers
    t = torch.empty(shape, dtype=dtype)
    if t.numel() * t.element_size() != raw.nbytes:
        raise ValueError("tensor buffer has the wrong size")
    if raw.nbytes and not raw.readonly:
        # mmap=True maps entries copy-on-write: a zero-copy tensor over the mapping is safe
        # (in-place ops change private pages, never the stored file).
        t = torch.frombuffer(raw, dtype=torch.uint8).view(dtype).reshape(shape)
    elif raw.nbytes:
        t.reshape(-1).view(torch.uint8).numpy()[:] = np.frombuffer(raw, np.uint8)
    device = _device(str(meta["device"]))
    return t if device.type == "cpu" else t.to(device)
