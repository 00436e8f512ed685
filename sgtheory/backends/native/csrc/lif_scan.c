/* Fused CPU kernels of the LIF scan (sgtheory/lif.py), float32, time-major.
 *
 * Every array is (nb_steps, row) with `row` neurons per step, contiguous in the neuron
 * index. A call runs neurons [begin, end) through all time steps: the state of a block of
 * neurons stays in registers and each step touches one short contiguous piece of each row.
 * Python splits the neurons between threads (one call per thread; ctypes releases the GIL).
 *
 * The arithmetic follows the torch loop (backends/torch_loop.py) operation by operation,
 * including the fused multiply-adds of torch's vectorised lerp and add-with-alpha kernels,
 * so both give the same spikes. Compiled with -ffp-contract=off: no other multiply-add is fused.
 */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define BLOCK 256

/* The sigmoid escape noise's firing point logit(u) / beta of a uniform draw u, computed
 * here for the torch loop (the points of SigmoidEscape.prob_inverse on CPU float32) and the
 * fused scan alike, so that both give the same spikes.
 *
 * For u in [FLT_MIN, 1): u = 2^e1 m1 and 1 - u = 2^e2 m2 (m in [1, 2); 1 - u is exact for
 * every draw k 2^-24 of torch.rand), and log(u / (1 - u)) = e ln2 + 2 atanh(s) with
 * s = (m1 - m2) / (m1 + m2) after scaling m1 or m2 by 2 so that m1 / m2 lies within
 * [1/sqrt2, sqrt2] (|s| <= 0.172; m1 - m2 is exact). So no quotient u / (1 - u) is rounded
 * before the logarithm: the logit is within 1.6 ulp of the exact value for every draw
 * (2 ulp after the division by beta), also near u = 1/2, where torch.logit's float
 * quotient loses relative accuracy (a test walks all 2^24 draws). The atanh series is cut
 * after s^9 (relative truncation below 1e-7). Written without branches (comparisons become integer masks), so that the loops over it
 * vectorise under the default -ftrapping-math. */
static inline float as_float(uint32_t b) {
    float f;
    memcpy(&f, &b, 4);
    return f;
}

static inline uint32_t as_bits(float f) {
    uint32_t b;
    memcpy(&b, &f, 4);
    return b;
}

static inline float logit_normal(float u) {
    const float ln2_hi = 0.693145752f, ln2_lo = 1.42860677e-06f, sqrt2 = 1.41421354f;
    const float w = 1.0f - u;
    const uint32_t bu = as_bits(u), bw = as_bits(w);
    float m1 = as_float((bu & 0x7fffffu) | 0x3f800000u);
    float m2 = as_float((bw & 0x7fffffu) | 0x3f800000u);
    const float up = (float)(int32_t)(as_bits(sqrt2 * m2 - m1) >> 31);   /* m1 > sqrt2 m2 */
    const float down = (float)(int32_t)(as_bits(sqrt2 * m1 - m2) >> 31); /* m2 > sqrt2 m1 */
    const float e = ((float)(int32_t)(bu >> 23) - (float)(int32_t)(bw >> 23)) + (up - down);
    m2 = m2 + up * m2; /* exact doublings */
    m1 = m1 + down * m1;
    const float s = (m1 - m2) / (m1 + m2), z = s * s;
    const float r = z * (0.666666687f + z * (0.400000006f + z * (0.285714298f + z * 0.222222224f)));
    return e * ln2_hi + (2.0f * s + (s * r + e * ln2_lo));
}

/* 1 iff u lies in [FLT_MIN, 1), the range of logit_normal (an integer comparison of the
 * bits: negative numbers and NaN fall outside) */
static inline uint32_t logit_in_range(float u) {
    return as_bits(u) - 0x00800000u < 0x3f800000u - 0x00800000u;
}

static float logit_point_outside(float u, float beta) {
    if (u > 0.0f && u < 1.0f) /* subnormal: log(u / (1 - u)) = log(u 2^24) - 24 ln2 */
        return (logit_normal(u * 16777216.0f) - 24.0f * 0.693147182f) / beta;
    if (u == 0.0f) return -INFINITY / beta;
    if (u == 1.0f) return INFINITY / beta;
    return NAN;
}

static inline float logit_point(float u, float beta) {
    return logit_in_range(u) ? logit_normal(u) / beta : logit_point_outside(u, beta);
}

/* out[i] = logit(u[i]) / beta for i in [begin, end): a vectorised pass, then the rare
 * draws outside [FLT_MIN, 1) one by one. */
