/* Selective scan (Mamba-1) for the CPU: forward and backward, fp32, time-major.
 *
 * Why hand-written C: mamba_ssm's kernels are CUDA-only, and the scan expressed as PyTorch operations is bound by
 * per-operation overhead and memory traffic (five passes over a (tile, d_state, d_inner) state per time step). Here
 * one loop keeps a block of W channels' states in registers for the whole sequence: per (step, state, channel) one
 * exp2, two multiply-adds and one multiply-add into the output, vectorised over the W channels.
 *
 * Compiled on first use by polsess_hf/models/spmamba/native.py (gcc/cc, -O3 -march=native), called through ctypes
 * (the GIL is released during the call, so Python worker threads run batch tiles in parallel).
 *
 * Layouts (all contiguous, float32):
 *   dt, v, y, grad_dt, grad_v, grad_y : (seq_len, batch, d_inner)      dt = softplus(delta + bias), v = dt * u
 *   Bm, Cm, grad_B, grad_C            : (seq_len, batch, d_state)
 *   A2t                               : (d_state, d_inner)  = A^T * log2(e)   (exp(dt*A) = exp2(dt*A2))
 *   At, grad_At                       : (d_state, d_inner)  = A^T
 *   chunk_states                      : (batch, n_chunks, d_state, d_inner)  state entering every chunk
 * Recurrence per channel d and state n:  s_t = exp(dt_t*A) * s_{t-1} + B_t[n] * v_t[d];  y_t[d] = sum_n C_t[n] s_t
 * Each call handles the sequences [b0, b1); grad_B and grad_C must be zero on entry (accumulated over channel
 * blocks), grad_At is this call's own accumulator (the caller sums the per-call buffers).
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#ifndef SCAN_W
#define SCAN_W 8
#endif
#define W SCAN_W
#define MAX_STATE 64

/* 2^x for x <= 0, relative error < 2e-7 (degree-7 Taylor on [-1/2, 1/2] after rounding). Inputs below -126 give
 * 2^-126 (a state that has forgotten everything keeps < 1.2e-38 of itself); NaN stays NaN. */
static inline float exp2_decay(float x) {
    x = x < -126.0f ? -126.0f : x;
    x = x > 126.0f ? 126.0f : x;
    float xi = __builtin_rintf(x);
    float f = (x - xi) * 0.69314718055994531f;
    float p = 1.0f / 5040.0f;
    p = p * f + 1.0f / 720.0f;
    p = p * f + 1.0f / 120.0f;
    p = p * f + 1.0f / 24.0f;
    p = p * f + 1.0f / 6.0f;
    p = p * f + 0.5f;
    p = p * f + 1.0f;
    p = p * f + 1.0f;
    uint32_t bits = ((uint32_t)(int32_t)xi + 127u) << 23; /* unsigned: no overflow UB for NaN */
    float scale;
    memcpy(&scale, &bits, sizeof scale);
    return p * scale;
}

int selective_scan_cpu_block_width(void) { return W; }

void selective_scan_cpu_forward(const float *dt, const float *v, const float *A2t, const float *Bm, const float *Cm,
                                float *y, float *chunk_states, int64_t seq_len, int64_t batch, int64_t d_inner,
                                int64_t d_state, int64_t chunk, int64_t b0, int64_t b1) {
    const int64_t n_chunks = (seq_len + chunk - 1) / chunk;
    float s[MAX_STATE][W] __attribute__((aligned(32)));
    float a2[MAX_STATE][W] __attribute__((aligned(32)));
    for (int64_t b = b0; b < b1; ++b) {
        for (int64_t d0 = 0; d0 < d_inner; d0 += W) {
            for (int64_t n = 0; n < d_state; ++n)
                for (int w = 0; w < W; ++w) {
                    s[n][w] = 0.0f;
                    a2[n][w] = A2t[n * d_inner + d0 + w];
                }
            for (int64_t t = 0; t < seq_len; ++t) {
                if (chunk_states && t % chunk == 0) {
                    float *out = chunk_states + ((b * n_chunks + t / chunk) * d_state) * d_inner + d0;
                    for (int64_t n = 0; n < d_state; ++n) memcpy(out + n * d_inner, s[n], sizeof s[n]);
                }
                const int64_t row = t * batch + b;
                const float *dtp = dt + row * d_inner + d0, *vp = v + row * d_inner + d0;
                const float *Bp = Bm + row * d_state, *Cp = Cm + row * d_state;
                float dtw[W], vw[W], acc[W];
                for (int w = 0; w < W; ++w) {
                    dtw[w] = dtp[w];
                    vw[w] = vp[w];
                    acc[w] = 0.0f;
                }
                for (int64_t n = 0; n < d_state; ++n) {
                    const float bn = Bp[n], cn = Cp[n];
#pragma omp simd
                    for (int w = 0; w < W; ++w) {
                        const float state = exp2_decay(dtw[w] * a2[n][w]) * s[n][w] + bn * vw[w];
                        s[n][w] = state;
                        acc[w] += cn * state;
                    }
                }
                float *yp = y + row * d_inner + d0;
                for (int w = 0; w < W; ++w) yp[w] = acc[w];
            }
        }
    }
}

