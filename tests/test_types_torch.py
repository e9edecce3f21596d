"""torch tensors and modules: keys by content, results round-tripped without pickle."""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import pytest
from _types_helpers import key, need, roundtrip
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from persistmemo import Cache, KeyEncodingError, UncacheableResultWarning, memoize

torch = need("torch")

DTYPES = [torch.float32, torch.float64, torch.float16, torch.bfloat16, torch.int8, torch.uint8,
          torch.int16, torch.int32, torch.int64, torch.bool, torch.complex64,
          torch.float8_e4m3fn, torch.float8_e5m2]


def raw(t: Any) -> Any:
    """The tensor's bytes as a numpy uint8 array."""
    return t.contiguous().reshape(-1).view(torch.uint8).numpy()


def same_tensor(a: Any, b: Any) -> bool:
    """Bitwise equality of dtype, shape and bytes."""
    return bool(a.dtype == b.dtype and a.shape == b.shape and np.array_equal(raw(a), raw(b)))


def make(dtype: Any, shape: tuple[int, ...] = (3, 4), seed: int = 0) -> Any:
    """A deterministic tensor of any dtype (float8 via a float32 cast)."""
    g = torch.Generator().manual_seed(seed)
    t = torch.randn(shape, generator=g) * 10
    return t.to(dtype)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_every_dtype_round_trips_bitwise(dtype: Any) -> None:
    """A stored tensor of any dtype (bfloat16, float8 included) comes back bitwise equal."""
    t = make(dtype)
    back = roundtrip(t)
    assert type(back) is torch.Tensor and same_tensor(back, t)
    assert back.is_contiguous() and not back.requires_grad


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_key_depends_on_dtype_shape_and_every_element(dtype: Any) -> None:
    """Dtype, shape and any one element change the key; a copy does not."""
    t = make(dtype)
    assert key(t) == key(t.clone())
    assert key(t) != key(t.reshape(4, 3))
    other = {torch.float64: torch.float32, torch.complex64: torch.complex128}.get(dtype,
                                                                           torch.float64)
    assert key(t) != key(t.to(other))
    changed = t.clone()
    changed.reshape(-1).view(torch.uint8)[5] ^= 1
    assert key(changed) != key(t)


def test_device_and_requires_grad_are_not_in_the_key() -> None:
    """requires_grad, Parameter wrapping and layout in memory do not change the key."""
    t = torch.randn(5, 6)
    assert key(t) == key(t.clone().requires_grad_(True))
    assert key(t) == key(torch.nn.Parameter(t.clone()))
    assert key(t) == key(t.T.contiguous().T)  # non-contiguous view of the same values
    assert key(t) == key(t.to("cpu"))


def test_results_are_contiguous_and_detached() -> None:
    """A non-contiguous result that required grad comes back contiguous, without grad."""
    t = torch.randn(4, 5, requires_grad=True)
    view = (t * 2).T
    back = roundtrip(view)
    assert back.is_contiguous() and not back.requires_grad
    assert torch.equal(back, view.detach())


def test_conj_and_neg_views_are_resolved() -> None:
    """A lazily conjugated tensor stores (and keys) its conjugated values."""
    c = torch.randn(3, dtype=torch.complex64)
    assert torch.equal(roundtrip(c.conj()), c.conj().resolve_conj())
    assert key(c.conj()) == key(c.conj().resolve_conj())


def test_missing_device_falls_back_to_cpu_with_one_warning() -> None:
    """A tensor stored from a device absent here comes back on the CPU with one warning."""
    from persistmemo._types import torch as pm_torch

    pm_torch._warned_devices.discard("cuda:3")
    with pytest.warns(pm_torch.DeviceFallbackWarning, match="cuda:3"):
        assert pm_torch._device("cuda:3").type == "cpu"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert pm_torch._device("cuda:3").type == "cpu"  # once only


@settings(max_examples=40, deadline=None)
@given(hnp.arrays(st.sampled_from(["<f4", "<f8", "<i4", "<i8", "|u1", "<f2"]),
                  hnp.array_shapes(min_dims=0, max_dims=3, max_side=5)))
def test_property_tensor_keys_and_round_trips(arr: Any) -> None:
    """Tensors from arbitrary arrays: a copy shares the key, the value round-trips bitwise."""
    t = torch.from_numpy(arr.copy())
    assert key(t) == key(t.clone())
    assert same_tensor(roundtrip(t), t)
    if t.numel():
        changed = t.clone()
        changed.reshape(-1).view(torch.uint8)[0] ^= 1
        assert key(changed) != key(t)


def tiny(act: Any = None) -> Any:
    """A small deterministic model."""
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(3, 4), act or torch.nn.ReLU(),
                               torch.nn.Dropout(0.1), torch.nn.BatchNorm1d(4))


def test_module_key_covers_weights_buffers_mode_and_structure() -> None:
    """Weights, buffers, train/eval, submodule classes and hyper-parameters all change the key."""
    base = key(tiny())
    assert key(tiny()) == base  # same class, same state
    with torch.no_grad():
        m = tiny()
        m[0].weight[0, 0] += 1
    assert key(m) != base
    m = tiny()
    m[3].running_mean += 1  # a buffer
    assert key(m) != base
    assert key(tiny().eval()) != base
    assert key(tiny(torch.nn.GELU())) != base  # same state_dict, other activation
    m = tiny()
    m[2].p = 0.5  # a hyper-parameter outside the state_dict
    assert key(m) != base


