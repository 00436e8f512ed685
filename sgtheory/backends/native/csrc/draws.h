/* Draws and firing points of the LIF scan (lif_scan.c): float bits, the C logit, Philox4x32-10
 * and the logarithm of spikes.log_f32; static inline, included by lif_scan.c only. */
#ifndef SGTHEORY_DRAWS_H
#define SGTHEORY_DRAWS_H

#include <math.h>
#include <stdint.h>
#include <string.h>

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

#endif
