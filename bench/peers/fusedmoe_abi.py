"""ctypes binding of fusedmoe's C ABI (include/fusedmoe/fusedmoe.h, FUSEDMOE_ABI_VERSION 1).

No torch import here: tensors are described by (data pointer, dtype, device kind, device index,
shape, strides), so the same binding serves host buffers and torch CUDA tensors.

The structs below mirror fusedmoe.h field for field (ctypes applies the C alignment rules). Every
struct the caller fills starts with struct_size = sizeof(the struct *this* file declares); the
library reads only that many bytes. Calls where the library writes a whole struct of its own size
(fusedmoe_preset_config, *_init) get a buffer padded by 1 KiB so that a newer library with larger
structs cannot write past it.
"""

import ctypes
import os

ABI_VERSION = 1

# fusedmoe_status
OK = 0
STATUS_NAMES = {
    0: "ok", 1: "invalid_argument", 2: "invalid_shape", 3: "invalid_dtype", 4: "misaligned",
    5: "null_pointer", 6: "device_mismatch", 7: "unsupported_arch", 8: "workspace_too_small",
    9: "unsupported_config", 10: "cuda_error", 11: "out_of_memory", 12: "io_error",
}
DEVICE_MISMATCH = 6
# fusedmoe_dtype
F32, F16, BF16, I32 = 0, 1, 2, 3
# fusedmoe_device_kind
DEVICE_CPU, DEVICE_CUDA = 0, 1
# fusedmoe_backend
BACKEND_REFERENCE, BACKEND_CPU, BACKEND_CUDA = 0, 1, 2
# fusedmoe_routing_kind
ROUTING_SOFTMAX_TOPK, ROUTING_SIGMOID_TOPK, ROUTING_TOPK_SOFTMAX, ROUTING_PRECOMPUTED = 0, 1, 2, 3
# fusedmoe_weight_layout
LAYOUT_GATE_UP_ROWS = 0


class Tensor(ctypes.Structure):
    _fields_ = [
        ("data", ctypes.c_void_p),
        ("dtype", ctypes.c_int32),
        ("device_kind", ctypes.c_int32),
        ("device_index", ctypes.c_int32),
        ("rank", ctypes.c_int32),
        ("shape", ctypes.c_int64 * 4),
        ("strides", ctypes.c_int64 * 4),
    ]


class LayerConfig(ctypes.Structure):
    _fields_ = [
        ("struct_size", ctypes.c_uint32),
        ("hidden", ctypes.c_int64),
        ("intermediate", ctypes.c_int64),
        ("experts", ctypes.c_int64),
        ("top_k", ctypes.c_int64),
        ("routing_kind", ctypes.c_int32),
        ("renormalize", ctypes.c_int32),
        ("n_group", ctypes.c_int32),
        ("topk_group", ctypes.c_int32),
        ("scaling", ctypes.c_float),
        ("router_bias", ctypes.c_int32),
        ("correction_bias", ctypes.c_int32),
        ("activation", ctypes.c_int32),
        ("swiglu_limit", ctypes.c_float),
        ("swiglu_alpha", ctypes.c_float),
        ("expert_bias", ctypes.c_int32),
        ("shared_intermediate", ctypes.c_int64),
        ("shared_gated", ctypes.c_int32),
        ("dtype", ctypes.c_int32),
    ]


class Weights(ctypes.Structure):
    _fields_ = [
        ("struct_size", ctypes.c_uint32),
        ("layout", ctypes.c_int32),
        ("router", Tensor),
        ("router_bias", Tensor),
        ("correction_bias", Tensor),
        ("gate_up", Tensor),
        ("down", Tensor),
        ("w1", ctypes.POINTER(Tensor)),
        ("w3", ctypes.POINTER(Tensor)),
        ("w2", ctypes.POINTER(Tensor)),
        ("separate_count", ctypes.c_int64),
        ("gate_up_bias", Tensor),
        ("down_bias", Tensor),
        ("shared_gate", Tensor),
        ("shared_up", Tensor),
        ("shared_down", Tensor),
        ("shared_gate_weight", Tensor),
    ]


class ForwardArgs(ctypes.Structure):
    _fields_ = [
        ("struct_size", ctypes.c_uint32),
        ("x", Tensor),
        ("out", Tensor),
        ("workspace", ctypes.c_void_p),
        ("workspace_bytes", ctypes.c_size_t),
        ("topk_ids", Tensor),
        ("topk_weights", Tensor),
        ("ids_out", Tensor),
        ("weights_out", Tensor),
        ("stream", ctypes.c_void_p),
    ]


class _PaddedConfig(ctypes.Structure):
    _fields_ = [("c", LayerConfig), ("_pad", ctypes.c_uint8 * 1024)]