def load_net(tmp_path: Any, name: str, body: str) -> Any:
    """Import a module named ``netmod`` from its own file; return its Net class."""
    import importlib.util

    path = tmp_path / name
    path.mkdir()
    (path / "netmod.py").write_text(
        "import torch\n\nclass Net(torch.nn.Module):\n    def __init__(self):\n"
        "        super().__init__()\n        self.w = torch.nn.Parameter(torch.ones(2))\n\n"
        f"    def forward(self, x):\n        return {body}\n")
    spec = importlib.util.spec_from_file_location("netmod", path / "netmod.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.Net


def test_module_subclass_code_is_fingerprinted(tmp_path: Any) -> None:
    """Same class name and parameters but different forward code: different keys."""
    net_a = load_net(tmp_path, "a", "x * self.w")
    net_b = load_net(tmp_path, "b", "x + self.w")
    net_a2 = load_net(tmp_path, "a2", "x * self.w  # a comment")
    assert key(net_a()) != key(net_b())
    assert key(net_a()) == key(net_a2())


def test_module_with_unencodable_attribute_is_refused_naming_it() -> None:
    """A module attribute without a canonical encoding is a KeyEncodingError naming it."""
    m = torch.nn.Linear(2, 2)
    m.tokenizer = object()
    with pytest.raises(KeyEncodingError, match="tokenizer"):
        key(m)


def test_module_results_are_not_stored_and_suggest_state_dict() -> None:
    """An nn.Module result is returned, not stored, with a warning suggesting state_dict()."""

    @memoize(cache=Cache("memory://"))
    def build(n: int) -> Any:
        return torch.nn.Linear(n, n)

    with pytest.warns(UncacheableResultWarning, match="state_dict"):
        m = build(2)
    assert isinstance(m, torch.nn.Linear)


def test_state_dict_results_round_trip() -> None:
    """A state_dict (an OrderedDict of tensors) is stored and comes back loadable."""
    sd = tiny().state_dict()
    back = roundtrip(sd)
    assert list(back) == list(sd)
    fresh = tiny(torch.nn.ReLU())
    fresh.load_state_dict(back)
    assert all(torch.equal(back[k], sd[k]) for k in sd)


def test_memoized_tensor_function_hits_without_pickle(monkeypatch: pytest.MonkeyPatch) -> None:
    """A tensor argument and result: the second call is a hit; pickle and torch.load unused."""
    import pickle

    def boom(*a: Any, **k: Any) -> Any:
        raise AssertionError("pickle/torch.load must not be called")

    monkeypatch.setattr(pickle, "loads", boom)
    monkeypatch.setattr(pickle, "load", boom)
    monkeypatch.setattr(torch, "load", boom)
    calls = []

    @memoize(cache=Cache("memory://"))
    def double(x: Any, model: Any) -> Any:
        calls.append(1)
        with torch.no_grad():
            return model(x) * 2

    x, model = torch.randn(2, 3, dtype=torch.bfloat16), torch.nn.Linear(3, 3).bfloat16()
    first = double(x, model)
    second = double(x.clone(), model)
    assert len(calls) == 1 and torch.equal(first, second) and second.dtype == torch.bfloat16


def test_cyclic_module_is_a_key_error() -> None:
    """A module that contains itself is refused with a KeyEncodingError, not a RecursionError."""
    m = torch.nn.Sequential(torch.nn.Linear(2, 2))
    m.add_module("loop", m)
    with pytest.raises(KeyEncodingError, match="contains itself"):
        key(m)


def test_library_errors_become_key_errors() -> None:
    """A tensor torch cannot flatten (nested) is a KeyEncodingError, not a raw RuntimeError."""
    nested = torch.nested.nested_tensor([torch.ones(2), torch.ones(3)], layout=torch.jagged)
    with pytest.raises(KeyEncodingError):
        key(nested)


@pytest.mark.parametrize("device", ["cuda:0", "mps", "xpu:1", "meta"])
def test_absent_accelerators_fall_back_to_cpu(device: str) -> None:
    """Entries computed on an accelerator absent here load on the CPU (one warning each)."""
    from persistmemo._types import torch as pm_torch

    if pm_torch._exists(torch.device(device)) and device != "meta":
        pytest.skip(f"{device} exists here")
    pm_torch._warned_devices.discard(device)
    with pytest.warns(pm_torch.DeviceFallbackWarning):
        assert pm_torch._device(device).type in ("cpu", "meta")


def test_unregistered_tensor_attributes_are_in_the_key() -> None:
    """A plain tensor attribute (not a parameter or buffer, e.g. a mask) is part of the key."""
    a, b = torch.nn.Linear(2, 2), torch.nn.Linear(2, 2)
    b.load_state_dict(a.state_dict())
    a.mask, b.mask = torch.ones(2), torch.zeros(2)
    assert key(a) != key(b)
    b.mask = torch.ones(2)
    assert key(a) == key(b)


def test_private_settings_are_in_the_key_and_common_modules_encode() -> None:
    """A private setting read by forward() changes the key; torch's own modules all encode."""
    a, b = torch.nn.Linear(2, 2), torch.nn.Linear(2, 2)
    b.load_state_dict(a.state_dict())
    a._scale, b._scale = 1.0, 2.0
    assert key(a) != key(b)
    for m in (torch.nn.LSTM(3, 4, 2), torch.nn.GRU(3, 4), torch.nn.Conv2d(3, 4, 3),
              torch.nn.MultiheadAttention(8, 2), torch.nn.ParameterDict({"a": torch.ones(1)}),
              torch.nn.Transformer(16, 2, 1, 1, 8, batch_first=True)):
        assert key(m) == key(m)
    conv1, conv2 = torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.Conv2d(3, 4, 3, padding=1)
    conv2.load_state_dict(conv1.state_dict())
    conv2.padding_mode = "reflect"
    assert key(conv1) != key(conv2)
