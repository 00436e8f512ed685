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
 * (k * cin, cout) rows ordered (tap, channel). Output and output gradient: lout * cout
 * values per sample; out_channels_last: row index p * cout + o, else o * lout + p (then
 * each sample's row is transposed through a small scratch row, not the whole array).
 * Output position p reads input position p * stride - padding + tap.
 *
 * Each call runs part `part` of `parts` (one call per thread): the chunks of SPAN samples
 * numbered part, part + parts, part + 2 parts, ... Samples are ordered (time, batch) and
 * spikes may crowd into some time steps (a Randman input's into the first half), so dealing
 * out small chunks in turn, not one block per thread, gives every thread a like share of
 * the work. A call gives up, returning -1, where its part holds more than a fraction
 * `max_density` of nonzeros: the caller then runs a dense algorithm, so that a dense input
 * never takes this slow path. Else it returns the number of nonzeros. To give up early, it
 * first counts the nonzeros of every PROBE-th sample of its part.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define GROUP 16 /* inputs tested at once for all zeros (bit patterns or-ed together) */
#define PROBE 16 /* every PROBE-th sample is counted first, to give up early */
#define SPAN 64   /* samples per chunk dealt out to the parts (a multiple of PROBE) */

/* Loop over the samples n of part `part` of `parts` (see above). */
#define FOR_SAMPLES_OF_PART(n, samples, part, parts, step)                                 \
    for (int64_t lo_ = (part) * SPAN; lo_ < (samples); lo_ += (parts) * SPAN)              \
        for (int64_t n = lo_, hi_ = lo_ + SPAN < (samples) ? lo_ + SPAN : (samples); n < hi_; \
             n += (step))

/* The number of samples in part `part` of `parts`. */
static int64_t part_size(int64_t samples, int64_t part, int64_t parts) {
    int64_t count = 0;
    for (int64_t lo = part * SPAN; lo < samples; lo += parts * SPAN)
        count += (lo + SPAN < samples ? lo + SPAN : samples) - lo;
    return count;
}

/* Whether float bit pattern b is nonzero: +0 and -0 are zeros (the sign bit shifted out). */
#define NONZERO(b) ((uint32_t)((b) << 1) != 0u)

/* The nonzeros of one input row of n values: their indices into idx, values into val.
 * A group of GROUP values is skipped after one test when all are zero; in the others,
 * every value is written and the count advanced only for a nonzero (no branch to
 * mispredict). idx and val hold n entries. */
static int64_t nonzeros_f32(const float *restrict row, int64_t n, int32_t *restrict idx,
                            float *restrict val) {
    const uint32_t *bits = (const uint32_t *)row;
    int64_t m = 0, i = 0;
    for (; i + GROUP <= n; i += GROUP) {
        uint64_t any = 0, word;
        for (int j = 0; j < GROUP; j += 2) {
            memcpy(&word, bits + i + j, 8);
            any |= word;
        }
        if (any & 0x7fffffff7fffffffull)
            for (int j = 0; j < GROUP; j++) {
                idx[m] = (int32_t)(i + j);
                val[m] = row[i + j];
                m += NONZERO(bits[i + j]);
            }
    }
    for (; i < n; i++) {
        idx[m] = (int32_t)i;
        val[m] = row[i];
        m += NONZERO(bits[i]);
    }
    return m;
}

static int64_t nonzeros_u8(const uint8_t *restrict row, int64_t n, int32_t *restrict idx,
                           float *restrict val) {
    int64_t m = 0, i = 0;
    for (; i + GROUP <= n; i += GROUP) {
        uint64_t lo, hi;
        memcpy(&lo, row + i, 8);
        memcpy(&hi, row + i + 8, 8);
        if (lo | hi)
            for (int j = 0; j < GROUP; j++) {
                idx[m] = (int32_t)(i + j);
                val[m] = 1.0f;
                m += row[i + j] != 0;
            }
    }
    for (; i < n; i++) {
        idx[m] = (int32_t)i;
        val[m] = 1.0f;
        m += row[i] != 0;
    }
    return m;
}

/* Whether every PROBE-th sample of the part holds more than max_density nonzeros. */
static int probe_too_dense(const void *x, int x_bool, int64_t width, int64_t samples,
                           int64_t part, int64_t parts, double max_density) {
    int64_t count = 0, rows = 0;
    FOR_SAMPLES_OF_PART(n, samples, part, parts, PROBE) {
        rows++;
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

/* Per input index i of a row: its position and channel; per input position l: the output
 * positions [p_lo, p_hi) whose window holds it. Tables, so that no division is left in the
 * loops over nonzeros. Plus the index lists of one row. */
typedef struct {
    int32_t *pos, *chan, *p_lo, *p_hi, *idx;
    float *val, *scratch; /* scratch: one output row, channels-last */
} tables;

static void free_tables(tables *tb) {
    free(tb->pos);
    free(tb->chan);
    free(tb->p_lo);
    free(tb->p_hi);
    free(tb->idx);
    free(tb->val);
    free(tb->scratch);
}

/* Fill the tables; 0 when out of memory. */
static int make_tables(tables *tb, int64_t cin, int64_t lin, int64_t cout, int64_t k,
                       int64_t stride, int64_t padding, int64_t lout, int channels_last) {
    const int64_t width = cin * lin > 0 ? cin * lin : 1;
    tb->pos = malloc(sizeof(int32_t) * (size_t)width);
    tb->chan = malloc(sizeof(int32_t) * (size_t)width);
    tb->p_lo = malloc(sizeof(int32_t) * (size_t)(lin > 0 ? lin : 1));
    tb->p_hi = malloc(sizeof(int32_t) * (size_t)(lin > 0 ? lin : 1));
    tb->idx = malloc(sizeof(int32_t) * (size_t)width);
    tb->val = malloc(sizeof(float) * (size_t)width);
    tb->scratch = malloc(sizeof(float) * (size_t)(lout * cout > 0 ? lout * cout : 1));
    if (!(tb->pos && tb->chan && tb->p_lo && tb->p_hi && tb->idx && tb->val && tb->scratch)) {
        free_tables(tb);
        return 0;
    }
    for (int64_t i = 0; i < cin * lin; i++) {
        tb->pos[i] = (int32_t)(channels_last ? i / cin : i % lin);
        tb->chan[i] = (int32_t)(channels_last ? i % cin : i / lin);
    }
    for (int64_t l = 0; l < lin; l++) {
        const int64_t last = l + padding;     /* output p's tap 0 sits at p * stride - pad, */
        const int64_t first = last - (k - 1); /* so p reaches l iff p * stride in [first, last] */
        const int64_t lo = first <= 0 ? 0 : (first + stride - 1) / stride;
        const int64_t hi = last < 0 ? 0 : last / stride + 1;
        tb->p_lo[l] = (int32_t)lo;
        tb->p_hi[l] = (int32_t)(hi < lout ? hi : lout);
    }
    return 1;
}

/* The part's tables and its budget of nonzeros (max_density of its inputs); -1 where the
 * probe finds the part too dense or memory is short (then nothing is to be freed). */
static int64_t start_part(tables *tb, const void *x, int x_bool, int64_t cin, int64_t lin,
                          int64_t cout, int64_t k, int64_t stride, int64_t padding,
                          int64_t lout, int channels_last, int64_t samples, int64_t part,
                          int64_t parts, double max_density) {
    const int64_t width = cin * lin;
    if (probe_too_dense(x, x_bool, width, samples, part, parts, max_density)) return -1;
    if (!make_tables(tb, cin, lin, cout, k, stride, padding, lout, channels_last)) return -1;
    return (int64_t)(max_density * (double)(part_size(samples, part, parts) * width));
}

/* The nonzeros of sample n into tb->idx / tb->val; their number. */
static int64_t sample_nonzeros(tables *tb, const void *x, int x_bool, int64_t width,
                               int64_t n) {
    return x_bool ? nonzeros_u8((const uint8_t *)x + n * width, width, tb->idx, tb->val)
                  : nonzeros_f32((const float *)x + n * width, width, tb->idx, tb->val);
}

/* out[n] = sum over x[n]'s nonzeros of value x weights of (tap, channel), for n in the part.
 * x_bool: x is uint8 (0 / 1) instead of float. Returns the nonzeros seen, or -1 (too many,
 * or out of memory). */
int64_t spike_conv_forward(const void *x, const float *restrict taps, float *restrict out,
                           int64_t cin, int64_t lin, int64_t cout, int64_t k, int64_t stride,
                           int64_t padding, int64_t lout, int channels_last, int x_bool,
                           int out_channels_last, int64_t samples, int64_t part,
                           int64_t parts, double max_density) {
    const int64_t width = cin * lin, out_width = lout * cout;
    tables tb;
    const int64_t max_nonzeros = start_part(&tb, x, x_bool, cin, lin, cout, k, stride, padding,
                                            lout, channels_last, samples, part, parts,
                                            max_density);
    if (max_nonzeros < 0) return -1;
    int64_t seen = 0;
    FOR_SAMPLES_OF_PART(n, samples, part, parts, 1) {
        const int64_t m = sample_nonzeros(&tb, x, x_bool, width, n);
        if ((seen += m) > max_nonzeros) {
            seen = -1;
            goto done; /* out of both loops */
        }
        float *restrict o = out_channels_last ? out + n * out_width : tb.scratch;
        memset(o, 0, sizeof(float) * (size_t)out_width);
        for (int64_t q = 0; q < m; q++) {
            const int64_t l = tb.pos[tb.idx[q]], c = tb.chan[tb.idx[q]];
            const float v = tb.val[q];
            for (int64_t p = tb.p_lo[l]; p < tb.p_hi[l]; p++) {
                const float *restrict w = taps + ((l + padding - p * stride) * cin + c) * cout;
                float *restrict y = o + p * cout;
                for (int64_t j = 0; j < cout; j++) y[j] += v * w[j];
            }
        }
        if (!out_channels_last) /* the scratch row, transposed into the standard layout */
            for (int64_t p = 0; p < lout; p++)
                for (int64_t j = 0; j < cout; j++)
                    out[n * out_width + j * lout + p] = o[p * cout + j];
    }
done:
    free_tables(&tb);
    return seen;
}

/* acc (k * cin, cout), zeroed here, gets the sum over the part's samples of x[n]'s nonzeros
 * times the output gradient at the positions they reach: dL/dw in (tap, channel) rows. */
int64_t spike_conv_weight_grad(const void *x, const float *restrict grad_out,
                               float *restrict acc, int64_t cin, int64_t lin, int64_t cout,
                               int64_t k, int64_t stride, int64_t padding, int64_t lout,
                               int channels_last, int x_bool, int out_channels_last,
                               int64_t samples, int64_t part, int64_t parts,
                               double max_density) {
    memset(acc, 0, sizeof(float) * (size_t)(k * cin * cout));
    const int64_t width = cin * lin, out_width = lout * cout;
    tables tb;
    const int64_t max_nonzeros = start_part(&tb, x, x_bool, cin, lin, cout, k, stride, padding,
                                            lout, channels_last, samples, part, parts,
                                            max_density);
    if (max_nonzeros < 0) return -1;
    int64_t seen = 0;
    FOR_SAMPLES_OF_PART(n, samples, part, parts, 1) {
        const int64_t m = sample_nonzeros(&tb, x, x_bool, width, n);
        if ((seen += m) > max_nonzeros) {
            seen = -1;
            goto done; /* out of both loops */
        }
        if (m == 0) continue; /* its output gradient is not even read */
        const float *restrict gn = grad_out + n * out_width;
        if (!out_channels_last) { /* transposed into the scratch row */
            for (int64_t p = 0; p < lout; p++)
                for (int64_t j = 0; j < cout; j++) tb.scratch[p * cout + j] = gn[j * lout + p];
            gn = tb.scratch;
        }
        for (int64_t q = 0; q < m; q++) {
            const int64_t l = tb.pos[tb.idx[q]], c = tb.chan[tb.idx[q]];
            const float v = tb.val[q];
            for (int64_t p = tb.p_lo[l]; p < tb.p_hi[l]; p++) {
                float *restrict a = acc + ((l + padding - p * stride) * cin + c) * cout;
                const float *restrict gp = gn + p * cout;
                for (int64_t j = 0; j < cout; j++) a[j] += v * gp[j];
            }
        }
    }
done:
    free_tables(&tb);
    return seen;
}