void logit_points(const float *u, float *out, int64_t begin, int64_t end, float beta) {
    uint32_t outside = 0; /* out may be u (in place): each i reads u[i] before out[i] */
#pragma GCC ivdep
    for (int64_t i = begin; i < end; i++) {
        const uint32_t in = logit_in_range(u[i]), keep = (uint32_t)0 - in;
        outside |= in ^ 1u;
        out[i] = logit_normal(as_float((as_bits(u[i]) & keep) | (0x3f000000u & ~keep))) / beta;
    }
    if (outside)
        for (int64_t i = begin; i < end; i++)
            if (!logit_in_range(u[i])) out[i] = logit_point_outside(u[i], beta);
}

/* Philox4x32-10 (sgtheory/random.py defines the draws): counter (x0, x1, x2, x3), key
 * (k0, k1); ten rounds of 32 x 32 -> 64-bit products, the key bumped after each. */
#define PHILOX_M0 0xD2511F53u
#define PHILOX_M1 0xCD9E8D57u
#define PHILOX_W0 0x9E3779B9u
#define PHILOX_W1 0xBB67AE85u

/* key: seed_lo, seed_hi, stream_lo, stream_hi. The words of steps 4 g .. 4 g + 3 of the
 * elements elem[0..n) into words[lane n + j]: one Philox call per element, in a loop without
 * dependencies between elements (vectorised: 64-bit products of 32-bit lanes). */
static inline void philox_words(const uint32_t *restrict elem, uint32_t group,
                                const uint32_t *restrict key, uint32_t *restrict words,
                                int64_t n) {
    for (int64_t j = 0; j < n; j++) {
        uint32_t x0 = elem[j], x1 = group, x2 = key[2], x3 = key[3], k0 = key[0], k1 = key[1];
        for (int r = 0; r < 10; r++) {
            const uint64_t p0 = (uint64_t)PHILOX_M0 * x0, p1 = (uint64_t)PHILOX_M1 * x2;
            x0 = (uint32_t)(p1 >> 32) ^ x1 ^ k0;
            x2 = (uint32_t)(p0 >> 32) ^ x3 ^ k1;
            x1 = (uint32_t)p1;
            x3 = (uint32_t)p0;
            k0 += PHILOX_W0;
            k1 += PHILOX_W1;
        }
        words[j] = x0;
        words[n + j] = x1;
        words[2 * n + j] = x2;
        words[3 * n + j] = x3;
    }
}

static inline float word_uniform(uint32_t w) { return (float)(w >> 8) * (1.0f / 16777216.0f); }

/* out (nb_steps, n): the uniforms of steps first_step.. of elements [begin, end) (logical
 * order), for the torch loop. */
void philox_uniform(const uint32_t *key, int64_t first_step, int64_t nb_steps, int64_t n,
                    int64_t begin, int64_t end, float *restrict out) {
    uint32_t elem[BLOCK], words[4 * BLOCK];
    for (int64_t lo = begin; lo < end; lo += BLOCK) {
        const int64_t m = (end - lo < BLOCK) ? end - lo : BLOCK;
        for (int64_t j = 0; j < m; j++) elem[j] = (uint32_t)(lo + j);
        for (int64_t t = 0; t < nb_steps; t++) {
            const int64_t step = first_step + t;
            if (t == 0 || (step & 3) == 0) philox_words(elem, (uint32_t)(step >> 2), key, words, m);
            const uint32_t *w = words + (step & 3) * m;
            for (int64_t j = 0; j < m; j++) out[t * n + lo + j] = word_uniform(w[j]);
        }
    }
}

/* log(v) of float32 v (0 or positive normal) by the operations of spikes.log_f32 (-inf at
 * 0); the halving of m and the choice at 0 as bit operations, so that loops vectorise. */
static inline float log_f32(float v) {
    const float ln2_hi = 0.693145752f, ln2_lo = 1.42860677e-06f, sqrt2 = 1.41421354f;
    const uint32_t b = as_bits(v);
    const uint32_t big = (uint32_t)(as_float((b & 0x7fffffu) | 0x3f800000u) > sqrt2);
    const float m = as_float(((b & 0x7fffffu) | 0x3f800000u) - (big << 23)); /* m / 2 */
    const float e = ((float)(int32_t)(b >> 23) - 127.0f) + (float)(int32_t)big;
    const float s = (m - 1.0f) / (m + 1.0f), z = s * s;
    const float r = z * (0.666666687f + z * (0.400000006f + z * (0.285714298f + z * 0.222222224f)));
    const uint32_t zero = (uint32_t)0 - (uint32_t)(b == 0u);
    const float out = e * ln2_hi + (2.0f * s + (s * r + e * ln2_lo));
    return as_float((as_bits(out) & ~zero) | (0xff800000u & zero));
}

