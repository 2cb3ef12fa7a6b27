/* fusedmoe's stable C ABI.
 *
 * Opaque handles, plain structs and status codes; no C++ types cross this boundary and no
 * function aborts or throws. Structs only ever grow at their end, and every struct a caller fills
 * starts with `struct_size` (set it to sizeof the struct your header declares), so a library
 * newer than your header still reads your call correctly; a size that no header has is refused,
 * since it would cut a field in two. The message of the last failed call on the calling thread is
 * fusedmoe_last_error(). Every enum spans 32 bits (its *_MAX_ENUM value), so any int32 a caller
 * passes is a defined value, and values out of range are rejected.
 *
 *   fusedmoe_layer_config cfg;
 *   fusedmoe_preset_config("qwen3-30b-a3b", &cfg);
 *   fusedmoe_layer* layer;
 *   if (fusedmoe_layer_create(&cfg, &weights, FUSEDMOE_BACKEND_CPU, &layer) != FUSEDMOE_OK)
 *     fprintf(stderr, "%s\n", fusedmoe_last_error());
 */
#ifndef FUSEDMOE_FUSEDMOE_H_
#define FUSEDMOE_FUSEDMOE_H_

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define FUSEDMOE_ABI_VERSION 1

typedef enum fusedmoe_status {
  FUSEDMOE_OK = 0,
  FUSEDMOE_INVALID_ARGUMENT = 1,
  FUSEDMOE_INVALID_SHAPE = 2,
  FUSEDMOE_INVALID_DTYPE = 3,
  FUSEDMOE_MISALIGNED = 4,
  FUSEDMOE_NULL_POINTER = 5,
  FUSEDMOE_DEVICE_MISMATCH = 6,
  FUSEDMOE_UNSUPPORTED_ARCH = 7,
  FUSEDMOE_WORKSPACE_TOO_SMALL = 8,
  FUSEDMOE_UNSUPPORTED_CONFIG = 9,
  FUSEDMOE_CUDA_ERROR = 10,
  FUSEDMOE_OUT_OF_MEMORY = 11,
  FUSEDMOE_IO_ERROR = 12,
  FUSEDMOE_STATUS_MAX_ENUM = 0x7fffffff
} fusedmoe_status;

typedef enum fusedmoe_dtype {
  FUSEDMOE_F32 = 0,
  FUSEDMOE_F16 = 1,
  FUSEDMOE_BF16 = 2,
  FUSEDMOE_I32 = 3,
  FUSEDMOE_DTYPE_MAX_ENUM = 0x7fffffff
} fusedmoe_dtype;

typedef enum fusedmoe_device_kind {
  FUSEDMOE_DEVICE_CPU = 0,
  FUSEDMOE_DEVICE_CUDA = 1,
  FUSEDMOE_DEVICE_KIND_MAX_ENUM = 0x7fffffff
} fusedmoe_device_kind;

typedef enum fusedmoe_backend {
  FUSEDMOE_BACKEND_REFERENCE = 0,
  FUSEDMOE_BACKEND_CPU = 1,
  FUSEDMOE_BACKEND_CUDA = 2,
  FUSEDMOE_BACKEND_MAX_ENUM = 0x7fffffff
} fusedmoe_backend;

typedef enum fusedmoe_routing_kind {
  FUSEDMOE_ROUTING_SOFTMAX_TOPK = 0,
  FUSEDMOE_ROUTING_SIGMOID_TOPK = 1,
  FUSEDMOE_ROUTING_TOPK_SOFTMAX = 2,
  FUSEDMOE_ROUTING_PRECOMPUTED = 3,
  FUSEDMOE_ROUTING_KIND_MAX_ENUM = 0x7fffffff
} fusedmoe_routing_kind;

typedef enum fusedmoe_activation {
  FUSEDMOE_ACTIVATION_SWIGLU = 0,
  FUSEDMOE_ACTIVATION_GEGLU = 1,
  FUSEDMOE_ACTIVATION_SWIGLU_OSS = 2,
  FUSEDMOE_ACTIVATION_MAX_ENUM = 0x7fffffff
} fusedmoe_activation;

typedef enum fusedmoe_weight_layout {
  FUSEDMOE_LAYOUT_GATE_UP_ROWS = 0,
  FUSEDMOE_LAYOUT_UP_GATE_ROWS = 1,
  FUSEDMOE_LAYOUT_INTERLEAVED_COLS = 2,
  FUSEDMOE_LAYOUT_SEPARATE = 3,
  FUSEDMOE_WEIGHT_LAYOUT_MAX_ENUM = 0x7fffffff
} fusedmoe_weight_layout;

/* A non-owning tensor reference; strides in elements. data == NULL and rank == 0: absent. */
typedef struct fusedmoe_tensor {
  void* data;
  int32_t dtype;       /* fusedmoe_dtype */
  int32_t device_kind; /* fusedmoe_device_kind */
  int32_t device_index;
  int32_t rank; /* 0..4 */
  int64_t shape[4];
  int64_t strides[4];
} fusedmoe_tensor;

