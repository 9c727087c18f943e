/*
 * The highest value of the recent past: a maximum over a sliding window
 * of time, kept as the maxima of DW_PEAK_SLOTS equal slots. The window is
 * window_ms, less up to one slot: a value leaves between
 * window_ms - window_ms / DW_PEAK_SLOTS and window_ms after it was recorded.
 *
 * The pool sizes its connection cache by it: to the highest sum of the
 * concurrency limits of the last half minute, not their sum of the moment,
 * so a dip of the limits does not close connections that the next second
 * needs again (through a slow server's accept queue, each costs a second).
 *
 * Pure logic: no clock (now_ms is monotonic, passed in), no threads, no
 * locks. Caller-allocated.
 */
#ifndef DW_PEAK_H
#define DW_PEAK_H

#include <stdint.h>

#define DW_PEAK_SLOTS 8

struct dw_peak {
    int64_t slot_ms;              /* the width of a slot; >= 1 */
    int64_t stamp[DW_PEAK_SLOTS]; /* the slot number (now_ms / slot_ms) each holds; -1: none */
    long max[DW_PEAK_SLOTS];
};

/* An empty window of window_ms (>= DW_PEAK_SLOTS; smaller counts as that). */
void dw_peak_init(struct dw_peak *p, int64_t window_ms);

/* Records value at now_ms (never earlier than the last call's) and returns
 * the highest value recorded in the window, value included. */
long dw_peak_update(struct dw_peak *p, int64_t now_ms, long value);

#endif /* DW_PEAK_H */
