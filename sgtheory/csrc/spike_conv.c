/* 1-D convolution and its weight gradient driven by sparse inputs (spikes), float32.
 *
 * A spiking layer's input is mostly zeros (a Randman network's: 1-6 % ones). A dense
 * matrix product multiplies every zero; here each sample's nonzero inputs are listed and
 * only their weights are added: the work scales with the number of nonzeros. The result is
 * the same sum as the dense product's, taken in another order (float rounding apart); the
 * kernels are correct for any input values, fast only for sparse ones.
 *
 * Shapes. Input x: samples of `cin` channels x `lin` positions, one row of cin * lin values
 * per sample; channels_last: row index l * cin + c, else c * lin + l. Weights `taps`:
 * (k * cin, cout) rows ordered (tap, channel). Output and output gradient: (lout * cout)
 * per sample, row index p * cout + o (channels-last). Output position p reads input
 * position p * stride - padding + tap.
 *
 * Each call runs samples [begin, end) (one call per thread). It gives up, returning -1,
 * where the range holds more than a fraction `max_density` of nonzeros: the caller then
 * runs a dense algorithm, so that a dense input never takes this slow path. Else it
 * returns the number of nonzeros. To give up early, it first counts the nonzeros of every
 * PROBE-th sample: samples are ordered (time, batch), and spikes may crowd into some time
 * steps, so a spread-out probe, not the first samples, tells the range's density.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define GROUP 16 /* inputs tested at once for all zeros (bit patterns or-ed together) */
#define PROBE 16 /* every PROBE-th sample is counted first, to give up early */

/* Whether float bit pattern b is nonzero: +0 and -0 are zeros (the sign bit shifted out). */
#define NONZERO(b) ((uint32_t)((b) << 1) != 0u)

/* The nonzeros of one input row of n values: their indices into idx, values into val. */
static int64_t nonzeros_f32(const float *restrict row, int64_t n, int32_t *restrict idx,
                            float *restrict val) {
    const uint32_t *bits = (const uint32_t *)row;
    int64_t m = 0, i = 0;
    for (; i + GROUP <= n; i += GROUP) {
        uint32_t any = 0;
        for (int j = 0; j < GROUP; j++) any |= bits[i + j] << 1;
        if (any)
            for (int j = 0; j < GROUP; j++)
                if (NONZERO(bits[i + j])) {
                    idx[m] = (int32_t)(i + j);
                    val[m++] = row[i + j];
                }
    }
    for (; i < n; i++)
        if (NONZERO(bits[i])) {
            idx[m] = (int32_t)i;
            val[m++] = row[i];
        }
    return m;
}

static int64_t nonzeros_u8(const uint8_t *restrict row, int64_t n, int32_t *restrict idx,
                           float *restrict val) {
    int64_t m = 0, i = 0;
    for (; i + 8 <= n; i += 8) {
        uint64_t any;
        memcpy(&any, row + i, 8);
        if (any)
            for (int j = 0; j < 8; j++)
                if (row[i + j]) {
                    idx[m] = (int32_t)(i + j);
                    val[m++] = 1.0f;
                }
    }
    for (; i < n; i++)
        if (row[i]) {
            idx[m] = (int32_t)i;
            val[m++] = 1.0f;
        }
    return m;
}

/* Whether every PROBE-th sample of [begin, end) holds more than max_density nonzeros. */
static int probe_too_dense(const void *x, int x_bool, int64_t width, int64_t begin,
                           int64_t end, double max_density) {
    int64_t count = 0, rows = 0;
    for (int64_t n = begin; n < end; n += PROBE, rows++) {
        if (x_bool) {
            const uint8_t *row = (const uint8_t *)x + n * width;
            for (int64_t i = 0; i < width; i++) count += row[i] != 0;
        } else {
            const uint32_t *row = (const uint32_t *)x + n * width;
            for (int64_t i = 0; i < width; i++) count += NONZERO(row[i]);
        }
    }
    return (double)count > max_density * (double)(rows * width);
}

typedef struct {
    int64_t cin, lin, cout, k, stride, padding, lout;
    int channels_last;
} geometry;

/* Position and channel of input index i. */
static inline void split_index(const geometry *g, int32_t i, int64_t *l, int64_t *c) {
    if (g->channels_last) {
        *l = i / g->cin;
        *c = i % g->cin;
    } else {
        *c = i / g->lin;
        *l = i % g->lin;
    }
}

/* The output positions [*p_lo, *p_hi) whose window holds input position l. */
static inline void reached(const geometry *g, int64_t l, int64_t *p_lo, int64_t *p_hi) {
    const int64_t last = l + g->padding;       /* tap 0 of position p sits at p*stride-pad */
    const int64_t first = last - (g->k - 1);   /* p * stride in [first, last] */
    int64_t lo = first <= 0 ? 0 : (first + g->stride - 1) / g->stride;
    int64_t hi = last < 0 ? 0 : last / g->stride + 1;
    *p_lo = lo;
    *p_hi = hi < g->lout ? hi : g->lout;
}