/* Escape-noise rules of spikes.ESCAPE_FORMULAS (parameters p, q). */
enum { ESC_STEP = 0, ESC_SIGMOID = 1, ESC_EXPONENTIAL = 2, ESC_SUPERSPIKE = 3 };

/* The recurrent convolution of a layer: rec = {channels C, positions P, taps K, delay,
 * stride_c, stride_p}: a sample's C x P neurons are one block of each step's row, neuron
 * (c, x) at c stride_c + x stride_p of it (either layout); stride 1, padding K / 2, so
 * that out[o, x] = sum over (c, k) of W[o, c, k] in[c, x + k - K / 2]. */
enum { REC_C, REC_P, REC_K, REC_DELAY, REC_SC, REC_SP };

/* The indices j < n with fired[j] (bytes 0 / 1) into `out`, in order; returns how many.
 * Reads eight bytes at a time: at a few percent density most words hold no spike. */
static int64_t spike_list(const uint8_t *restrict fired, int64_t n, int32_t *restrict out) {
    int64_t count = 0, j = 0;
    for (; j + 8 <= n; j += 8) {
        uint64_t word;
        memcpy(&word, fired + j, 8);
        for (; word; word &= word - 1) /* the lowest set bit is byte ctz / 8 */
            out[count++] = (int32_t)(j + (__builtin_ctzll(word) >> 3));
    }
    for (; j < n; j++)
        if (fired[j]) out[count++] = (int32_t)j;
    return count;
}

/* channel[j], position[j]: the neuron (c, x) at index j of a sample's block. */
static void neuron_coordinates(const int64_t *rec, int32_t *channel, int32_t *position) {
    const int64_t C = rec[REC_C], P = rec[REC_P];
    for (int64_t j = 0; j < C * P; j++) {
        channel[j] = (int32_t)((j / rec[REC_SC]) % C);
        position[j] = (int32_t)((j / rec[REC_SP]) % P);
    }
}

/* out (a sample's block, storage order) = the recurrent current of the `count` spikes
 * `spiking` (indices into the block), one event at a time: a spike of neuron (c, x) adds
 * W[:, c, k] to the neurons (:, x + K/2 - k). w_events[(c K + k) C + o] = W[o, c, k]. */
static void recurrent_events(const int32_t *restrict spiking, int64_t count,
                             const int32_t *restrict channel, const int32_t *restrict position,
                             const float *restrict w_events, const int64_t *rec,
                             float *restrict out) {
    const int64_t C = rec[REC_C], P = rec[REC_P], K = rec[REC_K];
    const int64_t sc = rec[REC_SC], sp = rec[REC_SP];
    memset(out, 0, (size_t)(C * P) * sizeof(float));
    for (int64_t i = 0; i < count; i++) {
        const int64_t c = channel[spiking[i]], x = position[spiking[i]];
        for (int64_t k = 0; k < K; k++) {
            const int64_t y = x + K / 2 - k;
            if (y < 0 || y >= P) continue;
            const float *w = w_events + (c * K + k) * C;
            float *o = out + y * sp;
            if (sc == 1) /* channels-last: one contiguous run */
                for (int64_t d = 0; d < C; d++) o[d] += w[d];
            else
                for (int64_t d = 0; d < C; d++) o[d * sc] += w[d];
        }
    }
}

/* Forward.
 * escape, p, q: the rule of spikes.ESCAPE_FORMULAS. ESC_STEP: spike iff mem > threshold;
 *   otherwise each neuron draws u(seed, stream, first_step + t, elem) of sgtheory/random.py
 *   here (key: seed_lo, seed_hi, stream_lo, stream_hi) and spikes iff mem - threshold
 *   exceeds the rule's firing point of u.
 * layout: how a step's storage positions map to logical elements (the draws' index):
 *   layout[0] = ndim (<= 4), then per storage dim, outermost first, its size and the
 *   logical stride of its index. Computed once per block of neurons.
 * Sigmoid with p > 0 finds its firing points logit(u) / p lazily. The bits of a positive
 *   float, read as an integer and divided by 2^23, are log2 of it up to a constant and an
 *   error in [-0.0861, 0] (the mantissa m - 1 in place of log2 m), so
 *   (bits(u) - bits(1 - u)) ln2 / 2^23 is logit(u) within 0.0597. A potential more than
 *   `margin` (in logit units, > 0.0597 plus rounding) above that estimate spikes, one as
 *   far below does not; only the few in between (and u = 0) compute logit_point: the same
 *   spikes as the points computed beforehand, without a logarithm per neuron and step.
 * syn_all: NULL unless the backward pass needs the synaptic current (diff_reset).
 * spikes: NULL, or the spikes again as 0.0 / 1.0 (the layer's output), spared a conversion.
 * delay: steps by which the current arrives late: step t receives cur[t - delay] (0 before),
 *   as if it had been shifted in time (the last `delay` steps of cur are not read).
 * b_mem: 1 - a_mem, computed in double and rounded, as the torch loop's add-with-alpha has it.
 * rec: NULL, or the recurrent convolution (see above; w_events its weights): then a block
 *   is one sample, [begin, end) whole samples, and after each step t the spikes of step
 *   t + 1 - rec[REC_DELAY] add their current to syn, event by event, as the torch loop adds
 *   the convolution's output.
 * mem_all gets the membrane potential from which each step's spike was drawn.
 * Returns 0, or -1 if the scratch memory could not be allocated.
 */
