"""The Python module against the C++ core: numpy arrays in, the CPU backends, errors as exceptions.

Every check compares the fast CPU backend with the float64 reference backend on fresh random data
(CONTRACT.md's tolerances); outputs are poisoned with NaN first, so an element left unwritten fails.
"""

import numpy as np
import pytest

import fusedmoe

TOL = {np.float32: (1e-5, 1e-5, 1e-6), np.float16: (1e-5, 1e-3, 2e-3)}  # atol, rtol, global


def small_config(dtype="f32", experts=8, top_k=2, **kw):
    c = {"hidden": 64, "intermediate": 48, "experts": experts, "top_k": top_k, "dtype": dtype,
         "routing": {"kind": "softmax_topk", "renormalize": True}}
    c.update(kw)
    return c


def random_weights(c, np_dtype, rng, layout="gate_up_rows"):
    h, i, e = c["hidden"], c["intermediate"], c["experts"]
    gate = rng.standard_normal((e, i, h)) / np.sqrt(h)
    up = rng.standard_normal((e, i, h)) / np.sqrt(h)
    down = rng.standard_normal((e, h, i)) / np.sqrt(i)
    w = {"layout": layout, "router": (rng.standard_normal((e, h)) / np.sqrt(h)).astype(np.float32)}
    if layout == "gate_up_rows":
        w["gate_up"] = np.concatenate([gate, up], axis=1).astype(np_dtype)
        w["down"] = down.astype(np_dtype)
    elif layout == "up_gate_rows":
        w["gate_up"] = np.concatenate([up, gate], axis=1).astype(np_dtype)
        w["down"] = down.astype(np_dtype)
    elif layout == "separate":
        w["w1"] = [g.astype(np_dtype) for g in gate]
        w["w3"] = [u.astype(np_dtype) for u in up]
        w["w2"] = [d.astype(np_dtype) for d in down]
    return w


def check_close(out, ref, np_dtype):
    atol, rtol, glob = TOL[np_dtype]
    out = out.astype(np.float64)
    ref = ref.astype(np.float64)
    assert np.isfinite(out).all(), "unwritten (NaN-poisoned) or non-finite elements"
    scale = max(1.0, float(np.sqrt(np.mean(ref ** 2))))
    bad = np.abs(out - ref) > atol * scale + rtol * np.abs(ref)
    assert not bad.any(), f"{bad.sum()} elements out of tolerance, worst {np.abs(out - ref).max()}"
    assert np.linalg.norm(out - ref) <= glob * np.linalg.norm(ref) + 1e-30


def run(layer, x, **kw):
    out = np.full(x.shape, np.nan, dtype=x.dtype)  # poisoned: every element must be written
    layer(x, out=out, **kw)
    return out


@pytest.mark.parametrize("np_dtype,dtype", [(np.float32, "f32"), (np.float16, "f16")])
@pytest.mark.parametrize("tokens", [1, 7, 33])
def test_cpu_matches_reference(np_dtype, dtype, tokens):
    rng = np.random.default_rng(tokens)
    c = small_config(dtype)
    w = random_weights(c, np_dtype, rng)
    x = rng.standard_normal((tokens, c["hidden"])).astype(np_dtype)
    got = run(fusedmoe.Layer(c, w, "cpu"), x)
    ref = fusedmoe.Layer(c, w, "reference")(x, out=np.empty(x.shape, np.float32))
    check_close(got, ref, np_dtype)


@pytest.mark.parametrize("layout", ["up_gate_rows", "separate"])
def test_layouts_give_the_same_bits(layout):
    rng = np.random.default_rng(7)
    c = small_config()
    x = rng.standard_normal((9, c["hidden"])).astype(np.float32)
    base = run(fusedmoe.Layer(c, random_weights(c, np.float32, np.random.default_rng(1)), "cpu"), x)
    other = run(fusedmoe.Layer(c, random_weights(c, np.float32, np.random.default_rng(1), layout),
                               "cpu"), x)
    assert np.array_equal(base, other)


def test_strided_rows_are_read_in_place():
    rng = np.random.default_rng(3)
    c = small_config()
    w = random_weights(c, np.float32, rng)
    big = rng.standard_normal((10, 2 * c["hidden"])).astype(np.float32)
    x_strided = big[::2, : c["hidden"]]  # every other row, first half of each: not contiguous
    layer = fusedmoe.Layer(c, w, "cpu")
    assert np.array_equal(run(layer, x_strided), run(layer, np.ascontiguousarray(x_strided)))


