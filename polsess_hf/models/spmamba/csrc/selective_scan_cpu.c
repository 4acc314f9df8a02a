/* The Mamba-1 mixer core for the CPU (mamba_backend="cpu"): forward and backward, fp32, time-major.
 *
 * Why hand-written C: mamba_ssm's kernels are CUDA-only, and as PyTorch operations the selective scan is bound by
 * per-operation overhead and memory traffic (five passes over a (batch, d_state, d_inner) state per time step),
 * and the element-wise work around it by ~15 passes over the model's largest tensors. Here each value is computed
 * in registers where it is used: per (step, state, channel) one exp2 and three multiply-adds, vectorised over
 * blocks of W channels.
 *
 * Two kernels:
 *   mamba_conv_silu_*  x = SiLU(conv_bias + sum_k w_k * xin_{t-(K-1)+k})      causal depthwise convolution
 *   mamba_scan_*       dt = softplus(delta + dt_bias), v = dt * u   (forward: delta given, or NULL and computed
 *                      per row from the Δ projection's input rows: delta = dt_in · dt_wt, dt_wt (dt_rank, d_inner))
 *                      s_t = exp(dt_t A) s_{t-1} + B_t v_t,  y_t = <C_t, s_t>   per channel d and state n
 *                      out = (y + D * u) * SiLU(z)                               (D and z optional: NULL)
 * Compiled on first use by polsess_hf/models/spmamba/native.py (cc, -O3 -march=native) and called through ctypes:
 * the GIL is released during a call, so Python worker threads run batch tiles [b0, b1) in parallel.
 *
 * Layouts: time-major rows r = t * batch + b. u, delta, out and all their gradients are contiguous
 * (seq_len, batch, d_inner); xin, z, B and C are rows at a stride (column slices of the projections' outputs,
 * read in place). A2t = A^T * log2(e) and At = A^T are (d_state, d_inner); chunk_states (batch, n_chunks, d_state,
 * d_inner) hold the state entering every chunk, from which the backward pass recomputes each chunk. Gradients of
 * B and C must be zero on entry (accumulated over channel blocks); the weight, bias, A and D gradients are
 * accumulated into per-call buffers that the caller sums.
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

static inline float exp_any(float x) { return exp2_decay(x * 1.44269504088896341f); }

static inline float sigmoid(float x) { return 1.0f / (1.0f + exp_any(-x)); }

/* softplus(x) = max(x, 0) + log1p(exp(-|x|)); log1p(e) for e in (0, 1] as 2 atanh(e / (2 + e)) (odd series to
 * s^11, s <= 1/3: error < 1e-7 of log 2). Equals torch's softplus (threshold 20) to fp32 rounding. */
static inline float softplus(float x) {
    const float ax = x < 0.0f ? -x : x;
    const float e = exp_any(-ax);
    const float s = e / (2.0f + e), s2 = s * s;
    float p = 1.0f / 11.0f;
    p = p * s2 + 1.0f / 9.0f;
    p = p * s2 + 1.0f / 7.0f;
    p = p * s2 + 1.0f / 5.0f;
    p = p * s2 + 1.0f / 3.0f;
    p = p * s2 + 1.0f;
    return (x > 0.0f ? x : 0.0f) + 2.0f * s * p;
}

#ifdef __AVX2__
#include <immintrin.h>
/* 2^x for x <= 0 (the decays exp(dt A), A < 0), 8 lanes, relative error < 2.3e-7: a degree-5 polynomial for 2^f on
 * [-1/2, 1/2] (two multiply-adds fewer than exp2_decay, whose range reduction also needs a multiply by ln 2) with
 * the integer part added to the exponent bits. The polynomial is 1 + f q(f), fitted for relative error / |f|: a
 * decay close to 1 (a state with a long memory, multiplied thousands of times) is then exact to rounding
 * (< 6e-8 for |f| < 0.01), where a plain minimax fit was off by a constant 1.2e-7. x below -126 (and -inf) gives 2^-126;
 * NaN stays NaN (max returns its second operand when one is NaN; NaN converts to INT_MIN, whose shifted bits are 0). */