int lif_forward(const float *restrict cur, int escape, float p, float q,
                const uint32_t *restrict key, int64_t first_step, const int64_t *restrict layout,
                float margin, float *restrict mem_all, uint8_t *restrict fired,
                float *restrict syn_all, float *restrict spikes, int64_t nb_steps, int64_t row,
                int64_t begin, int64_t end, float a_syn, float a_mem, float b_mem,
                float threshold, int reset_full, int64_t delay, const float *restrict w_events,
                const int64_t *restrict rec) {
    const int64_t block = rec ? rec[REC_C] * rec[REC_P] : BLOCK;
    float *scratch = malloc((size_t)block * 14 * sizeof(float));
    if (!scratch) return -1;
    float *syn = scratch, *mem = syn + block, *x = mem + block, *zeros = x + block;
    float *current = zeros + block; /* the recurrent current of a step */
    uint32_t *elem = (uint32_t *)(current + block), *words = elem + block; /* 4 per neuron */
    uint8_t *open = (uint8_t *)(words + 4 * block); /* sigmoid: the undecided neurons */
    int32_t *spiking = (int32_t *)(words + 5 * block), *channel = spiking + block;
    int32_t *position = channel + block;
    if (rec) neuron_coordinates(rec, channel, position);
    memset(zeros, 0, (size_t)block * sizeof(float)); /* the current of the first `delay` steps */
    const float lerp_coeff = a_mem - 1.0f; /* torch.lerp(syn, mem, a_mem), a_mem >= 0.5 */
    const int lerp_small = fabsf(a_mem) < 0.5f;
    const int lazy = escape == ESC_SIGMOID && p > 0.0f && p < INFINITY;
    for (int64_t lo = begin; lo < end; lo += block) {
        const int64_t n = (end - lo < block) ? end - lo : block;
        for (int64_t j = 0; j < n; j++) {
            int64_t rest = lo + j, index = 0;
            for (int64_t d = layout[0] - 1; d >= 0; d--) {
                index += (rest % layout[1 + 2 * d]) * layout[2 + 2 * d];
                rest /= layout[1 + 2 * d];
            }
            elem[j] = (uint32_t)index;
            syn[j] = 0.0f;
            mem[j] = 0.0f;
        }
        for (int64_t t = 0; t < nb_steps; t++) {
            const int64_t off = t * row + lo, step = first_step + t;
            const float *c = (t >= delay) ? cur + off - delay * row : zeros;
            float *m_out = mem_all + off;
            uint8_t *f_out = fired + off;
            if (spikes && t > 0) /* the previous step's, while in cache */
                for (int64_t j = 0; j < n; j++) spikes[off - row + j] = (float)f_out[j - row];
            if (syn_all)
                for (int64_t j = 0; j < n; j++) syn_all[off + j] = syn[j];
            if (escape != ESC_STEP && (t == 0 || (step & 3) == 0))
                philox_words(elem, (uint32_t)(step >> 2), key, words, n);
            const uint32_t *w = words + (step & 3) * n;
            for (int64_t j = 0; j < n; j++) x[j] = mem[j] - threshold;
            if (escape == ESC_STEP) {
                for (int64_t j = 0; j < n; j++) f_out[j] = mem[j] > threshold;
            } else if (lazy) { /* decide by the estimate, then the few undecided exactly */
                uint32_t any_open = 0;
                const float to_logit = 0.693147182f / 8388608.0f, inv_beta = 1.0f / p;
                for (int64_t j = 0; j < n; j++) {
                    const float u = word_uniform(w[j]);
                    const int32_t diff = (int32_t)as_bits(u) - (int32_t)as_bits(1.0f - u);
                    const float estimate = (float)diff * to_logit;
                    const uint8_t above = x[j] > (estimate + margin) * inv_beta;
                    const uint8_t below = !(x[j] > (estimate - margin) * inv_beta);
                    const uint8_t inside = (uint8_t)logit_in_range(u);
                    f_out[j] = above & inside;
                    open[j] = !(inside & (above | below));
                    any_open |= open[j];
                }
                if (any_open)
                    for (int64_t j = 0; j < n; j++)
                        if (open[j]) f_out[j] = x[j] > logit_point(word_uniform(w[j]), p);
            } else if (escape == ESC_SIGMOID) {
                for (int64_t j = 0; j < n; j++) f_out[j] = x[j] > logit_point(word_uniform(w[j]), p);
            } else if (escape == ESC_EXPONENTIAL) {
                for (int64_t j = 0; j < n; j++) {
                    const float point = log_f32(word_uniform(w[j]) / p) * q;
                    f_out[j] = x[j] > point;
                }
            } else { /* ESC_SUPERSPIKE */
                for (int64_t j = 0; j < n; j++) {
                    const float v = 2.0f * word_uniform(w[j]) - 1.0f;
                    f_out[j] = x[j] > v / (p * (1.0f - fabsf(v)));
                }
            }
            for (int64_t j = 0; j < n; j++) {
                const float m = mem[j];
                m_out[j] = m;
                const uint8_t s = f_out[j];
                float next;
                if (reset_full) {
                    if (lerp_small)
                        next = fmaf(a_mem, m - syn[j], syn[j]);
                    else
                        next = fmaf(lerp_coeff, m - syn[j], m);
                    next = s ? 0.0f : next;
                } else {
                    const float leak = s ? 0.0f : m * a_mem;
                    next = fmaf(b_mem, syn[j], leak); /* torch.add(leak, syn, alpha=b_mem) */
                }
                mem[j] = next;
                syn[j] = syn[j] * a_syn + c[j];
            }
            const int64_t source = rec ? t + 1 - rec[REC_DELAY] : -1;
            if (source >= 0) {
                const int64_t count = spike_list(fired + source * row + lo, n, spiking);
                recurrent_events(spiking, count, channel, position, w_events, rec, current);
                for (int64_t j = 0; j < n; j++) syn[j] += current[j];
            }
        }
        if (spikes && nb_steps > 0)
            for (int64_t j = 0; j < n; j++)
                spikes[(nb_steps - 1) * row + lo + j] = (float)fired[(nb_steps - 1) * row + lo + j];
    }
    free(scratch);
    return 0;
}

/* Surrogate derivatives that the backward loop evaluates itself: the formulas of
 * KERNEL_FORMULAS in spikes.py, with the same numbers (a test reads them here); native/lif.py
 * lists them in INLINE_FORMULAS. The others (with exp) come precomputed by torch's
 * vectorised kernels, as SG_GIVEN. */
enum { SG_GIVEN = -1, SG_SUPERSPIKE = 0, SG_SPIKE = 1 };

/* Vectors of VW floats for the adjoint's product: AVX-512 or AVX2 registers where the
 * compiler targets them, else one float. */
#if defined(__AVX512F__)
#include <immintrin.h>
#define VW 16
typedef __m512 vf;
#define VF_LOAD _mm512_loadu_ps
#define VF_STORE _mm512_storeu_ps
#define VF_SET1 _mm512_set1_ps
#define VF_FMA _mm512_fmadd_ps
#elif defined(__AVX2__) && defined(__FMA__)
#include <immintrin.h>
#define VW 8
typedef __m256 vf;
#define VF_LOAD _mm256_loadu_ps
#define VF_STORE _mm256_storeu_ps
#define VF_SET1 _mm256_set1_ps
#define VF_FMA _mm256_fmadd_ps
#else
#define VW 1
typedef float vf;
#define VF_LOAD(ptr) (*(ptr))
#define VF_STORE(ptr, v) (*(ptr) = (v))
#define VF_SET1(v) (v)
#define VF_FMA fmaf
#endif
/* accumulators a tile may hold in registers (of 32 AVX-512 or 16 AVX2 ones) */
#define TILE_ACC (VW == 16 ? 24 : 12)
#define TILE_ROWS 6

