"""fusedmoe.Layer.from_checkpoint: Hugging Face safetensors files written here, read back."""

import json
import struct

import numpy as np
import pytest

import fusedmoe


def write_safetensors(path, tensors):
    """A minimal safetensors writer: 8-byte little-endian header size, JSON header, raw data."""
    header, blobs, offset = {}, [], 0
    for name, a in tensors.items():
        a = np.ascontiguousarray(a)
        dtype = {np.dtype(np.float32): "F32", np.dtype(np.float16): "F16"}[a.dtype]
        header[name] = {"dtype": dtype, "shape": list(a.shape),
                        "data_offsets": [offset, offset + a.nbytes]}
        blobs.append(a.tobytes())
        offset += a.nbytes
    text = json.dumps(header).encode()
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)) + text + b"".join(blobs))


def qwen3_checkpoint(tmp_path, rng, h=64, i=32, e=8, k=2, layers=2):
    config = {"model_type": "qwen3_moe", "architectures": ["Qwen3MoeForCausalLM"],
              "hidden_size": h, "moe_intermediate_size": i, "num_experts": e,
              "num_experts_per_tok": k, "norm_topk_prob": True, "num_hidden_layers": layers,
              "torch_dtype": "float32"}
    (tmp_path / "config.json").write_text(json.dumps(config))
    tensors, experts = {}, {}
    for layer in range(layers):
        p = f"model.layers.{layer}.mlp."
        tensors[p + "gate.weight"] = (rng.standard_normal((e, h)) / np.sqrt(h)).astype(np.float32)
        for x in range(e):
            for proj, shape, fan in (("gate_proj", (i, h), h), ("up_proj", (i, h), h),
                                     ("down_proj", (h, i), i)):
                tensors[f"{p}experts.{x}.{proj}.weight"] = (
                    rng.standard_normal(shape) / np.sqrt(fan)).astype(np.float32)
    write_safetensors(tmp_path / "model.safetensors", tensors)
    return config, tensors


def test_layer_from_checkpoint_matches_the_same_weights_given_directly(tmp_path):
    rng = np.random.default_rng(0)
    config, t = qwen3_checkpoint(tmp_path, rng)
    layer = fusedmoe.Layer.from_checkpoint(str(tmp_path), 1, backend="cpu")
    c = layer.config
    assert (c["hidden"], c["intermediate"], c["experts"], c["top_k"]) == (64, 32, 8, 2)
    assert c["dtype"] == "f32" and c["routing"]["renormalize"]
    p = "model.layers.1.mlp."
    direct = fusedmoe.Layer(c, {
        "layout": "separate", "router": t[p + "gate.weight"],
        "w1": [t[f"{p}experts.{x}.gate_proj.weight"] for x in range(8)],
        "w3": [t[f"{p}experts.{x}.up_proj.weight"] for x in range(8)],
        "w2": [t[f"{p}experts.{x}.down_proj.weight"] for x in range(8)]}, "cpu")
    x = rng.standard_normal((5, 64)).astype(np.float32)
    assert np.array_equal(layer(x), direct(x))


def test_bad_files_raise_io_errors(tmp_path):
    rng = np.random.default_rng(1)
    qwen3_checkpoint(tmp_path, rng)
    data = (tmp_path / "model.safetensors").read_bytes()
    (tmp_path / "model.safetensors").write_bytes(data[: len(data) // 2])  # truncated
    with pytest.raises(fusedmoe.Error) as e:
        fusedmoe.Layer.from_checkpoint(str(tmp_path), 0, backend="cpu")
    assert fusedmoe.status_code(e.value) == "io_error"
    (tmp_path / "model.safetensors").write_bytes(b"\xff" * 64)  # garbage header length
    with pytest.raises(fusedmoe.Error, match="io_error"):
        fusedmoe.Layer.from_checkpoint(str(tmp_path), 0, backend="cpu")
    with pytest.raises(fusedmoe.Error, match="io_error"):
        fusedmoe.Layer.from_checkpoint(str(tmp_path / "missing"), 0, backend="cpu")


def test_missing_tensor_is_named(tmp_path):
    rng = np.random.default_rng(2)
    _, t = qwen3_checkpoint(tmp_path, rng)
    del t["model.layers.0.mlp.experts.3.up_proj.weight"]
    write_safetensors(tmp_path / "model.safetensors", t)
    with pytest.raises(fusedmoe.Error, match="experts.3.up_proj"):
        fusedmoe.Layer.from_checkpoint(str(tmp_path), 0, backend="cpu")
