/* The recurrent convolution inside the LIF scan (lif_scan.c): spikes as events in the forward,
 * the transposed convolution as a register-tiled product and the weight gradient as events in
 * the adjoint; static, included by lif_scan.c only. */
#ifndef SGTHEORY_RECURRENCE_H
#define SGTHEORY_RECURRENCE_H

#include <math.h>
#include <stdint.h>
#include <string.h>

/* The recurrent convolution of a layer: rec = {channels C, positions P, taps K, delay,
 * stride_c, stride_p}: a sample's C x P neurons are one block of each step's row, neuron
 * (c, x) at c stride_c + x stride_p of it (either layout); stride 1, padding K / 2, so
 * that out[o, x] = sum over (c, k) of W[o, c, k] in[c, x + k - K / 2]. */
enum { REC_C, REC_P, REC_K, REC_DELAY, REC_SC, REC_SP };

/* The indices j < n with fired[j] (bytes 0 / 1) into `out`, in order; returns how many.
 * Reads eight bytes at a time: at a few percent density most words hold no spike. The
 * byte of a set bit is its position / 8 on little-endian CPUs only (elsewhere the build
 * fails and the torch loop runs). */
_Static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__, "spike_list reads bytes as words");
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

#endif
