/* Native CPU kernels for the exact inference path (x86-64, AVX2 + FMA, float32).
 *
 * Built and loaded by pipeline/model/native_kernels.py (compiled on first use with the system C
 * compiler, cached by source hash). Every kernel computes the same mathematics as the PyTorch
 * ops it replaces, in float32, with float32-level rounding differences only:
 *   da_attention  softmax(q k^T * scale) v for all heads, reading q/k/v straight out of the
 *                 fused qkv projection and writing (tokens, heads*d) for the output projection;
 *   da_linear     y = x W^T + b with an epilogue: store, GELU (erf form), or accumulate into y
 *                 (the residual add of a transformer block);
 *   da_conv3x3    a 3x3, stride 1, zero-padded convolution of channels-last (NHWC) maps with the
 *                 bias and an epilogue: store, ReLU, or add one or two maps (residual units);
 *   da_upsample_conv3x3  bilinear upsampling (align_corners) followed by a 3x3 convolution in one
 *                 pass, the upsampled map never stored; then either store the result or finish
 *                 the DPT head (ReLU, 1x1 convolution to one channel, ReLU or sigmoid).
 * One 6x16 register-tiled FMA micro-kernel does all the multiply-adds. Threads come from the
 * OpenMP runtime PyTorch already loaded (libgomp.so.1), so kernels and PyTorch ops share one
 * pool and never oversubscribe the cores.
 */
#include <immintrin.h>
#include <stdlib.h>
#include <string.h>

#define MR 6
#define NR 16
#define ALIGN32 __attribute__((aligned(32)))

int da_abi_version(void) { return 5; }

/* aligned_alloc wants a size that is a multiple of the alignment */
static void *alloc32(size_t bytes) { return aligned_alloc(32, (bytes + 31) / 32 * 32); }

/* c[MR][NR] = init + sum_seg sum_k a[seg][i][k] * bp[seg][k][0..NR): nseg runs of `cin`
 * contiguous inputs per output pixel (for a 3x3 kernel on a zero-padded NHWC row buffer: a
 * pixel's three taps of one kernel row are 3*Cin contiguous floats, so 3 runs of 3*Cin) */
static inline void micro_taps(const float *const *a, int nseg, long cin, const float *bp, __m256 init0,
                              __m256 init1, float *c) {
    __m256 c00 = init0, c01 = init1, c10 = init0, c11 = init1, c20 = init0, c21 = init1;
    __m256 c30 = init0, c31 = init1, c40 = init0, c41 = init1, c50 = init0, c51 = init1;
    for (int tap = 0; tap < nseg; tap++, bp += cin * NR) {
        const float *a0 = a[tap * MR], *a1 = a[tap * MR + 1], *a2 = a[tap * MR + 2];
        const float *a3 = a[tap * MR + 3], *a4 = a[tap * MR + 4], *a5 = a[tap * MR + 5];
#pragma GCC unroll 4
        for (long k = 0; k < cin; k++) {
            __m256 b0 = _mm256_load_ps(bp + k * NR), b1 = _mm256_load_ps(bp + k * NR + 8), x;
            x = _mm256_broadcast_ss(a0 + k); c00 = _mm256_fmadd_ps(x, b0, c00); c01 = _mm256_fmadd_ps(x, b1, c01);
            x = _mm256_broadcast_ss(a1 + k); c10 = _mm256_fmadd_ps(x, b0, c10); c11 = _mm256_fmadd_ps(x, b1, c11);
            x = _mm256_broadcast_ss(a2 + k); c20 = _mm256_fmadd_ps(x, b0, c20); c21 = _mm256_fmadd_ps(x, b1, c21);
            x = _mm256_broadcast_ss(a3 + k); c30 = _mm256_fmadd_ps(x, b0, c30); c31 = _mm256_fmadd_ps(x, b1, c31);
            x = _mm256_broadcast_ss(a4 + k); c40 = _mm256_fmadd_ps(x, b0, c40); c41 = _mm256_fmadd_ps(x, b1, c41);
            x = _mm256_broadcast_ss(a5 + k); c50 = _mm256_fmadd_ps(x, b0, c50); c51 = _mm256_fmadd_ps(x, b1, c51);
        }
    }
    _mm256_store_ps(c + 0, c00);  _mm256_store_ps(c + 8, c01);  _mm256_store_ps(c + 16, c10);
    _mm256_store_ps(c + 24, c11); _mm256_store_ps(c + 32, c20); _mm256_store_ps(c + 40, c21);
    _mm256_store_ps(c + 48, c30); _mm256_store_ps(c + 56, c31); _mm256_store_ps(c + 64, c40);
    _mm256_store_ps(c + 72, c41); _mm256_store_ps(c + 80, c50); _mm256_store_ps(c + 88, c51);
}

