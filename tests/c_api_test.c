/* The C ABI from C11 only: a preset shrunk to a small bf16 layer, weights filled here in the
 * gate_up_rows layout and freed right after the layer is created, the CPU backend checked
 * against the reference backend through the same calls, and error codes and messages for bad
 * calls. Prints "N passed, M failed" and exits non-zero on any failure. */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fusedmoe/fusedmoe.h"

static int passed = 0;
static int failed = 0;

#define CHECK(cond, msg)                                                                \
  do {                                                                                  \
    if (cond) {                                                                         \
      ++passed;                                                                         \
    } else {                                                                            \
      ++failed;                                                                         \
      fprintf(stderr, "%s:%d: CHECK(%s) failed: %s\n", __FILE__, __LINE__, #cond, msg); \
    }                                                                                   \
  } while (0)

enum { kT = 23, kH = 48, kI = 20, kE = 6, kK = 2 };

static uint64_t rng_state = 0x2545f4914f6cdd1dull;

/* uniform in [-1, 1) */
static float uniform(void) {
  rng_state = rng_state * 6364136223846793005ull + 1442695040888963407ull;
  return (float)((double)(rng_state >> 11) * 0x1p-53 * 2.0 - 1.0);
}

static uint16_t f32_to_bf16(float f) {
  uint32_t u;
  memcpy(&u, &f, sizeof u);
  u += 0x7fffu + ((u >> 16) & 1u); /* round to nearest even; inputs are finite */
  return (uint16_t)(u >> 16);
}

static float bf16_to_f32(uint16_t h) {
  const uint32_t u = (uint32_t)h << 16;
  float f;
  memcpy(&f, &u, sizeof f);
  return f;
}

static uint16_t* random_bf16(size_t n, float scale) {
  uint16_t* p = malloc(n * sizeof *p);
  for (size_t i = 0; i < n; ++i) p[i] = f32_to_bf16(uniform() * scale);
  return p;
}

static int contains(const char* haystack, const char* needle) {
  return haystack != NULL && strstr(haystack, needle) != NULL;
}

int main(void) {
  /* ---- a config from a preset, shrunk ---- */
  fusedmoe_layer_config cfg;
  CHECK(fusedmoe_preset_config("mixtral-8x7b", &cfg) == FUSEDMOE_OK, fusedmoe_last_error());
  CHECK(cfg.struct_size == sizeof cfg, "struct_size set");
  CHECK(cfg.hidden == 4096 && cfg.top_k == 2 && cfg.dtype == FUSEDMOE_BF16, "mixtral preset");
  cfg.hidden = kH;
  cfg.intermediate = kI;
  cfg.experts = kE;
  cfg.top_k = kK;

  /* the default config agrees on everything a preset does not set */
  fusedmoe_layer_config def;
  fusedmoe_layer_config_init(&def);
  CHECK(def.struct_size == sizeof def && def.scaling == 1.0f && def.n_group == 1,
        "fusedmoe_layer_config_init defaults");

  /* ---- weights in the gate_up_rows layout, filled here ---- */
  const int64_t router_shape[2] = {kE, kH};
  const int64_t gate_up_shape[3] = {kE, 2 * kI, kH};
  const int64_t down_shape[3] = {kE, kH, kI};
  uint16_t* router = random_bf16((size_t)kE * kH, 0.3f);
  uint16_t* gate_up = random_bf16((size_t)kE * 2 * kI * kH, 0.25f);
  uint16_t* down = random_bf16((size_t)kE * kH * kI, 0.35f);
  fusedmoe_weights w;
  fusedmoe_weights_init(&w);
  w.layout = FUSEDMOE_LAYOUT_GATE_UP_ROWS;
  w.router = fusedmoe_cpu_tensor(router, FUSEDMOE_BF16, 2, router_shape);
  w.gate_up = fusedmoe_cpu_tensor(gate_up, FUSEDMOE_BF16, 3, gate_up_shape);
  w.down = fusedmoe_cpu_tensor(down, FUSEDMOE_BF16, 3, down_shape);
  CHECK(w.gate_up.strides[0] == 2 * kI * kH && w.gate_up.strides[2] == 1,
        "fusedmoe_cpu_tensor is contiguous");

  fusedmoe_layer* cpu = NULL;
  fusedmoe_layer* ref = NULL;
  CHECK(fusedmoe_layer_create(&cfg, &w, FUSEDMOE_BACKEND_CPU, &cpu) == FUSEDMOE_OK,
        fusedmoe_last_error());
  CHECK(fusedmoe_layer_create(&cfg, &w, FUSEDMOE_BACKEND_REFERENCE, &ref) == FUSEDMOE_OK,
        fusedmoe_last_error());
  /* creation errors: code, no layer, a message naming the argument */
  fusedmoe_layer_config bad_cfg = cfg;
  bad_cfg.top_k = 0;
  fusedmoe_layer* none = (fusedmoe_layer*)&bad_cfg;
  CHECK(fusedmoe_layer_create(&bad_cfg, &w, FUSEDMOE_BACKEND_CPU, &none) ==
            FUSEDMOE_UNSUPPORTED_CONFIG,
        "k = 0");
  CHECK(none == NULL, "no layer on failure");
  CHECK(contains(fusedmoe_last_error(), "top_k"), fusedmoe_last_error());
  CHECK(fusedmoe_preset_config("no-such-preset", &bad_cfg) == FUSEDMOE_INVALID_ARGUMENT,
        "unknown preset");
  if (!fusedmoe_backend_available(FUSEDMOE_BACKEND_CUDA)) {
    CHECK(
        fusedmoe_layer_create(&cfg, &w, FUSEDMOE_BACKEND_CUDA, &none) == FUSEDMOE_UNSUPPORTED_ARCH,
        "no CUDA backend in this build");
  }

  /* the layer owns packed copies: scribble over the sources and free them */
  memset(router, 0xff, (size_t)kE * kH * 2);
  memset(gate_up, 0xff, (size_t)kE * 2 * kI * kH * 2);
  free(router);
  free(gate_up);
  free(down);
  fusedmoe_weights_init(&w); /* nothing left to point at */
  if (cpu == NULL || ref == NULL) {
    printf("%d passed, %d failed\n", passed, failed + 1);
    return 1;
  }

  /* ---- forward on both backends ---- */
  const int64_t x_shape[2] = {kT, kH};
  const int64_t k_shape[2] = {kT, kK};
  uint16_t* x = random_bf16((size_t)kT * kH, 1.0f);
  uint16_t* out = malloc((size_t)kT * kH * 2);
  float* out_ref = malloc((size_t)kT * kH * 4);
  int32_t ids[kT * kK], ids_ref[kT * kK];
  float wts[kT * kK], wts_ref[kT * kK];
  memset(out, 0xff, (size_t)kT * kH * 2); /* poison: NaN */
  memset(out_ref, 0xff, (size_t)kT * kH * 4);
  memset(ids, 0xff, sizeof ids);

  size_t ws_bytes = fusedmoe_layer_workspace_size(cpu, kT);
  CHECK(ws_bytes > 0, "the cpu backend needs a workspace");
  char what[64];
  size_t what_len = fusedmoe_layer_describe(cpu, kT, what, sizeof what);
  CHECK(what_len > 4 && what_len < sizeof what && strncmp(what, "cpu ", 4) == 0,
        "describe names the cpu backend");
  char cut[4] = {'x', 'x', 'x', 'x'};
  CHECK(fusedmoe_layer_describe(cpu, kT, cut, sizeof cut) == what_len && cut[3] == '\0' &&
            strncmp(cut, what, 3) == 0,
        "describe cuts to the buffer and returns the whole length");
  CHECK(fusedmoe_layer_describe(cpu, 0, what, sizeof what) == 0 && what[0] == '\0',
        "describe is empty at T = 0");
  void* ws = malloc(ws_bytes);
  fusedmoe_forward_args a;
  fusedmoe_forward_args_init(&a);
  a.x = fusedmoe_cpu_tensor(x, FUSEDMOE_BF16, 2, x_shape);
  a.out = fusedmoe_cpu_tensor(out, FUSEDMOE_BF16, 2, x_shape);
  a.ids_out = fusedmoe_cpu_tensor(ids, FUSEDMOE_I32, 2, k_shape);
  a.weights_out = fusedmoe_cpu_tensor(wts, FUSEDMOE_F32, 2, k_shape);
  a.workspace = ws;
  a.workspace_bytes = ws_bytes;
  CHECK(fusedmoe_layer_forward(cpu, &a) == FUSEDMOE_OK, fusedmoe_last_error());

  fusedmoe_forward_args r;
  fusedmoe_forward_args_init(&r);
  r.x = a.x;
  r.out = fusedmoe_cpu_tensor(out_ref, FUSEDMOE_F32, 2, x_shape); /* the reference writes f32 */
  r.ids_out = fusedmoe_cpu_tensor(ids_ref, FUSEDMOE_I32, 2, k_shape);
  r.weights_out = fusedmoe_cpu_tensor(wts_ref, FUSEDMOE_F32, 2, k_shape);
  CHECK(fusedmoe_layer_forward(ref, &r) == FUSEDMOE_OK, fusedmoe_last_error());

  /* bf16 tolerance (CONTRACT.md): per element 1e-5 + 1.6e-2 |ref|, global 1e-2 */
  int bad = 0, unwritten = 0;
  double err2 = 0, ref2 = 0;
  for (int i = 0; i < kT * kH; ++i) {
    const double o = bf16_to_f32(out[i]), f = out_ref[i];
    if (out[i] == 0xffff || isnan(o)) ++unwritten;
    if (fabs(o - f) > 1e-5 + 1.6e-2 * fabs(f)) ++bad;
    err2 += (o - f) * (o - f);
    ref2 += f * f;
  }
  CHECK(unwritten == 0, "every output element written");
  CHECK(bad == 0, "cpu within bf16 tolerance of the reference");
  CHECK(ref2 > 0 && sqrt(err2 / ref2) <= 1e-2, "global relative error");
  int id_mismatch = 0, w_mismatch = 0;
  for (int t = 0; t < kT; ++t) {
    /* k = 2: compare as sets */
    const int32_t* a_ids = ids + t * kK;
    const int32_t* b_ids = ids_ref + t * kK;
    const int swapped = a_ids[0] == b_ids[1] && a_ids[1] == b_ids[0];
    if (!((a_ids[0] == b_ids[0] && a_ids[1] == b_ids[1]) || swapped)) {
      ++id_mismatch;
      continue;
    }
    for (int j = 0; j < kK; ++j) {
      const float want = wts_ref[t * kK + (swapped ? 1 - j : j)];
      if (fabsf(wts[t * kK + j] - want) > 1e-5f + 1e-4f * want) ++w_mismatch;
    }
  }
  CHECK(id_mismatch == 0, "routing ids match the reference");
  CHECK(w_mismatch == 0, "routing weights match the reference");
  CHECK(fusedmoe_layer_take_invalid_id_count(cpu) == 0, "no invalid ids");

  /* ---- errors ---- */
  fusedmoe_forward_args bad_args = a;
  const int64_t wrong_shape[2] = {kT, kH + 1};
  bad_args.x = fusedmoe_cpu_tensor(x, FUSEDMOE_BF16, 2, wrong_shape);
  memset(out, 0xff, (size_t)kT * kH * 2);
  CHECK(fusedmoe_layer_forward(cpu, &bad_args) == FUSEDMOE_INVALID_SHAPE, "x of the wrong width");
  CHECK(contains(fusedmoe_last_error(), "x must be"), fusedmoe_last_error());
  CHECK(out[0] == 0xffff && out[kT * kH - 1] == 0xffff, "a failed forward leaves out untouched");
  CHECK(strcmp(fusedmoe_status_string(FUSEDMOE_INVALID_SHAPE), "invalid_shape") == 0,
        "status string");

  bad_args = a;
  bad_args.workspace_bytes = ws_bytes - 1;
  CHECK(fusedmoe_layer_forward(cpu, &bad_args) == FUSEDMOE_WORKSPACE_TOO_SMALL, "workspace");
  CHECK(contains(fusedmoe_last_error(), "workspace"), fusedmoe_last_error());
  CHECK(fusedmoe_layer_forward(NULL, &a) == FUSEDMOE_NULL_POINTER, "null layer");

  /* T = 0: ok, nothing written */
  const int64_t empty_shape[2] = {0, kH};
  bad_args = a;
  bad_args.x = fusedmoe_cpu_tensor(x, FUSEDMOE_BF16, 2, empty_shape);
  bad_args.out = fusedmoe_cpu_tensor(out, FUSEDMOE_BF16, 2, empty_shape);
  bad_args.ids_out.data = NULL;
  bad_args.ids_out.rank = 0;
  bad_args.weights_out.data = NULL;
  bad_args.weights_out.rank = 0;
  CHECK(fusedmoe_layer_forward(cpu, &bad_args) == FUSEDMOE_OK, fusedmoe_last_error());
  CHECK(out[0] == 0xffff, "T = 0 writes nothing");

  /* Values outside an enum: legal in C, and the ABI must refuse them. Last, because a library
   * that loads them as C++ enum values has undefined behaviour (UBSan stops here). */
  CHECK(fusedmoe_layer_forward(cpu, &a) == FUSEDMOE_OK, fusedmoe_last_error());
  fusedmoe_layer* other = NULL;
  CHECK(fusedmoe_backend_available((fusedmoe_backend)9) == 0, "backend 9 is not available");
  CHECK(fusedmoe_status_string((fusedmoe_status)1234) != NULL, "status string of a bad code");
  CHECK(fusedmoe_layer_create(&cfg, &w, (fusedmoe_backend)7, &other) == FUSEDMOE_INVALID_ARGUMENT,
        "backend 7");

  fusedmoe_layer_destroy(cpu);
  fusedmoe_layer_destroy(ref);
  free(ws);
  free(x);
  free(out);
  free(out_ref);
  printf("%d passed, %d failed\n", passed, failed);
  return failed == 0 ? 0 : 1;
}