/* Reverse-time adjoint. Per chunk, the states and decays are recomputed from the chunk's entry state into a small
 * buffer (chunk * d_state * W floats each), then walked backwards:
 *   h_t = carry + C_t (x) g_t                       (dL/ds_t)
 *   grad_C_t[n] += sum_d s_t g_t,   grad_B_t[n] += sum_d h_t v_t,   grad_v_t[d] = sum_n h_t B_t
 *   carry = e^{a_t} h_t                             (dL/ds_{t-1})
 *   dL/da_t = carry * s_{t-1}:  grad_A += dL/da_t * dt_t,  grad_dt_t[d] = sum_n dL/da_t * A   (a_t = dt_t * A)
 * Returns 0, or 1 if the work buffer could not be allocated. */
int selective_scan_cpu_backward(const float *dt, const float *v, const float *A2t, const float *At, const float *Bm,
                                const float *Cm, const float *chunk_states, const float *grad_y, float *grad_dt,
                                float *grad_v, float *grad_B, float *grad_C, float *grad_At, int64_t seq_len,
                                int64_t batch, int64_t d_inner, int64_t d_state, int64_t chunk, int64_t b0, int64_t b1) {
    const int64_t n_chunks = (seq_len + chunk - 1) / chunk;
    const int64_t block = d_state * W;
    float *states = (float *)aligned_alloc(32, sizeof(float) * (size_t)(2 * chunk * block + 32));
    if (!states) return 1;
    float *decays = states + chunk * block;
    float carry[MAX_STATE][W] __attribute__((aligned(32)));
    float entry[MAX_STATE][W] __attribute__((aligned(32)));
    float a2[MAX_STATE][W] __attribute__((aligned(32)));
    float a[MAX_STATE][W] __attribute__((aligned(32)));
    for (int64_t b = b0; b < b1; ++b) {
        for (int64_t d0 = 0; d0 < d_inner; d0 += W) {
            for (int64_t n = 0; n < d_state; ++n)
                for (int w = 0; w < W; ++w) {
                    carry[n][w] = 0.0f;
                    a2[n][w] = A2t[n * d_inner + d0 + w];
                    a[n][w] = At[n * d_inner + d0 + w];
                }
            for (int64_t c = n_chunks - 1; c >= 0; --c) {
                const int64_t t0 = c * chunk, t1 = t0 + chunk < seq_len ? t0 + chunk : seq_len;
                const float *saved = chunk_states + ((b * n_chunks + c) * d_state) * d_inner + d0;
                for (int64_t n = 0; n < d_state; ++n) memcpy(entry[n], saved + n * d_inner, sizeof entry[n]);
                /* recompute the chunk's states and decays */
                for (int64_t t = t0; t < t1; ++t) {
                    const int64_t row = t * batch + b;
                    const float *dtp = dt + row * d_inner + d0, *vp = v + row * d_inner + d0;
                    const float *Bp = Bm + row * d_state;
                    const float *prev = t == t0 ? &entry[0][0] : states + (t - t0 - 1) * block;
                    float *cur = states + (t - t0) * block, *dec = decays + (t - t0) * block;
                    for (int64_t n = 0; n < d_state; ++n) {
                        const float bn = Bp[n];
#pragma omp simd
                        for (int w = 0; w < W; ++w) {
                            const float decay = exp2_decay(dtp[w] * a2[n][w]);
                            dec[n * W + w] = decay;
                            cur[n * W + w] = decay * prev[n * W + w] + bn * vp[w];
                        }
                    }
                }
                for (int64_t t = t1 - 1; t >= t0; --t) {
                    const int64_t row = t * batch + b;
                    const float *dtp = dt + row * d_inner + d0, *vp = v + row * d_inner + d0;
                    const float *gyp = grad_y + row * d_inner + d0;
                    const float *Bp = Bm + row * d_state, *Cp = Cm + row * d_state;
                    const float *cur = states + (t - t0) * block, *dec = decays + (t - t0) * block;
                    const float *prev = t == t0 ? &entry[0][0] : states + (t - t0 - 1) * block;
                    float gv[W], gdt[W], gy[W], dtw[W], vw[W];
                    for (int w = 0; w < W; ++w) {
                        gv[w] = 0.0f;
                        gdt[w] = 0.0f;
                        gy[w] = gyp[w];
                        dtw[w] = dtp[w];
                        vw[w] = vp[w];
                    }
                    float *gBp = grad_B + row * d_state, *gCp = grad_C + row * d_state;
                    for (int64_t n = 0; n < d_state; ++n) {
                        const float bn = Bp[n], cn = Cp[n];
                        float *gA = grad_At + n * d_inner + d0;
                        float gc = 0.0f, gb = 0.0f;
#pragma omp simd reduction(+ : gc, gb)
                        for (int w = 0; w < W; ++w) {
                            const float h = carry[n][w] + cn * gy[w];
                            gc += cur[n * W + w] * gy[w];
                            gb += h * vw[w];
                            gv[w] += h * bn;
                            const float back = dec[n * W + w] * h;
                            carry[n][w] = back;
                            const float g_decay = back * prev[n * W + w];
                            gA[w] += g_decay * dtw[w];
                            gdt[w] += g_decay * a[n][w];
                        }
                        gCp[n] += gc;
                        gBp[n] += gb;
                    }
                    float *gvp = grad_v + row * d_inner + d0, *gdtp = grad_dt + row * d_inner + d0;
                    for (int w = 0; w < W; ++w) {
                        gvp[w] = gv[w];
                        gdtp[w] = gdt[w];
                    }
                }
            }
        }
    }
    free(states);
    return 0;
}