static inline __m256 exp2_neg8(__m256 x) {
    x = _mm256_max_ps(_mm256_set1_ps(-126.0f), x);
    const __m256 xi = _mm256_round_ps(x, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    const __m256 f = _mm256_sub_ps(x, xi);
    __m256 p = _mm256_set1_ps(0.0013266975292935967f);
    p = _mm256_fmadd_ps(p, f, _mm256_set1_ps(0.009665878489613533f));
    p = _mm256_fmadd_ps(p, f, _mm256_set1_ps(0.05550665408372879f));
    p = _mm256_fmadd_ps(p, f, _mm256_set1_ps(0.24022358655929565f));
    p = _mm256_fmadd_ps(p, f, _mm256_set1_ps(0.6931470632553101f));
    p = _mm256_fmadd_ps(p, f, _mm256_set1_ps(1.0f));
    const __m256i e = _mm256_slli_epi32(_mm256_cvtps_epi32(xi), 23);
    return _mm256_castsi256_ps(_mm256_add_epi32(_mm256_castps_si256(p), e));
}
#endif

/* One time step of one block of W channels: s (d_state rows at stride ld) <- exp(dt A) s + B_t v, and
 * acc <- <C_t, s>. With AVX2, four states at a time (four independent exp2 chains in flight: the single-chain loop
 * was latency-bound, 0.93 vs 1.35 G state updates/s on one core). */
static inline void scan_step_block(float *s, int64_t ld, const float *a2t, int64_t d_state, const float *dtw,
                                   const float *vw, const float *Bp, const float *Cp, float *acc) {
#ifdef __AVX2__
    if (W == 8 && d_state % 4 == 0) {
        const __m256 dt = _mm256_loadu_ps(dtw), v = _mm256_loadu_ps(vw);
        __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps();
        for (int64_t n = 0; n < d_state; n += 4) {
            float *sp = s + n * ld;
            const float *a2 = a2t + n * ld;
            __m256 st[4];
            for (int k = 0; k < 4; ++k) {
                const __m256 decay = exp2_neg8(_mm256_mul_ps(dt, _mm256_loadu_ps(a2 + k * ld)));
                const __m256 input = _mm256_mul_ps(_mm256_set1_ps(Bp[n + k]), v);
                st[k] = _mm256_fmadd_ps(decay, _mm256_loadu_ps(sp + k * ld), input);
                _mm256_storeu_ps(sp + k * ld, st[k]);
            }
            acc0 = _mm256_fmadd_ps(_mm256_set1_ps(Cp[n]), st[0], acc0);
            acc1 = _mm256_fmadd_ps(_mm256_set1_ps(Cp[n + 1]), st[1], acc1);
            acc0 = _mm256_fmadd_ps(_mm256_set1_ps(Cp[n + 2]), st[2], acc0);
            acc1 = _mm256_fmadd_ps(_mm256_set1_ps(Cp[n + 3]), st[3], acc1);
        }
        _mm256_storeu_ps(acc, _mm256_add_ps(acc0, acc1));
        return;
    }
#endif
    for (int w = 0; w < W; ++w) acc[w] = 0.0f;
    for (int64_t n = 0; n < d_state; ++n) {
        const float bn = Bp[n], cn = Cp[n];
        float *sp = s + n * ld;
        const float *a2 = a2t + n * ld;
#pragma omp simd
        for (int w = 0; w < W; ++w) {
            const float state = exp2_decay(dtw[w] * a2[w]) * sp[w] + bn * vw[w];
            sp[w] = state;
            acc[w] += cn * state;
        }
    }
}

/* The decays exp(dt A) of one state for one block of W channels, computed as the forward scan step computes them
 * (the backward pass recomputes the forward's states with the same decays). */
static inline void decay_lanes(const float *dtw, const float *a2, int64_t d_state, float *out) {
#ifdef __AVX2__
    if (W == 8 && d_state % 4 == 0) {
        _mm256_storeu_ps(out, exp2_neg8(_mm256_mul_ps(_mm256_loadu_ps(dtw), _mm256_loadu_ps(a2))));
        return;
    }
#endif
    for (int w = 0; w < W; ++w) out[w] = exp2_decay(dtw[w] * a2[w]);
}

/* Causal depthwise convolution + SiLU, one whole row (all d_inner channels, contiguous) at a time: rows of xin are
 * read in order and each is reused by the K steps that need it while it is in L1. wt is the weight transposed,
 * (K, d_inner); tap K-1 multiplies the current step. */

/* pre = bias + sum_k wt[k] * xin_{t-(K-1)+k} for one row (t, b): the convolution before the SiLU. Reversed
 * (the backward-in-time direction of a bidirectional Mamba, without flipping its input and output): taps read
 * xin_{t+(K-1)-k}, the causal convolution of the time-reversed sequence. */
static inline void conv_row(float *pre, const float *xin, int64_t sx, const float *wt, const float *bias, int64_t t,
                            int64_t b, int64_t seq_len, int64_t batch, int64_t d_inner, int64_t K, int reverse) {
    for (int64_t d = 0; d < d_inner; ++d) pre[d] = bias[d];
    for (int64_t k = 0; k < K; ++k) {
        const int64_t tt = reverse ? t + (K - 1) - k : t - (K - 1) + k;
        if (tt < 0 || tt >= seq_len) continue;
        const float *xp = xin + (tt * batch + b) * sx, *wk = wt + k * d_inner;
#pragma omp simd
        for (int64_t d = 0; d < d_inner; ++d) pre[d] += wk[d] * xp[d];
    }
}
void mamba_conv_silu_forward(const float *xin, int64_t sx, const float *wt, const float *bias, float *out,
                             int64_t seq_len, int64_t batch, int64_t d_inner, int64_t K, int64_t b0, int64_t b1,
                             int64_t reverse) {
    for (int64_t b = b0; b < b1; ++b)
        for (int64_t t = 0; t < seq_len; ++t) {
            float *op = out + (t * batch + b) * d_inner;
            conv_row(op, xin, sx, wt, bias, t, b, seq_len, batch, d_inner, K, reverse != 0);
#pragma omp simd
            for (int64_t d = 0; d < d_inner; ++d) op[d] = op[d] * sigmoid(op[d]);
        }
}

/* grad_x is written (every element); grad_wt (K, d_inner) and grad_bias (d_inner) are accumulated. work: a buffer
 * of (K + 1) * d_inner floats (the pre-activations of one row and the gradients at steps t .. t + K - 1). */
int mamba_conv_silu_backward(const float *xin, int64_t sx, const float *wt, const float *bias, const float *grad_out,
                             float *grad_x, float *grad_wt, float *grad_bias, int64_t seq_len, int64_t batch,
                             int64_t d_inner, int64_t K, int64_t b0, int64_t b1) {
    float *work = (float *)malloc(sizeof(float) * (size_t)((K + 1) * d_inner));
    if (!work) return 1;
    float *pre = work, *ring = work + d_inner; /* ring row (t mod K) holds dL/dpre at step t */
    for (int64_t b = b0; b < b1; ++b) {
        for (int64_t t = seq_len - 1; t >= 0; --t) {
            conv_row(pre, xin, sx, wt, bias, t, b, seq_len, batch, d_inner, K, 0);
            const float *gp = grad_out + (t * batch + b) * d_inner;
            float *g = ring + (t % K) * d_inner;
#pragma omp simd
            for (int64_t d = 0; d < d_inner; ++d) {
                const float sg = sigmoid(pre[d]);
                g[d] = gp[d] * sg * (1.0f + pre[d] * (1.0f - sg));
                grad_bias[d] += g[d];
            }
            for (int64_t k = 0; k < K; ++k) { /* tap k of output t reads input t - (K-1) + k */
                const int64_t tt = t - (K - 1) + k;
                if (tt < 0) continue;
                const float *xp = xin + (tt * batch + b) * sx;
                float *gw = grad_wt + k * d_inner;
#pragma omp simd
                for (int64_t d = 0; d < d_inner; ++d) gw[d] += xp[d] * g[d];
            }
            /* input t feeds output t + j through tap K-1-j (j < K, t + j < seq_len); all those g are known now */
            float *gx = grad_x + (t * batch + b) * d_inner;
            for (int64_t d = 0; d < d_inner; ++d) gx[d] = 0.0f;
            for (int64_t j = 0; j < K && t + j < seq_len; ++j) {
                const float *gj = ring + ((t + j) % K) * d_inner, *wk = wt + (K - 1 - j) * d_inner;
#pragma omp simd
                for (int64_t d = 0; d < d_inner; ++d) gx[d] += wk[d] * gj[d];
            }
        }
    }
    free(work);
    return 0;
}

/* Time-outer order: per sequence, one pass over its rows (each read once, contiguously) with the states of all
 * channels, (d_state, d_inner), in an L1/L2-resident buffer. reverse != 0 runs each sequence from its last step to
 * its first (the backward direction of a bidirectional Mamba without flipping; inference only: no chunk_states). A channel-block-outer order (a block's states in
 * registers, time inner) re-reads every row d_inner / W times, and for long sequences (inter-frame: ~500 steps of a
 * 129-sequence batch) those rows did not stay in cache (measured 0.82 vs 1.37 G state updates/s). The backward
 * pass keeps that order: it works chunk by chunk, whose rows do stay in cache. */
int mamba_scan_forward(const float *u, const float *delta, const float *dt_bias, const float *A2t, const float *Bm,
                       const float *Cm, int64_t sbc, const float *Dskip, const float *z, int64_t sz, float *out,
                       float *chunk_states, int64_t seq_len, int64_t batch, int64_t d_inner, int64_t d_state,
                       int64_t chunk, int64_t b0, int64_t b1, int64_t reverse, const float *dt_in,
                       const float *dt_wt, int64_t dt_rank) {
    const int64_t n_chunks = (seq_len + chunk - 1) / chunk;
    if (reverse && chunk_states) return 2;
    /* the state, then per-step rows of dt, v = dt u and the output gate SiLU(z) (or 1) for all channels */
    float *s = (float *)aligned_alloc(32, sizeof(float) * (size_t)(d_state * d_inner + 3 * d_inner + 8));
    if (!s) return 1;
    float *dt_row = s + d_state * d_inner, *v_row = dt_row + d_inner, *gate_row = v_row + d_inner;
    for (int64_t b = b0; b < b1; ++b) {
        memset(s, 0, sizeof(float) * (size_t)(d_state * d_inner));
        for (int64_t step = 0; step < seq_len; ++step) {
            const int64_t t = reverse ? seq_len - 1 - step : step;
            if (chunk_states && t % chunk == 0)
                memcpy(chunk_states + (b * n_chunks + t / chunk) * d_state * d_inner, s,
                       sizeof(float) * (size_t)(d_state * d_inner));
            const int64_t row = t * batch + b;
            if (step + 1 < seq_len) { /* this sequence's next row is `batch` rows away: fetch it while this one runs */
                const int64_t next = reverse ? row - batch : row + batch;
                for (int64_t k = 0; k < d_inner; k += 16) {
                    __builtin_prefetch(u + next * d_inner + k);
                    __builtin_prefetch(delta + next * d_inner + k);
                    if (z) __builtin_prefetch(z + next * sz + k);
                }
                __builtin_prefetch(Bm + next * sbc);
                __builtin_prefetch(Cm + next * sbc);
            }
            const float *Bp = Bm + row * sbc, *Cp = Cm + row * sbc, *zp = z ? z + row * sz : NULL;
            const float *up = u + row * d_inner;
            /* The per-channel work first, for the whole row: softplus and the sigmoid are long dependency chains
             * (~100 cycles each), which inside the channel-block loop stalled every block (measured: half the
             * scan's time); over a row they are independent lanes. */
            const float *dp = delta ? delta + row * d_inner : dt_row;
            if (!delta) { /* the Δ projection fused: delta = dt_in · dt_wt, rank dt_rank (the x_proj columns before B) */
                const float *dtp = dt_in + row * sbc;
                for (int64_t d = 0; d < d_inner; ++d) dt_row[d] = 0.0f;
                for (int64_t r = 0; r < dt_rank; ++r) {
                    const float x = dtp[r], *wr = dt_wt + r * d_inner;
#pragma omp simd
                    for (int64_t d = 0; d < d_inner; ++d) dt_row[d] += x * wr[d];
                }
            }
#pragma omp simd
            for (int64_t d = 0; d < d_inner; ++d) {
                dt_row[d] = softplus(dp[d] + dt_bias[d]);
                v_row[d] = dt_row[d] * up[d];
            }
            if (z) {
#pragma omp simd
                for (int64_t d = 0; d < d_inner; ++d) gate_row[d] = zp[d] * sigmoid(zp[d]);
            } else {
                for (int64_t d = 0; d < d_inner; ++d) gate_row[d] = 1.0f;
            }
            float *op = out + row * d_inner;
            for (int64_t d0 = 0; d0 < d_inner; d0 += W) {
                float acc[W];
                scan_step_block(s + d0, d_inner, A2t + d0, d_state, dt_row + d0, v_row + d0, Bp, Cp, acc);
                if (Dskip)
                    for (int w = 0; w < W; ++w) acc[w] += Dskip[d0 + w] * up[d0 + w];
#pragma omp simd
                for (int w = 0; w < W; ++w) op[d0 + w] = acc[w] * gate_row[d0 + w];
            }
        }
    }
    free(s);
    return 0;
}

/* grad_u, grad_delta, grad_z are written; grad_B, grad_C (rows of d_state, contiguous) must be zero on entry;
 * grad_At (d_state, d_inner), grad_D and grad_bias (d_inner) are accumulated (per-call buffers). */
int mamba_scan_backward(const float *u, const float *delta, const float *dt_bias, const float *A2t, const float *At,
                        const float *Bm, const float *Cm, int64_t sbc, const float *Dskip, const float *z, int64_t sz,
                        const float *chunk_states, const float *grad_out, float *grad_u, float *grad_delta,
                        float *grad_z, float *grad_B, float *grad_C, float *grad_At, float *grad_D, float *grad_bias,
                        int64_t seq_len, int64_t batch, int64_t d_inner, int64_t d_state, int64_t chunk, int64_t b0,
                        int64_t b1) {
    const int64_t n_chunks = (seq_len + chunk - 1) / chunk;
    const int64_t block = d_state * W;
    float *states = (float *)aligned_alloc(32, sizeof(float) * (size_t)(2 * chunk * block + chunk * 4 * W + 64));
    if (!states) return 1;
    float *decays = states + chunk * block;
    float *dts = decays + chunk * block; /* (chunk, W): dt per step */
    float *vs = dts + chunk * W;         /* (chunk, W): v per step */
    float *sg_delta = vs + chunk * W;    /* (chunk, W): sigmoid(delta + bias), the softplus' derivative */
    float *sg_z = sg_delta + chunk * W;  /* (chunk, W): sigmoid(z) */
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
                /* The per-step lane work first, for the whole chunk: the softplus and sigmoid chains of
                 * different steps are independent and overlap here, where inside the state loop each stalled it. */
                for (int64_t t = t0; t < t1; ++t) {
                    const int64_t row = t * batch + b;
                    const float *up = u + row * d_inner + d0, *dp = delta + row * d_inner + d0;
                    const float *zp = z ? z + row * sz + d0 : NULL;
                    const int64_t i = (t - t0) * W;
#pragma omp simd
                    for (int w = 0; w < W; ++w) {
                        const float x = dp[w] + dt_bias[d0 + w];
                        dts[i + w] = softplus(x);
                        vs[i + w] = dts[i + w] * up[w];
                        sg_delta[i + w] = sigmoid(x);
                    }
                    if (zp) {
#pragma omp simd
                        for (int w = 0; w < W; ++w) sg_z[i + w] = sigmoid(zp[w]);
                    }
                }
                for (int64_t t = t0; t < t1; ++t) { /* the states, recomputed */
                    const float *Bp = Bm + (t * batch + b) * sbc;
                    const float *prev = t == t0 ? &entry[0][0] : states + (t - t0 - 1) * block;
                    float *cur = states + (t - t0) * block, *dec = decays + (t - t0) * block;
                    const float *dtw = dts + (t - t0) * W, *vw = vs + (t - t0) * W;
                    for (int64_t n = 0; n < d_state; ++n) {
                        const float bn = Bp[n];
                        decay_lanes(dtw, a2[n], d_state, dec + n * W);
#pragma omp simd
                        for (int w = 0; w < W; ++w) cur[n * W + w] = dec[n * W + w] * prev[n * W + w] + bn * vw[w];
                    }
                }
                for (int64_t t = t1 - 1; t >= t0; --t) {
                    const int64_t row = t * batch + b;
                    const float *up = u + row * d_inner + d0;
                    const float *zp = z ? z + row * sz + d0 : NULL, *gop = grad_out + row * d_inner + d0;
                    const float *Bp = Bm + row * sbc, *Cp = Cm + row * sbc;
                    const float *cur = states + (t - t0) * block, *dec = decays + (t - t0) * block;
                    const float *prev = t == t0 ? &entry[0][0] : states + (t - t0 - 1) * block;
                    const float *dtw = dts + (t - t0) * W, *vw = vs + (t - t0) * W;
                    float y[W], gy[W], gv[W], gdt[W];
                    for (int w = 0; w < W; ++w) y[w] = 0.0f;
                    for (int64_t n = 0; n < d_state; ++n) {
                        const float cn = Cp[n];
                        for (int w = 0; w < W; ++w) y[w] += cn * cur[n * W + w];
                    }
                    if (z) { /* out = (y + D u) * silu(z) */
                        float *gzp = grad_z + row * d_inner + d0;
#pragma omp simd
                        for (int w = 0; w < W; ++w) {
                            const float sg = sg_z[(t - t0) * W + w];
                            const float full = y[w] + (Dskip ? Dskip[d0 + w] * up[w] : 0.0f);
                            gzp[w] = gop[w] * full * sg * (1.0f + zp[w] * (1.0f - sg));
                            gy[w] = gop[w] * zp[w] * sg;
                        }
                    } else {
                        for (int w = 0; w < W; ++w) gy[w] = gop[w];
                    }
                    for (int w = 0; w < W; ++w) {
                        if (Dskip) grad_D[d0 + w] += gy[w] * up[w];
                        gv[w] = 0.0f;
                        gdt[w] = 0.0f;
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
                    float *gup = grad_u + row * d_inner + d0, *gdp = grad_delta + row * d_inner + d0;
#pragma omp simd
                    for (int w = 0; w < W; ++w) { /* v = dt u, dt = softplus(delta + bias) */
                        gup[w] = (Dskip ? gy[w] * Dskip[d0 + w] : 0.0f) + gv[w] * dtw[w];
                        const float g_delta = (gdt[w] + gv[w] * up[w]) * sg_delta[(t - t0) * W + w];
                        gdp[w] = g_delta;
                        grad_bias[d0 + w] += g_delta;
                    }
                }
            }
        }
    }
    free(states);
    return 0;
}