/* Mirrors fusedmoe::LayerConfig (config.hpp documents each field). */
typedef struct fusedmoe_layer_config {
  uint32_t struct_size;
  int64_t hidden;
  int64_t intermediate;
  int64_t experts;
  int64_t top_k;
  int32_t routing_kind; /* fusedmoe_routing_kind */
  int32_t renormalize;
  int32_t n_group;
  int32_t topk_group;
  float scaling;
  int32_t router_bias;
  int32_t correction_bias;
  int32_t activation; /* fusedmoe_activation */
  float swiglu_limit;
  float swiglu_alpha;
  int32_t expert_bias;
  int64_t shared_intermediate;
  int32_t shared_gated;
  int32_t dtype; /* fusedmoe_dtype */
} fusedmoe_layer_config;

/* Mirrors fusedmoe::WeightSet (weights.hpp). For FUSEDMOE_LAYOUT_SEPARATE, w1/w3/w2 point at
 * `experts` tensors each. */
typedef struct fusedmoe_weights {
  uint32_t struct_size;
  int32_t layout; /* fusedmoe_weight_layout */
  fusedmoe_tensor router;
  fusedmoe_tensor router_bias;
  fusedmoe_tensor correction_bias;
  fusedmoe_tensor gate_up;
  fusedmoe_tensor down;
  const fusedmoe_tensor* w1;
  const fusedmoe_tensor* w3;
  const fusedmoe_tensor* w2;
  int64_t separate_count;
  fusedmoe_tensor gate_up_bias;
  fusedmoe_tensor down_bias;
  fusedmoe_tensor shared_gate;
  fusedmoe_tensor shared_up;
  fusedmoe_tensor shared_down;
  fusedmoe_tensor shared_gate_weight;
} fusedmoe_weights;

/* Mirrors fusedmoe::ForwardArgs (layer.hpp). */
typedef struct fusedmoe_forward_args {
  uint32_t struct_size;
  fusedmoe_tensor x;
  fusedmoe_tensor out;
  void* workspace;
  size_t workspace_bytes;
  fusedmoe_tensor topk_ids;
  fusedmoe_tensor topk_weights;
  fusedmoe_tensor ids_out;
  fusedmoe_tensor weights_out;
  void* stream;
} fusedmoe_forward_args;

typedef struct fusedmoe_layer fusedmoe_layer;

uint32_t fusedmoe_abi_version(void);
/* "invalid_shape", ...; never NULL. */
const char* fusedmoe_status_string(fusedmoe_status status);
/* The message of the last failed call on this thread ("" if none); valid until the next call. */
const char* fusedmoe_last_error(void);
int fusedmoe_backend_available(fusedmoe_backend backend);

/* A contiguous tensor reference on the CPU (helper for callers). */
fusedmoe_tensor fusedmoe_cpu_tensor(void* data, fusedmoe_dtype dtype, int32_t rank,
                                    const int64_t* shape);

/* Presets: names by index 0..count-1, and their configs. */
int32_t fusedmoe_preset_count(void);
const char* fusedmoe_preset_name(int32_t index);
fusedmoe_status fusedmoe_preset_config(const char* name, fusedmoe_layer_config* config);
/* A config with every field at its default (config.hpp) and struct_size set. */
void fusedmoe_layer_config_init(fusedmoe_layer_config* config);
void fusedmoe_weights_init(fusedmoe_weights* weights);
void fusedmoe_forward_args_init(fusedmoe_forward_args* args);

/* Packs `weights` for `backend` and creates the layer; the weights may be freed afterwards. */
fusedmoe_status fusedmoe_layer_create(const fusedmoe_layer_config* config,
                                      const fusedmoe_weights* weights, fusedmoe_backend backend,
                                      fusedmoe_layer** layer);
void fusedmoe_layer_destroy(fusedmoe_layer* layer);
size_t fusedmoe_layer_workspace_size(const fusedmoe_layer* layer, int64_t tokens);
/* What forward runs for `tokens` rows, in words (Layer::describe; not a stable format), as a
   NUL-terminated string in `buffer` (cut to size - 1 characters; nothing written when size is 0).
   Returns the whole string's length, as snprintf does: a larger buffer is needed when it is >=
   size. */
size_t fusedmoe_layer_describe(const fusedmoe_layer* layer, int64_t tokens, char* buffer,
                               size_t size);
fusedmoe_status fusedmoe_layer_forward(const fusedmoe_layer* layer,
                                       const fusedmoe_forward_args* args);
int64_t fusedmoe_layer_take_invalid_id_count(const fusedmoe_layer* layer);

#ifdef __cplusplus
}
#endif

#endif /* FUSEDMOE_FUSEDMOE_H_ */