/* acc[x C + c] for positions x0 .. x0 + rows - 1 and channels c0 .. c0 + vecs VW - 1 of
 * adjoint_product, the sums in registers: per (k, o), `vecs` weight vectors and `rows`
 * broadcasts feed rows x vecs multiply-adds. */
static inline __attribute__((always_inline)) void
product_tile(const float *restrict padded, const float *restrict w, float *restrict acc,
             int64_t C, int64_t K, int64_t x0, int64_t c0, const int rows, const int vecs) {
    vf a[TILE_ROWS][4];
    for (int r = 0; r < rows; r++)
        for (int v = 0; v < vecs; v++) a[r][v] = VF_SET1(0.0f);
    for (int64_t k = 0; k < K; k++) {
        const float *l = padded + (x0 - k + 2 * (K / 2)) * C, *wk = w + k * C * C + c0;
        for (int64_t o = 0; o < C; o++) {
            vf wv[4];
            for (int v = 0; v < vecs; v++) wv[v] = VF_LOAD(wk + o * C + v * VW);
            for (int r = 0; r < rows; r++) {
                const vf lr = VF_SET1(l[r * C + o]);
                for (int v = 0; v < vecs; v++) a[r][v] = VF_FMA(lr, wv[v], a[r][v]);
            }
        }
    }
    for (int r = 0; r < rows; r++)
        for (int v = 0; v < vecs; v++) VF_STORE(acc + (x0 + r) * C + c0 + v * VW, a[r][v]);
}

/* The tiles of `vecs` vectors over all positions: as many rows as the registers allow,
 * then the last rows in one tile of their own size. */
static inline __attribute__((always_inline)) void
product_column(const float *restrict padded, const float *restrict w, float *restrict acc,
               int64_t C, int64_t P, int64_t K, int64_t c0, const int vecs) {
    const int most = TILE_ACC / vecs < TILE_ROWS ? TILE_ACC / vecs : TILE_ROWS;
    int64_t x0 = 0;
    for (; x0 + most <= P; x0 += most) product_tile(padded, w, acc, C, K, x0, c0, most, vecs);
    for (int rows = most - 1; rows >= 1; rows--) /* constant in each unrolled copy */
        if (P - x0 == rows) product_tile(padded, w, acc, C, K, x0, c0, rows, vecs);
}

/* acc[x C + c] = sum over (k, o) of w[(k C + o) C + c] padded[(x - k + 2 (K / 2)) C + o]
 * for x < P, c < C: the transposed recurrent convolution, tiled over positions x channels
 * (the channels that fill no whole vector one by one). */
static void adjoint_product(const float *restrict padded, const float *restrict w,
                            float *restrict acc, int64_t C, int64_t P, int64_t K) {
    int64_t c0 = 0;
    for (; c0 + 4 * VW <= C; c0 += 4 * VW) product_column(padded, w, acc, C, P, K, c0, 4);
    for (; c0 + 2 * VW <= C; c0 += 2 * VW) product_column(padded, w, acc, C, P, K, c0, 2);
    for (; c0 + VW <= C; c0 += VW) product_column(padded, w, acc, C, P, K, c0, 1);
    for (; c0 < C; c0++)
        for (int64_t x = 0; x < P; x++) {
            float a = 0.0f;
            for (int64_t k = 0; k < K; k++)
                for (int64_t o = 0; o < C; o++)
                    a = fmaf(padded[(x - k + 2 * (K / 2)) * C + o], w[(k * C + o) * C + c0], a);
            acc[x * C + c0] = a;
        }
}

/* The recurrent terms of the adjoint at step t of one sample, from dL/dsyn[t + delay]
 * (`later`, the sample's block, storage order): into `term` (storage order) the
 * transposed convolution sum over (o, k) of W[o, c, k] later[o, x - k + K/2], the
 * gradient that reaches the spikes of step t, and into grad_w[(c K + k) C + o] the
 * weight gradient of the `count` spikes `spiking` of step t (indices into the block;
 * channel and position of each index as neuron_coordinates gives them), event by event (a spike of (c, x) adds
 * later[o, x - k + K/2] to dW[o, c, k]). w_adjoint[(k C + o) C + c] = W[o, c, k];
 * scratch: (P + K) C + P C floats. */