def test_precomputed_routing_and_invalid_ids():
    rng = np.random.default_rng(5)
    c = small_config(routing={"kind": "precomputed", "renormalize": False})
    w = random_weights(c, np.float32, rng)
    del w["router"]
    t, k = 6, c["top_k"]
    x = rng.standard_normal((t, c["hidden"])).astype(np.float32)
    ids = rng.integers(0, c["experts"], (t, k)).astype(np.int32)
    ids[2, 1] = 99  # out of range: contributes zero, counted
    weights = rng.random((t, k)).astype(np.float32)
    layer = fusedmoe.Layer(c, w, "cpu")
    got = run(layer, x, topk_ids=ids, topk_weights=weights)
    assert layer.take_invalid_id_count() == 1
    ref_layer = fusedmoe.Layer(c, w, "reference")
    ref = ref_layer(x, ids, weights, out=np.empty(x.shape, np.float32))
    check_close(got, ref, np.float32)
    # the bad slot contributes exactly zero: token 2 equals its other slot alone
    ids_one = ids.copy()
    w_one = weights.copy()
    w_one[2, 1] = 0.0
    ids_one[2, 1] = ids[2, 0]
    assert np.array_equal(got[2], run(layer, x, topk_ids=ids_one, topk_weights=w_one)[2])


def test_return_routing():
    rng = np.random.default_rng(11)
    c = small_config()
    layer = fusedmoe.Layer(c, random_weights(c, np.float32, rng), "cpu")
    x = rng.standard_normal((5, c["hidden"])).astype(np.float32)
    out, ids, weights = layer(x, return_routing=True)
    assert ids.shape == (5, 2) and ids.dtype == np.int32
    assert ((ids >= 0) & (ids < c["experts"])).all()
    np.testing.assert_allclose(weights.sum(axis=1), 1.0, rtol=1e-5)  # renormalised


def test_presets_and_config_round_trip():
    names = fusedmoe.preset_names()
    assert "deepseek-v3" in names and "mixtral-8x7b" in names
    ds = fusedmoe.preset_config("deepseek-v3")
    assert ds["routing"]["kind"] == "sigmoid_topk" and ds["routing"]["n_group"] == 8
    small = fusedmoe.with_experts(ds, 16)
    assert small["experts"] == 16 and small["routing"]["n_group"] == 8
    fusedmoe.validate(small)


@pytest.mark.parametrize("bad,code", [
    (lambda c: c.update(top_k=0), "unsupported_config"),
    (lambda c: c.update(dtype="f64"), "invalid_argument"),
    (lambda c: c["routing"].update(kind="nope"), "invalid_argument"),
])
def test_bad_configs_raise(bad, code):
    c = small_config()
    bad(c)
    with pytest.raises(fusedmoe.Error) as e:
        fusedmoe.validate(c)
    assert fusedmoe.status_code(e.value) == code


def test_bad_tensors_raise_with_the_status():
    rng = np.random.default_rng(2)
    c = small_config()
    w = random_weights(c, np.float32, rng)
    layer = fusedmoe.Layer(c, w, "cpu")
    with pytest.raises(fusedmoe.Error, match="invalid_shape"):
        layer(np.zeros((3, c["hidden"] + 1), np.float32))
    with pytest.raises(fusedmoe.Error, match="invalid_dtype"):
        layer(np.zeros((3, c["hidden"]), np.float64))
    w["down"] = w["down"][:, :-1]
    with pytest.raises(fusedmoe.Error, match="invalid_shape"):
        fusedmoe.Layer(c, w, "cpu")
    with pytest.raises(fusedmoe.Error, match="unknown preset"):
        fusedmoe.preset_config("no-such-model")


def test_zero_tokens():
    c = small_config()
    layer = fusedmoe.Layer(c, random_weights(c, np.float32, np.random.default_rng(0)), "cpu")
    out = layer(np.zeros((0, c["hidden"]), np.float32))
    assert out.shape == (0, c["hidden"])


def test_describe_names_the_backend():
    c = small_config()
    layer = fusedmoe.Layer(c, random_weights(c, np.float32, np.random.default_rng(0)), "cpu")
    assert layer.describe(4).startswith("cpu ")
    assert layer.describe(0) == ""


def test_torch_cpu_tensors_if_torch_is_installed():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(4)
    c = small_config("bf16")
    w = {key: (torch.from_numpy(v).to(torch.bfloat16) if isinstance(v, np.ndarray) and key != "router"
               else v) for key, v in random_weights(c, np.float32, rng).items()}
    w["router"] = torch.from_numpy(w["router"])
    x = torch.randn(4, c["hidden"]).to(torch.bfloat16)
    got = fusedmoe.Layer(c, w, "cpu")(x)
    ref = fusedmoe.Layer(c, w, "reference")(x, out=torch.empty(x.shape, dtype=torch.float32))
    assert torch.isfinite(got.float()).all()
    err = (got.float() - ref).norm() / ref.norm()
    assert err <= 1e-2