/* c[MR][NR] = init + sum_k a_i[k] * bp[k][0..NR), for the six contiguous rows a_0..a_5 */
static inline void micro(const float *a0, const float *a1, const float *a2, const float *a3,
                         const float *a4, const float *a5, const float *bp, long K,
                         __m256 init0, __m256 init1, float *c) {
    const float *const a[MR] = {a0, a1, a2, a3, a4, a5};
    micro_taps(a, 1, K, bp, init0, init1, c);
}

/* 2^t for t <= 0: t = n + f with |f| <= 1/2; 2^f by a degree-6 polynomial (relative error
 * ~1e-7, the float32 rounding level), 2^n added to the exponent bits. t < -100 gives 2^-100
 * (~1e-30: nothing next to the 1 a softmax row always holds, and it keeps every product that
 * follows clear of denormals, which are slow). */
static inline __m256 exp2_nonpos(__m256 t) {
    t = _mm256_max_ps(t, _mm256_set1_ps(-100.0f));
    __m256 n = _mm256_round_ps(t, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m256 f = _mm256_sub_ps(t, n);
    __m256 p = _mm256_set1_ps(1.5363370766863227e-4f);
    p = _mm256_fmadd_ps(p, f, _mm256_set1_ps(1.3394689885899425e-3f));
    p = _mm256_fmadd_ps(p, f, _mm256_set1_ps(9.618365205824375e-3f));
    p = _mm256_fmadd_ps(p, f, _mm256_set1_ps(5.5503424257040024e-2f));
    p = _mm256_fmadd_ps(p, f, _mm256_set1_ps(2.4022649228572845e-1f));
    p = _mm256_fmadd_ps(p, f, _mm256_set1_ps(6.931471824645996e-1f));
    p = _mm256_fmadd_ps(p, f, _mm256_set1_ps(1.0f));
    __m256i e = _mm256_slli_epi32(_mm256_cvtps_epi32(n), 23);
    return _mm256_castsi256_ps(_mm256_add_epi32(_mm256_castps_si256(p), e));
}

/* gelu(x) = x/2 (1 + erf(x / sqrt 2)); erf as PyTorch's vectorised CPU GELU computes it
 * (Abramowitz & Stegun 7.1.26, absolute error <= 1.5e-7). */
static inline __m256 gelu(__m256 x) {
    const __m256 nz = _mm256_set1_ps(-0.0f), one = _mm256_set1_ps(1.0f);
    __m256 v = _mm256_mul_ps(x, _mm256_set1_ps(0.70710678118654752f));
    __m256 sign = _mm256_and_ps(nz, v), a = _mm256_min_ps(_mm256_xor_ps(sign, v), _mm256_set1_ps(1e4f));
    __m256 den = _mm256_fmadd_ps(_mm256_set1_ps(0.3275911f), a, one);
    __m256 t = _mm256_rcp_ps(den);                                     /* 1/den: 12 bits, then one */
    t = _mm256_mul_ps(t, _mm256_fnmadd_ps(den, t, _mm256_set1_ps(2.0f)));  /* Newton step: ~23 bits */
    __m256 r = _mm256_fmadd_ps(_mm256_set1_ps(1.061405429f), t, _mm256_set1_ps(-1.453152027f));
    r = _mm256_fmadd_ps(r, t, _mm256_set1_ps(1.421413741f));
    r = _mm256_fmadd_ps(r, t, _mm256_set1_ps(-0.284496736f));
    r = _mm256_fmadd_ps(r, t, _mm256_set1_ps(0.254829592f));
    __m256 e = exp2_nonpos(_mm256_mul_ps(_mm256_mul_ps(v, v), _mm256_set1_ps(-1.4426950408889634f)));
    __m256 erf = _mm256_xor_ps(sign, _mm256_fnmadd_ps(_mm256_mul_ps(e, t), r, one));
    return _mm256_mul_ps(_mm256_mul_ps(x, _mm256_set1_ps(0.5f)), _mm256_add_ps(one, erf));
}

/* ------------------------------------------------------------------------------------------ */
/* Linear layers. W^T is packed once as bp[ceil(N/16)][K][16] (zero columns past N).          */

enum { EPI_STORE = 0, EPI_GELU = 1, EPI_ACCUMULATE = 2 };

static void linear_tile(const float *a, long lda, long rows, const float *bp, long K, const float *bias,
                        long ncols, float *y, long ldy, int epi) {
    float c[MR * NR] ALIGN32, bias16[NR] ALIGN32;
    for (long u = 0; u < NR; u++) bias16[u] = u < ncols ? bias[u] : 0.0f;
    const float *r[MR];
    for (long i = 0; i < MR; i++) r[i] = a + (i < rows ? i : 0) * lda;   /* missing rows: not stored */
    micro(r[0], r[1], r[2], r[3], r[4], r[5], bp, K, _mm256_load_ps(bias16), _mm256_load_ps(bias16 + 8), c);
    for (long i = 0; i < rows; i++) {
        float *dst = y + i * ldy, *ci = c + i * NR;
        __m256 x0 = _mm256_load_ps(ci), x1 = _mm256_load_ps(ci + 8);
        if (epi == EPI_GELU) { x0 = gelu(x0); x1 = gelu(x1); }
        if (ncols >= NR) {
            if (epi == EPI_ACCUMULATE) {
                x0 = _mm256_add_ps(x0, _mm256_loadu_ps(dst));
                x1 = _mm256_add_ps(x1, _mm256_loadu_ps(dst + 8));
            }
            _mm256_storeu_ps(dst, x0);
            _mm256_storeu_ps(dst + 8, x1);
        } else {
            _mm256_store_ps(ci, x0);
            _mm256_store_ps(ci + 8, x1);
            for (long u = 0; u < ncols; u++) dst[u] = epi == EPI_ACCUMULATE ? dst[u] + ci[u] : ci[u];
        }
    }
}

/* y[M][N] (row stride ldy) = epilogue(x[M][K] (row stride lda) . W^T + bias) */
int da_linear(const float *x, long M, long K, long lda, const float *bp, long N, const float *bias,
              float *y, long ldy, int epi, int nthreads) {
    if (M <= 0 || N <= 0 || K <= 0 || epi < 0 || epi > 2) return -1;
    const long mb = 24, npan = (N + NR - 1) / NR, nmb = (M + mb - 1) / mb;
#pragma omp parallel for schedule(dynamic, 1) num_threads(nthreads)
    for (long item = 0; item < nmb * npan; item++) {
        long m0 = (item / npan) * mb, pan = item % npan;   /* row block outer: it stays in cache */
        long m1 = m0 + mb < M ? m0 + mb : M, ncols = N - pan * NR < NR ? N - pan * NR : NR;
        for (long r = m0; r < m1; r += MR)
            linear_tile(x + r * lda, lda, m1 - r < MR ? m1 - r : MR, bp + pan * K * NR, K, bias + pan * NR,
                        ncols, y + r * ldy + pan * NR, ldy, epi);
    }
    return 0;
}

/* ------------------------------------------------------------------------------------------ */
/* Attention. Per (batch, head): K^T packed as kp[ceil(N/16)][D][16], pre-multiplied by       */
/* scale*log2(e) so that the softmax is a base-2 exponential; V packed as vp[D/16][N][16].    */

typedef struct {
    const float *q, *k, *v;
    float *out, *work;
    long B, N, H, D, in_tok, in_batch, in_head, out_tok, out_batch, out_head, npad;
    float scale2;
} attn_t;

static float *kp_of(const attn_t *j, long bh) { return j->work + bh * (j->npad + j->N) * j->D; }
static float *vp_of(const attn_t *j, long bh) { return kp_of(j, bh) + j->npad * j->D; }

static void attn_pack(const attn_t *j, long bh) {
    long b = bh / j->H, h = bh % j->H, N = j->N, D = j->D;
    const float *k = j->k + b * j->in_batch + h * j->in_head, *v = j->v + b * j->in_batch + h * j->in_head;
    float *kp = kp_of(j, bh), *vp = vp_of(j, bh);
    for (long t = 0; t < j->npad; t++) {
        float *dst = kp + (t / NR) * D * NR + t % NR;
        const float *src = k + t * j->in_tok;
        for (long d = 0; d < D; d++) dst[d * NR] = t < N ? src[d] * j->scale2 : 0.0f;
    }
    for (long t = 0; t < N; t++)
        for (long cp = 0; cp < D / NR; cp++)
            memcpy(vp + (cp * N + t) * NR, v + t * j->in_tok + cp * NR, NR * sizeof(float));
}

/* Six query rows (q0, row stride D, zero rows past the end) against all keys. */
static void attn_rows(const attn_t *j, long bh, long r0, long rows, const float *q6, float *s) {
    long N = j->N, D = j->D, npad = j->npad, b = bh / j->H, h = bh % j->H;
    const float *kp = kp_of(j, bh), *vp = vp_of(j, bh);
    float c[MR * NR] ALIGN32, mx[MR * 8] ALIGN32, inv[MR];
    const __m256 zero = _mm256_setzero_ps(), lowest = _mm256_set1_ps(-3.0e38f);
    for (long i = 0; i < MR; i++) _mm256_store_ps(mx + i * 8, lowest);
    /* scores s[i][t] = q_i . k_t (log2 units) and their row maxima over the N real keys */
    for (long pan = 0; pan < npad / NR; pan++) {
        micro(q6, q6 + D, q6 + 2 * D, q6 + 3 * D, q6 + 4 * D, q6 + 5 * D, kp + pan * D * NR, D, zero, zero, c);
        long valid = N - pan * NR;
        for (long i = 0; i < MR; i++) {
            float *ci = c + i * NR;
            if (valid < NR)
                for (long u = valid; u < NR; u++) ci[u] = -3.0e38f;       /* padded keys: weight 0 */
            __m256 x0 = _mm256_load_ps(ci), x1 = _mm256_load_ps(ci + 8);
            _mm256_store_ps(s + i * npad + pan * NR, x0);
            _mm256_store_ps(s + i * npad + pan * NR + 8, x1);
            _mm256_store_ps(mx + i * 8, _mm256_max_ps(_mm256_load_ps(mx + i * 8), _mm256_max_ps(x0, x1)));
        }
    }
    /* p = 2^(s - max) in place, and 1 / sum p */
    for (long i = 0; i < MR; i++) {
        float m = mx[i * 8], *row = s + i * npad, part[8] ALIGN32, total = 0.0f;
        for (int u = 1; u < 8; u++) m = mx[i * 8 + u] > m ? mx[i * 8 + u] : m;
        __m256 mv = _mm256_set1_ps(m), sum = _mm256_setzero_ps(), sum2 = _mm256_setzero_ps();
        long t = 0, full = N / 8 * 8;
        for (; t + 16 <= full; t += 16) {                   /* two independent chains */
            __m256 p = exp2_nonpos(_mm256_sub_ps(_mm256_load_ps(row + t), mv));
            __m256 p2 = exp2_nonpos(_mm256_sub_ps(_mm256_load_ps(row + t + 8), mv));
            _mm256_store_ps(row + t, p);
            _mm256_store_ps(row + t + 8, p2);
            sum = _mm256_add_ps(sum, p);
            sum2 = _mm256_add_ps(sum2, p2);
        }
        for (; t < npad; t += 8) {                           /* the rest; padded keys get 0 */
            __m256 p = exp2_nonpos(_mm256_sub_ps(_mm256_load_ps(row + t), mv));
            p = _mm256_and_ps(p, _mm256_cmp_ps(_mm256_load_ps(row + t), lowest, _CMP_GT_OQ));
            _mm256_store_ps(row + t, p);
            sum = _mm256_add_ps(sum, p);
        }
        sum = _mm256_add_ps(sum, sum2);
        _mm256_store_ps(part, sum);
        for (int u = 0; u < 8; u++) total += part[u];
        inv[i] = 1.0f / total;
    }
    /* out = p v / sum p */
    float *out = j->out + b * j->out_batch + h * j->out_head;
    for (long cp = 0; cp < D / NR; cp++) {
        micro(s, s + npad, s + 2 * npad, s + 3 * npad, s + 4 * npad, s + 5 * npad, vp + cp * N * NR, N,
              zero, zero, c);
        for (long i = 0; i < rows; i++) {
            float *dst = out + (r0 + i) * j->out_tok + cp * NR;
            __m256 w = _mm256_set1_ps(inv[i]);
            _mm256_storeu_ps(dst, _mm256_mul_ps(_mm256_load_ps(c + i * NR), w));
            _mm256_storeu_ps(dst + 8, _mm256_mul_ps(_mm256_load_ps(c + i * NR + 8), w));
        }
    }
}

/* Floats of workspace da_attention needs. */
long da_attention_workspace(long B, long N, long H, long D) {
    return B * H * (((N + NR - 1) / NR * NR) + N) * D;
}

/* out[b, t, h*D + d] = softmax_t'(q_t . k_t' * scale) v_t'[d]. D must be a multiple of 16;
 * work must hold da_attention_workspace() floats, 32-byte aligned. */
int da_attention(const float *q, const float *k, const float *v, float *out, float *work,
                 long B, long N, long H, long D, long in_tok, long in_batch, long in_head,
                 long out_tok, long out_batch, long out_head, float scale, int nthreads) {
    if (B <= 0 || N <= 0 || H <= 0 || D <= 0 || D % NR || ((size_t)work & 31)) return -1;
    attn_t j = {q, k, v, out, work, B, N, H, D, in_tok, in_batch, in_head, out_tok, out_batch, out_head,
                (N + NR - 1) / NR * NR, scale * 1.4426950408889634f};
    const long qb = 48, nqb = (N + qb - 1) / qb;                /* query rows per work item */
    int failed = 0;
#pragma omp parallel num_threads(nthreads)
    {
#pragma omp for schedule(dynamic, 1)
        for (long bh = 0; bh < B * H; bh++) attn_pack(&j, bh);
        float *s = alloc32(MR * j.npad * sizeof(float)), *q6 = alloc32(MR * D * sizeof(float));
        if (!s || !q6) {
#pragma omp atomic write
            failed = 1;
        }
#pragma omp for schedule(dynamic, 1)
        for (long item = 0; item < B * H * nqb; item++) {
            if (!s || !q6) continue;
            long bh = item / nqb, b = bh / H, h = bh % H, r1 = (item % nqb + 1) * qb < N ? (item % nqb + 1) * qb : N;
            const float *qh = q + b * in_batch + h * in_head;
            for (long r0 = (item % nqb) * qb; r0 < r1; r0 += MR) {
                long rows = r1 - r0 < MR ? r1 - r0 : MR;
                for (long i = 0; i < MR; i++) {
                    if (i < rows) memcpy(q6 + i * D, qh + (r0 + i) * in_tok, D * sizeof(float));
                    else memset(q6 + i * D, 0, D * sizeof(float));
                }
                attn_rows(&j, bh, r0, rows, q6, s);
            }
        }
        free(s);
        free(q6);
    }
    return failed ? -2 : 0;
}

/* ------------------------------------------------------------------------------------------ */
/* The DPT output stage. 3x3 convolution weights packed as wp[ceil(Cout/16)][9][Cin][16]; six  */
/* consecutive output pixels of a row x 16 output channels per micro-kernel call.             */

static inline float sigmoid1(float x) { return 1.0f / (1.0f + __builtin_expf(-x)); }

/* out = epi(conv3x3(x) + bias): x (B, H, W, Cin) NHWC, wp packed as wp[ceil(Cout/16)][9][Cin][16],
 * out (B, H, W, Cout). relu: ReLU the result; res1/res2: NULL or (B, H, W, Cout) maps added. */
int da_conv3x3(const float *x, long B, long H, long W, long cin, const float *wp, long cout, const float *bias,
               int relu, const float *res1, const float *res2, float *out, int nthreads) {
    if (B <= 0 || H <= 0 || W <= 0 || cin <= 0 || cout <= 0) return -1;
    const long npan = (cout + NR - 1) / NR, zlen = (3 * cin + 7) / 8 * 8;
    float *zeros = alloc32(zlen * sizeof(float));
    if (!zeros) return -2;
    memset(zeros, 0, zlen * sizeof(float));
#pragma omp parallel for schedule(dynamic, 1) num_threads(nthreads)
    for (long by = 0; by < B * H; by++) {
        long b = by / H, y = by % H;
        const float *a[9 * MR];
        float c[MR * NR] ALIGN32, bias16[NR] ALIGN32;
        for (long x0 = 0; x0 < W; x0 += MR) {
            long n = W - x0 < MR ? W - x0 : MR;
            /* inside the image a pixel's three taps of a kernel row are 3*Cin contiguous inputs */
            int inner = x0 >= 1 && x0 + MR + 1 <= W, nseg = inner ? 3 : 9;
            for (int ky = 0; ky < 3; ky++)
                for (int kx = 0; kx < (inner ? 1 : 3); kx++)
                    for (long i = 0; i < MR; i++) {
                        long yy = y + ky - 1, xx = x0 + (i < n ? i : 0) + kx - 1;
                        a[(inner ? ky : ky * 3 + kx) * MR + i] = (yy < 0 || yy >= H || xx < 0 || xx >= W)
                            ? zeros : x + ((b * H + yy) * W + xx) * cin;
                    }
            for (long pan = 0; pan < npan; pan++) {
                long ncols = cout - pan * NR < NR ? cout - pan * NR : NR;
                for (long u = 0; u < NR; u++) bias16[u] = (bias && u < ncols) ? bias[pan * NR + u] : 0.0f;
                micro_taps(a, nseg, inner ? 3 * cin : cin, wp + pan * 9 * cin * NR, _mm256_load_ps(bias16),
                           _mm256_load_ps(bias16 + 8), c);
                for (long i = 0; i < n; i++) {
                    long off = ((b * H + y) * W + x0 + i) * cout + pan * NR;
                    float *ci = c + i * NR;
                    if (ncols == NR) {
                        __m256 v0 = _mm256_load_ps(ci), v1 = _mm256_load_ps(ci + 8);
                        if (relu) {
                            v0 = _mm256_max_ps(v0, _mm256_setzero_ps());
                            v1 = _mm256_max_ps(v1, _mm256_setzero_ps());
                        }
                        if (res1) {
                            v0 = _mm256_add_ps(v0, _mm256_loadu_ps(res1 + off));
                            v1 = _mm256_add_ps(v1, _mm256_loadu_ps(res1 + off + 8));
                        }
                        if (res2) {
                            v0 = _mm256_add_ps(v0, _mm256_loadu_ps(res2 + off));
                            v1 = _mm256_add_ps(v1, _mm256_loadu_ps(res2 + off + 8));
                        }
                        _mm256_storeu_ps(out + off, v0);
                        _mm256_storeu_ps(out + off + 8, v1);
                        continue;
                    }
                    for (long u = 0; u < ncols; u++) {
                        float v = ci[u];
                        if (relu) v = v > 0.0f ? v : 0.0f;
                        if (res1) v += res1[off + u];
                        if (res2) v += res2[off + u];
                        out[off + u] = v;
                    }
                }
            }
        }
    }
    free(zeros);
    return 0;
}

/* One output row of the upsampled map, zero-padded by one pixel on each side: row[(Wo+2)*C]. */
static void upsample_row(const float *lo, long Hi, long Wi, long C, long Wo, float sy, float sx, long y,
                         float *tmp, float *row) {
    float src = sy * (float)y;
    long y0 = (long)src, y1 = y0 + (y0 < Hi - 1);
    float l1 = src - (float)y0, l0 = 1.0f - l1;
    const float *r0 = lo + y0 * Wi * C, *r1 = lo + y1 * Wi * C;
    for (long i = 0; i < Wi * C; i++) tmp[i] = l0 * r0[i] + l1 * r1[i];       /* vertical first */
    memset(row, 0, C * sizeof(float));
    memset(row + (Wo + 1) * C, 0, C * sizeof(float));
    for (long x = 0; x < Wo; x++) {
        float sxx = sx * (float)x;
        long x0 = (long)sxx, x1 = x0 + (x0 < Wi - 1);
        float w1 = sxx - (float)x0, w0 = 1.0f - w1;
        const float *a = tmp + x0 * C, *b = tmp + x1 * C;
        float *d = row + (x + 1) * C;
        for (long c = 0; c < C; c++) d[c] = w0 * a[c] + w1 * b[c];
    }
}

enum { UPCONV_STORE = 0, UPCONV_HEAD_RELU = 1, UPCONV_HEAD_SIGMOID = 2 };

/* y = conv3x3(upsample(lo, Ho x Wo)) + bias, lo: (B, Hi, Wi, C) NHWC, wp: the 3x3 convolution
 * (C -> cout) packed as wp[ceil(cout/16)][9][C][16].
 * UPCONV_STORE: out = y as (B, Ho, Wo, cout) NHWC.
 * UPCONV_HEAD_*: out (B, Ho, Wo) = act(w2 . relu(y) + b2), act = ReLU or sigmoid (cout <= 64). */
int da_upsample_conv3x3(const float *lo, long B, long Hi, long Wi, long C, long Ho, long Wo, const float *wp,
                        long cout, const float *bias, int mode, const float *w2, float b2, float *out,
                        int nthreads) {
    if (B <= 0 || Hi <= 0 || Wi <= 0 || C <= 0 || Ho <= 0 || Wo <= 0 || cout <= 0 || mode < 0 || mode > 2) return -1;
    if (mode != UPCONV_STORE && (cout > 4 * NR || !w2)) return -1;
    const float sy = Ho > 1 ? (float)(Hi - 1) / (float)(Ho - 1) : 0.0f;
    const float sx = Wo > 1 ? (float)(Wi - 1) / (float)(Wo - 1) : 0.0f;
    const long band = 8, nband = (Ho + band - 1) / band, rowlen = (Wo + 2) * C, npan = (cout + NR - 1) / NR;
    int failed = 0;
#pragma omp parallel num_threads(nthreads)
    {
        float *ring = alloc32((3 * rowlen + Wi * C + 8) * sizeof(float));
        float *zero = alloc32((rowlen + 8) * sizeof(float));
        if (!ring || !zero) {
#pragma omp atomic write
            failed = 1;
        } else {
            memset(zero, 0, rowlen * sizeof(float));
        }
#pragma omp for schedule(dynamic, 1)
        for (long item = 0; item < B * nband; item++) {
            if (!ring || !zero) continue;
            long b = item / nband, y0 = (item % nband) * band, y1 = y0 + band < Ho ? y0 + band : Ho;
            const float *img = lo + b * Hi * Wi * C;
            float *tmp = ring + 3 * rowlen;
            const float *rows[3];
            for (long y = y0 - 1; y <= y0; y++)                     /* rows y0-1, y0 */
                if (y >= 0) upsample_row(img, Hi, Wi, C, Wo, sy, sx, y, tmp, ring + ((y + 3) % 3) * rowlen);
            for (long y = y0; y < y1; y++) {
                if (y + 1 < Ho) upsample_row(img, Hi, Wi, C, Wo, sy, sx, y + 1, tmp, ring + ((y + 4) % 3) * rowlen);
                for (int k = 0; k < 3; k++) {
                    long yy = y + k - 1;
                    rows[k] = (yy < 0 || yy >= Ho) ? zero : ring + ((yy + 3) % 3) * rowlen;
                }
                for (long x0 = 0; x0 < Wo; x0 += MR) {
                    long n = Wo - x0 < MR ? Wo - x0 : MR;
                    const float *a[3 * MR];
                    float c[MR * NR] ALIGN32, bias16[NR] ALIGN32, acc[MR] = {0};
                    for (int k = 0; k < 3; k++)
                        for (long i = 0; i < MR; i++) a[k * MR + i] = rows[k] + (x0 + (i < n ? i : 0)) * C;
                    for (long pan = 0; pan < npan; pan++) {
                        long ncols = cout - pan * NR < NR ? cout - pan * NR : NR;
                        for (long u = 0; u < NR; u++) bias16[u] = u < ncols ? bias[pan * NR + u] : 0.0f;
                        micro_taps(a, 3, 3 * C, wp + pan * 9 * C * NR, _mm256_load_ps(bias16),
                                   _mm256_load_ps(bias16 + 8), c);
                        if (mode == UPCONV_STORE) {
                            for (long i = 0; i < n; i++)
                                memcpy(out + ((b * Ho + y) * Wo + x0 + i) * cout + pan * NR, c + i * NR,
                                       ncols * sizeof(float));
                            continue;
                        }
                        for (long i = 0; i < n; i++)
                            for (long u = 0; u < ncols; u++) {
                                float v = c[i * NR + u];
                                acc[i] += (v > 0.0f ? v : 0.0f) * w2[pan * NR + u];
                            }
                    }
                    if (mode != UPCONV_STORE)
                        for (long i = 0; i < n; i++) {
                            float r = acc[i] + b2;
                            out[(b * Ho + y) * Wo + x0 + i] = mode == UPCONV_HEAD_SIGMOID ? sigmoid1(r)
                                                                                         : (r > 0.0f ? r : 0.0f);
                        }
                }
            }
        }
        free(ring);
        free(zero);
    }
    return failed ? -2 : 0;
}