# name -> (restype, argtypes); every symbol the benchmark calls.
_SIGNATURES = {
    "fusedmoe_abi_version": (ctypes.c_uint32, []),
    "fusedmoe_status_string": (ctypes.c_char_p, [ctypes.c_int32]),
    "fusedmoe_last_error": (ctypes.c_char_p, []),
    "fusedmoe_backend_available": (ctypes.c_int, [ctypes.c_int32]),
    "fusedmoe_preset_config": (ctypes.c_int32, [ctypes.c_char_p, ctypes.c_void_p]),
    "fusedmoe_layer_config_init": (None, [ctypes.c_void_p]),
    "fusedmoe_layer_create": (ctypes.c_int32, [ctypes.c_void_p, ctypes.POINTER(Weights),
                                               ctypes.c_int32, ctypes.POINTER(ctypes.c_void_p)]),
    "fusedmoe_layer_destroy": (None, [ctypes.c_void_p]),
    "fusedmoe_layer_workspace_size": (ctypes.c_size_t, [ctypes.c_void_p, ctypes.c_int64]),
    "fusedmoe_layer_describe": (ctypes.c_size_t, [ctypes.c_void_p, ctypes.c_int64,
                                                  ctypes.c_char_p, ctypes.c_size_t]),
    "fusedmoe_layer_forward": (ctypes.c_int32, [ctypes.c_void_p, ctypes.POINTER(ForwardArgs)]),
}


class FusedMoeError(RuntimeError):
    def __init__(self, status, message):
        name = STATUS_NAMES.get(status, str(status))
        super().__init__(message if name in message else f"{name}: {message}")
        self.status = status


def tensor(data_ptr, dtype, device_kind, device_index, shape, strides=None):
    """A fusedmoe_tensor; strides in elements (row-major contiguous when None)."""
    t = Tensor()
    t.data = data_ptr
    t.dtype = dtype
    t.device_kind = device_kind
    t.device_index = device_index
    t.rank = len(shape)
    if strides is None:
        strides, s = [0] * len(shape), 1
        for d in range(len(shape) - 1, -1, -1):
            strides[d] = s
            s *= shape[d]
    for d, (n, st) in enumerate(zip(shape, strides)):
        t.shape[d] = n
        t.strides[d] = st
    return t


class Library:
    """The loaded shared library. Construction raises OSError / LookupError / RuntimeError with a
    readable message when the library cannot be used (absent file, missing symbol, ABI version)."""

    def __init__(self, path):
        if not os.path.exists(path):
            raise OSError(f"no shared library at {path}")
        self.path = path
        self.lib = ctypes.CDLL(path)
        missing = [name for name in _SIGNATURES if not hasattr(self.lib, name)]
        if missing:
            raise LookupError(f"{path} lacks the C ABI symbols: {', '.join(missing)}")
        for name, (res, args) in _SIGNATURES.items():
            fn = getattr(self.lib, name)
            fn.restype = res
            fn.argtypes = args
        version = self.lib.fusedmoe_abi_version()
        if version != ABI_VERSION:
            raise RuntimeError(f"{path} has ABI version {version}; this binding is for "
                               f"{ABI_VERSION}")

    def last_error(self):
        msg = self.lib.fusedmoe_last_error()
        return msg.decode(errors="replace") if msg else ""

    def check(self, status, what):
        if status != OK:
            raise FusedMoeError(status, f"{what}: {self.last_error()}")

    def backend_available(self, backend):
        return bool(self.lib.fusedmoe_backend_available(backend))

    def preset_config(self, name):
        """The preset's config (a LayerConfig with struct_size = sizeof(LayerConfig) here)."""
        buf = _PaddedConfig()
        self.check(self.lib.fusedmoe_preset_config(name.encode(), ctypes.byref(buf)),
                   f"fusedmoe_preset_config({name!r})")
        cfg = LayerConfig()
        ctypes.memmove(ctypes.byref(cfg), ctypes.byref(buf), ctypes.sizeof(LayerConfig))
        cfg.struct_size = ctypes.sizeof(LayerConfig)
        return cfg

    def default_config(self):
        buf = _PaddedConfig()
        self.lib.fusedmoe_layer_config_init(ctypes.byref(buf))
        cfg = LayerConfig()
        ctypes.memmove(ctypes.byref(cfg), ctypes.byref(buf), ctypes.sizeof(LayerConfig))
        cfg.struct_size = ctypes.sizeof(LayerConfig)
        return cfg


def new_weights():
    w = Weights()  # zero-filled: every tensor absent
    w.struct_size = ctypes.sizeof(Weights)
    w.layout = LAYOUT_GATE_UP_ROWS
    return w


def new_forward_args():
    a = ForwardArgs()
    a.struct_size = ctypes.sizeof(ForwardArgs)
    return a


class Layer:
    """An owned fusedmoe_layer*."""

    def __init__(self, library, config, weights, backend):
        self.library = library
        self.handle = ctypes.c_void_p()
        library.check(
            library.lib.fusedmoe_layer_create(ctypes.byref(config), ctypes.byref(weights),
                                              backend, ctypes.byref(self.handle)),
            "fusedmoe_layer_create")

    def workspace_size(self, tokens):
        return int(self.library.lib.fusedmoe_layer_workspace_size(self.handle, tokens))

    def describe(self, tokens):
        """What forward runs for `tokens` rows, in words (fusedmoe_layer_describe)."""
        size = 128
        while True:
            buf = ctypes.create_string_buffer(size)
            n = int(self.library.lib.fusedmoe_layer_describe(self.handle, tokens, buf, size))
            if n < size:
                return buf.value.decode()
            size = n + 1

    def forward(self, args):
        status = self.library.lib.fusedmoe_layer_forward(self.handle, ctypes.byref(args))
        if status != OK:
            raise FusedMoeError(status, f"fusedmoe_layer_forward: {self.library.last_error()}")

    def close(self):
        if self.handle:
            self.library.lib.fusedmoe_layer_destroy(self.handle)
            self.handle = ctypes.c_void_p()

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass
