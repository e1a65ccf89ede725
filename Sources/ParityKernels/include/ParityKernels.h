#ifndef PARITY_KERNELS_H
#define PARITY_KERNELS_H

#include <stddef.h>

// In-order float32 matrix product kernels (see ParityKernels.c).
//
// Every output element is 0 + a[i,0]·b[0,j] + a[i,1]·b[1,j] + … summed over k in order, one
// rounded multiply and one rounded add per step, never fused: the arithmetic of the reference
// BLAS that the mlx CPU wheel links. Vector lanes, register tiles and threads only decide which
// elements are computed together, never the order of any element's sum, so every kernel variant,
// every row count and every split across threads gives the same bits.

#ifdef __cplusplus
extern "C" {
#endif

/// Columns per packed panel of B, columns per strip of a panel, and rows per register tile of A.
enum { PK_PANEL = 64, PK_STRIP = 16, PK_TILE_ROWS = 6 };

/// Floats that hold a packed B of N columns and K rows: ceil(N / 64) panels of K × 64.
size_t pk_packed_b_count(int n, int k);

/// Where B[q, j] lives in a packed B of K rows: panel j / 64, strip (j % 64) / 16 of it, `[K][16]`.
/// A strip is contiguous so that a kernel walking 16 columns over k reads one stream.
static inline size_t pk_packed_b_index(int k, int q, int j) {
    return (size_t)(j / PK_PANEL) * (size_t)k * PK_PANEL + (size_t)((j % PK_PANEL) / PK_STRIP) * (size_t)k * PK_STRIP
        + (size_t)q * PK_STRIP + (size_t)(j % PK_STRIP);
}

/// Packs B into panels: panel p holds columns 64p … 64p+63 as four strips, each `[K][16]`
/// (`pk_packed_b_index`), zero-padded past N.
/// `w` is either a weight `[N, K]` (`transposed` = 1: B = wᵀ) or a matrix `[K, N]`
/// (`transposed` = 0: B = w), row-major with leading dimension `ld`.
void pk_pack_b(const float *w, int n, int k, int ld, int transposed, float *packed);

/// Floats that hold a packed A of M rows and K columns: ceil(M / 6) tiles of K × 6.
size_t pk_packed_a_count(int m, int k);

/// Packs A `[M, K]` (leading dimension `lda`) into row tiles `[K][6]`, zero-padded past M.
void pk_pack_a(const float *a, int m, int k, int lda, float *packed);

/// `c[M, N]` (leading dimension `ldc`) = A · B for packed A and B, panels
/// [first_panel, first_panel + panel_count) of B only (the columns one thread owns).
void pk_gemm(const float *packed_a, const float *packed_b, float *c, int ldc,
             int m, int n, int k, int first_panel, int panel_count);

/// One task of a parallel loop: `ctx` is the caller's, `task` in [0, tasks).
typedef void (*pk_task)(void *ctx, int task);

/// Runs `fn(ctx, i)` for every i in [0, tasks) on the persistent pool (the calling thread takes
/// tasks too) and returns when all are done. Tasks are taken dynamically, each exactly once.
/// A call made while another loop runs (nested or from another thread) runs inline.
void pk_parallel(int tasks, pk_task fn, void *ctx);

/// Starts the pool with `threads` threads in all (the caller included) unless it already runs;
/// without a call, the first loop starts it from QWEN_PARITY_THREADS (or one thread).
void pk_pool_start(int threads);

/// Threads of the pool, the caller included.
int pk_pool_threads(void);

/// `pk_gemm` over every panel, split into about `tasks_per_thread` tasks per pool thread.
void pk_gemm_parallel(const float *packed_a, const float *packed_b, float *c, int ldc,
                      int m, int n, int k, int tasks_per_thread);

/// The instruction set the kernel runs with: "avx512f", "avx2" or "generic". Chosen once from
/// the CPU, or by QWEN_PARITY_KERNEL when that names one the CPU has.
const char *pk_kernel_name(void);

/// Selects a kernel by name (tests and measurements); returns 0 when the CPU lacks it.
int pk_select_kernel(const char *name);

/// Benchmark only, never for parity: with `on`, every pk_gemm of the process runs a fused
/// multiply-add form of the selected kernel (AVX-512F or AVX2 with FMA): still in order over k,
/// still independent of row counts and thread splits, but one rounding per step instead of the
/// reference BLAS's two, so results differ from mlx's. Returns 0 when the CPU has no such form.
int pk_set_fused(int on);
int pk_fused(void);

#ifdef __cplusplus
}
#endif

#endif

#ifndef PARITY_KERNELS_GDN_H
#define PARITY_KERNELS_GDN_H
#ifdef __cplusplus
extern "C" {
#endif

/// The sequential gated delta rule of mlx-lm's ops path (gated_delta.py) over `steps` tokens of
/// one batch row and one value head, in the reference's arithmetic order:
///   s = state·g;  kv = Σ_j s·k (in order);  δ = (v − kv)·β;  s = s + k·δ;  y = Σ_j s·q (in order).
/// `state` is the recurrent state of the head as the caches hold it, `[dv][dk]`; the kernel works
/// on blocks of 16 rows copied to `[dk][16]`, elementwise across them. Token t reads q/k at
/// `t · qk_stride`, v and writes y at `t · vy_stride`, g and β at `t · gb_stride`. When `keep` is
/// given and keep[t] == 0 the step still writes y but leaves the state as it was. `scratch`
/// holds `pk_gated_delta_scratch(dk)` floats.
size_t pk_gated_delta_scratch(int dk);
void pk_gated_delta(float *state, int dk, int dv, int steps,
                    const float *q, const float *k, size_t qk_stride,
                    const float *v, float *y, size_t vy_stride,
                    const float *g, const float *beta, size_t gb_stride,
                    const unsigned char *keep, float *scratch);

/// `pk_gated_delta` for every (batch row, value head) of one call: state `[B, Hv, dv, dk]`,
/// q and k `[B, S, Hk, dk]`, v and y `[B, S, Hv, dv]`, g and β `[B, S, Hv]`, keep `[B, S]` or
/// null. Value head h reads key head h / (Hv / Hk). Heads are independent; with `parallel` they
/// are spread over the pool.
void pk_gated_delta_heads(float *state, int batch, int steps, int hk, int dk, int hv, int dv,
                          const float *q, const float *k, const float *v, float *y,
                          const float *g, const float *beta, const unsigned char *keep, int parallel);

#ifdef __cplusplus
}
#endif
#endif

#ifndef PARITY_KERNELS_ELEMENTWISE_H
#define PARITY_KERNELS_ELEMENTWISE_H
#ifdef __cplusplus
extern "C" {
#endif

/// `out[i] = silu(a[i]) · b[i]` with mlx's CPU exp (the Cephes polynomial with FMAs that
/// MLXMath.exp mirrors): silu(x) = x · σ(x), σ(x) = 1/(1 + e^|x|), mirrored for x ≥ 0.
/// Bit-identical to MLXMath / Activation.silu; `out` may alias `a` or `b`.
void pk_silu_mul(const float *a, const float *b, float *out, size_t n);

/// The depthwise causal convolution of the GatedDeltaNet with silu:
/// out[t, c] = silu(Σ_j in[t + j, c] · w_t[j, c]) for t < steps, summed over j in order.
/// `in` is `[steps + kernel − 1, channels]`, `w_t` the weight transposed to `[kernel, channels]`.
void pk_conv_silu(const float *in, const float *w_t, float *out, int steps, int channels, int kernel);

#ifdef __cplusplus
}
#endif
#endif

#ifndef PARITY_KERNELS_ENCODED_H
#define PARITY_KERNELS_ENCODED_H
#ifdef __cplusplus
extern "C" {
#endif

/// How a weight matrix `[N, K]` is stored in a checkpoint, read in place (memory-mapped) and
/// decoded to float32 a panel at a time: plain float32, bfloat16 or float16 (widened, exact), or
/// mlx's affine quantization (w = s·q + β per group, in the scales' dtype).
enum { PK_ENC_F32 = 0, PK_ENC_BF16 = 1, PK_ENC_F16 = 2, PK_ENC_AFFINE = 3 };
/// Element types of the affine scales and biases.
enum { PK_SCALE_F32 = 0, PK_SCALE_BF16 = 1, PK_SCALE_F16 = 2 };

typedef struct {
    const void *values;     // row r starts at values + r · row_bytes (any alignment)
    const void *scales;     // affine: row r's groups start at scales + r · (k / group) elements
    const void *biases;
    int k;                  // columns of the decoded matrix
    int encoding;           // PK_ENC_*
    int bits, group;        // affine only
    int scale_type;         // PK_SCALE_*, affine only
} pk_encoded;

/// Bytes one stored row takes.
size_t pk_encoded_row_bytes(const pk_encoded *m);

/// Row `r` decoded into `out[K]`: the bits mx.dequantize (or the exact widening) gives.
void pk_decode_row(const pk_encoded *m, int r, float *out);

/// Index of the first row in [0, rows) whose stored values (affine: scales or biases) hold a NaN
/// or an infinity, or -1. Affine weights are finite exactly when their scales and biases are.
long pk_first_nonfinite_row(const pk_encoded *m, int rows);

/// `c[M, N]` (leading dimension `ldc`) = A · Wᵀ for packed A (`pk_pack_a`) and an encoded W
/// `[N, K]`: each 64-row panel of W is decoded and multiplied by the in-order kernel, so every
/// element has the bits the dense product of the decoded W gives. Panels spread over the pool.
/// With M ≤ PK_FUSED_MAX_M (a decode step) W is decoded in registers and summed there, no
/// panel, in the same order and arithmetic, so the bits are the same.
void pk_gemm_encoded(const float *packed_a, const pk_encoded *w, float *c, int ldc, int m, int n, int parallel);

enum { PK_FUSED_MAX_M = 4 };

/// Measurements only: products with M ≤ `m` take the register path (0: none; the default is
/// PK_FUSED_MAX_M). Returns the previous bound. Either path gives the same bits.
int pk_set_encoded_fused_rows(int m);

/// This core's clock in Hz, measured by a chain of dependent adds (~0.2 s); 0 where not measured.
double pk_probe_clock_hz(void);

/// Cycles per 8 weights of the exact q4 sum at M = 1 run alone, every operand in L1 (the least
/// any q4 decode product can spend on this core at `clock_hz`); 0 where not measured.
double pk_probe_q4_floor_cycles_per_8(double clock_hz);

#ifdef __cplusplus
}
#endif
#endif