static void recurrent_adjoint(const float *restrict later, const int32_t *restrict spiking,
                              int64_t count, const int32_t *restrict channel,
                              const int32_t *restrict position,
                              const float *restrict w_adjoint, const int64_t *rec,
                              float *restrict scratch, float *restrict term,
                              float *restrict grad_w) {
    const int64_t C = rec[REC_C], P = rec[REC_P], K = rec[REC_K], half = K / 2;
    const int64_t sc = rec[REC_SC], sp = rec[REC_SP];
    float *padded = scratch, *acc = scratch + (P + 2 * half) * C; /* [x + K/2][o], [x][c] */
    memset(padded, 0, (size_t)((P + 2 * half) * C) * sizeof(float));
    for (int64_t x = 0; x < P; x++)
        for (int64_t o = 0; o < C; o++) padded[(x + half) * C + o] = later[o * sc + x * sp];
    for (int64_t i = 0; i < count; i++) {
        const int64_t c = channel[spiking[i]], x = position[spiking[i]];
        for (int64_t k = 0; k < K; k++) {
            const float *l = padded + (x - k + 2 * half) * C;
            float *g = grad_w + (c * K + k) * C;
            for (int64_t o = 0; o < C; o++) g[o] += l[o];
        }
    }
    adjoint_product(padded, w_adjoint, acc, C, P, K);
    for (int64_t x = 0; x < P; x++)
        for (int64_t c = 0; c < C; c++) term[c * sc + x * sp] = acc[x * C + c];
}

/* One block of neurons (one sample with a recurrent convolution) through the adjoint
 * recursion. Inlined with constant `kind`, `has_pre` and `reset_full`, so that each
 * combination gets its own branch-free, vectorised loop.
 * dL/dsyn of the last `ring` steps is kept in `lam_syn`, ring blocks: step t reads
 * dL/dsyn[t + 1] from block (t + 1) % ring and writes dL/dsyn[t] over dL/dsyn[t + ring] in
 * block t % ring, which the recurrent term (ring = rec delay) has read before. */
static inline __attribute__((always_inline)) void
backward_block(const uint8_t *restrict fired, const float *restrict mem,
               const float *restrict sg, const float *restrict grad_spikes,
               const float *restrict pre, float *restrict grad_cur, int64_t nb_steps,
               int64_t row, int64_t lo, int64_t n, float syn_ratio, float a_mem, float b_mem,
               float threshold, float p, const int kind, const int has_pre,
               const int reset_full, int64_t delay, const float *restrict w_adjoint,
               const int64_t *restrict rec, float *restrict scratch, float *restrict grad_w) {
    const int64_t ring = rec ? rec[REC_DELAY] : 1;
    float *restrict lam_mem = scratch, *restrict term = scratch + n;
    float *lam_syn = scratch + 2 * n; /* ring blocks; read and written at the same index */
    int32_t *spiking = (int32_t *)(lam_syn + ring * n), *channel = spiking + n;
    int32_t *position = channel + n;
    float *product = (float *)(position + n); /* the recurrent term's scratch */
    if (rec) neuron_coordinates(rec, channel, position);
    for (int64_t j = 0; j < n; j++) lam_mem[j] = 0.0f;
    for (int64_t j = 0; j < ring * n; j++) lam_syn[j] = 0.0f;
    for (int64_t t = nb_steps - 1 - delay; t < nb_steps; t++) /* reach no synapse in time */
        if (t >= 0)
            for (int64_t j = 0; j < n; j++) grad_cur[t * row + lo + j] = 0.0f;
    for (int64_t t = nb_steps - 1; t >= 0; t--) {
        const int64_t off = t * row + lo;
        const float *lam_in = lam_syn + ((t + 1) % ring) * n; /* dL/dsyn[t + 1] */
        float *lam_out = lam_syn + (t % ring) * n;            /* dL/dsyn[t + ring] */
        const int has_rec = rec && t + ring <= nb_steps;
        if (has_rec) {
            const int64_t count = spike_list(fired + off, n, spiking);
            recurrent_adjoint(lam_out, spiking, count, channel, position, w_adjoint, rec,
                              product, term, grad_w);
        }
        for (int64_t j = 0; j < n; j++) {
            float g_total = grad_spikes[off + j];
            if (has_rec) g_total = g_total + term[j];
            if (has_pre) g_total = g_total - lam_mem[j] * pre[off + j];
            const float spike = (float)fired[off + j];
            float d;
            if (kind == SG_SUPERSPIKE) { /* 1 / (p |x| + 1)^2 */
                const float y = p * fabsf(mem[off + j] - threshold) + 1.0f;
                d = 1.0f / (y * y);
            } else if (kind == SG_SPIKE) { /* the spike itself */
                d = spike;
            } else {
                d = sg[off + j];
            }
            const float through = lam_mem[j] - lam_mem[j] * spike; /* lam_mem (1 - S) */
            const float carried = reset_full ? through : lam_mem[j];
            const float g_syn = fmaf(lam_in[j], syn_ratio, carried) * b_mem; /* add, alpha */
            if (t > delay) /* dL/dcur[t-1-delay] = dL/dI[t-1] = dL/dsyn[t] */
                grad_cur[off - (delay + 1) * row + j] = g_syn;
            lam_out[j] = g_syn;
            lam_mem[j] = through * a_mem + g_total * d;
        }
    }
}

#define BACKWARD_CASE(KIND, PRE, FULL)                                                     \
    if (kind == (KIND) && has_pre == (PRE) && reset_full == (FULL)) {                     \
        for (int64_t lo = begin; lo < end; lo += block)                                   \
            backward_block(fired, mem, sg, grad_spikes, pre, grad_cur, nb_steps, row, lo,  \
                           (end - lo < block) ? end - lo : block, syn_ratio, a_mem, b_mem, \
                           threshold, p, KIND, PRE, FULL, delay, w_adjoint, rec, scratch,  \
                           grad_w);                                                        \
        free(scratch);                                                                     \
        return 0;                                                                          \
    }
#define BACKWARD_CASES(KIND)                                                               \
    BACKWARD_CASE(KIND, 0, 0) BACKWARD_CASE(KIND, 0, 1) BACKWARD_CASE(KIND, 1, 0)          \
    BACKWARD_CASE(KIND, 1, 1)

/* Backward: the adjoint recursion, time-reversed, for neurons [begin, end).
 * mem: the potential of each step (as returned by the forward pass); kind: SG_SUPERSPIKE
 *   (parameter p) or SG_SPIKE to evaluate the surrogate derivative at mem - threshold here,
 *   SG_GIVEN to read it from `sg`; q is the formulas' second parameter (unused here).
 * grad_spikes: dL/dS; grad_cur: (nb_steps, row) gets dL/dcur[t] = dL/dI[t + delay] =
 *   dL/dsyn[t + delay + 1] (0 for the last delay + 1 steps); the same size as the other
 *   arrays, so the allocator can reuse their blocks.
 * pre: NULL unless diff_reset; then the pre-reset potential of each step, whose product
 *   with dL/dmem[t+1] flows back through the differentiable reset.
 * b_mem = 1 - a_mem and syn_ratio = a_syn / b_mem come rounded from double, as the torch
 *   loop's scalar arguments are.
 * rec: NULL, or the recurrent convolution as in lif_forward (w_adjoint its weights): blocks are samples, the spikes also receive the recurrent terms, and grad_w
 *   (C K C floats, zeroed by the caller) accumulates dL/dW of these samples.
 * Returns 0, or -1 if the scratch memory could not be allocated.
 */
int lif_backward(const uint8_t *fired, const float *mem, const float *sg,
                 const float *grad_spikes, const float *pre, float *grad_cur, int64_t nb_steps,
                 int64_t row, int64_t begin, int64_t end, float syn_ratio, float a_mem,
                 float b_mem, float threshold, int reset_full, int kind, float p, float q,
                 int64_t delay, const float *w_adjoint, const int64_t *rec, float *grad_w) {
    (void)q;
    const int has_pre = pre != 0;
    const int64_t block = rec ? rec[REC_C] * rec[REC_P] : BLOCK;
    const int64_t ring = rec ? rec[REC_DELAY] : 1; /* + the recurrent term's: */
    const int64_t extra = rec ? (rec[REC_P] + rec[REC_K]) * rec[REC_C] + block : 0;
    float *scratch = malloc((size_t)((5 + ring) * block + extra) * sizeof(float));
    if (!scratch) return -1;
    reset_full = reset_full != 0;
    BACKWARD_CASES(SG_GIVEN)
    BACKWARD_CASES(SG_SUPERSPIKE)
    BACKWARD_CASES(SG_SPIKE)
    free(scratch);
    return 0;
}
