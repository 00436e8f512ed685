/* Fused CPU kernels of the LIF scan (sgtheory/lif.py), float32, time-major.
 *
 * Every array is (nb_steps, row) with `row` neurons per step, contiguous in the neuron
 * index. A call runs neurons [begin, end) through all time steps: the state of a block of
 * neurons (BLOCK of them, or one sample of a layer with a recurrent convolution,
 * recurrence.h) stays in cache and each step touches one short contiguous piece of each
 * row. Python splits the neurons between threads (one call per thread; ctypes releases the
 * GIL). The draws and firing points come from draws.h.
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

#include "draws.h"
#include "recurrence.h"

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

/* Escape-noise rules of spikes.ESCAPE_FORMULAS (parameters p, q). */
enum { ESC_STEP = 0, ESC_SIGMOID = 1, ESC_EXPONENTIAL = 2, ESC_SUPERSPIKE = 3 };

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