/* Index lists large enough for one row; NULL when out of memory. */
static int lists(int64_t n, int32_t **idx, float **val) {
    *idx = malloc(sizeof(int32_t) * (size_t)(n > 0 ? n : 1));
    *val = malloc(sizeof(float) * (size_t)(n > 0 ? n : 1));
    if (*idx && *val) return 1;
    free(*idx);
    free(*val);
    return 0;
}

/* out[n] = sum over x[n]'s nonzeros of value x weights of (tap, channel), for n in range.
 * x_bool: x is uint8 (0 / 1) instead of float. Returns the nonzeros seen, or -1 (too many,
 * or out of memory). */
int64_t spike_conv_forward(const void *x, const float *restrict taps, float *restrict out,
                           int64_t cin, int64_t lin, int64_t cout, int64_t k, int64_t stride,
                           int64_t padding, int64_t lout, int channels_last, int x_bool,
                           int64_t begin, int64_t end, double max_density) {
    const geometry g = {cin, lin, cout, k, stride, padding, lout, channels_last};
    const int64_t width = cin * lin, out_width = lout * cout;
    int32_t *idx;
    float *val;
    if (probe_too_dense(x, x_bool, width, begin, end, max_density)) return -1;
    if (!lists(width, &idx, &val)) return -1;
    const int64_t max_nonzeros = (int64_t)(max_density * (double)((end - begin) * width));
    int64_t seen = 0;
    for (int64_t n = begin; n < end; n++) {
        const int64_t m = x_bool ? nonzeros_u8((const uint8_t *)x + n * width, width, idx, val)
                                 : nonzeros_f32((const float *)x + n * width, width, idx, val);
        seen += m;
        if (seen > max_nonzeros) {
            seen = -1;
            break;
        }
        float *restrict o = out + n * out_width;
        memset(o, 0, sizeof(float) * (size_t)out_width);
        for (int64_t q = 0; q < m; q++) {
            int64_t l, c, p_lo, p_hi;
            split_index(&g, idx[q], &l, &c);
            reached(&g, l, &p_lo, &p_hi);
            const float v = val[q];
            for (int64_t p = p_lo; p < p_hi; p++) {
                const float *restrict w = taps + ((l + padding - p * stride) * cin + c) * cout;
                float *restrict y = o + p * cout;
                for (int64_t j = 0; j < cout; j++) y[j] += v * w[j];
            }
        }
    }
    free(idx);
    free(val);
    return seen;
}

/* acc (k * cin, cout), zeroed here, gets the sum over samples in range of x[n]'s nonzeros
 * times the output gradient at the positions they reach: dL/dw in (tap, channel) rows. */
int64_t spike_conv_weight_grad(const void *x, const float *restrict grad_out,
                               float *restrict acc, int64_t cin, int64_t lin, int64_t cout,
                               int64_t k, int64_t stride, int64_t padding, int64_t lout,
                               int channels_last, int x_bool, int64_t begin, int64_t end,
                               double max_density) {
    const geometry g = {cin, lin, cout, k, stride, padding, lout, channels_last};
    const int64_t width = cin * lin, out_width = lout * cout;
    int32_t *idx;
    float *val;
    memset(acc, 0, sizeof(float) * (size_t)(k * cin * cout));
    if (probe_too_dense(x, x_bool, width, begin, end, max_density)) return -1;
    if (!lists(width, &idx, &val)) return -1;
    const int64_t max_nonzeros = (int64_t)(max_density * (double)((end - begin) * width));
    int64_t seen = 0;
    for (int64_t n = begin; n < end; n++) {
        const int64_t m = x_bool ? nonzeros_u8((const uint8_t *)x + n * width, width, idx, val)
                                 : nonzeros_f32((const float *)x + n * width, width, idx, val);
        seen += m;
        if (seen > max_nonzeros) {
            seen = -1;
            break;
        }
        const float *restrict gn = grad_out + n * out_width;
        for (int64_t q = 0; q < m; q++) {
            int64_t l, c, p_lo, p_hi;
            split_index(&g, idx[q], &l, &c);
            reached(&g, l, &p_lo, &p_hi);
            const float v = val[q];
            for (int64_t p = p_lo; p < p_hi; p++) {
                float *restrict a = acc + ((l + padding - p * stride) * cin + c) * cout;
                const float *restrict gp = gn + p * cout;
                for (int64_t j = 0; j < cout; j++) a[j] += v * gp[j];
            }
        }
    }
    free(idx);
    free(val);
    return seen;
}
