/*
 * The maximum over a sliding window of time (include/dw/peak.h).
 *
 * Invariants: stamp[i] is -1 or the number of a slot that maps to i
 * (slot % DW_PEAK_SLOTS == i), and max[i] is the highest value recorded
 * in that slot. A slot older than the last DW_PEAK_SLOTS counts for
 * nothing, whether or not it was overwritten yet.
 */
#include "dw/peak.h"

void dw_peak_init(struct dw_peak *p, int64_t window_ms)
{
    p->slot_ms = window_ms < DW_PEAK_SLOTS ? 1 : window_ms / DW_PEAK_SLOTS;
    for (int i = 0; i < DW_PEAK_SLOTS; i++) {
        p->stamp[i] = -1;
        p->max[i] = 0;
    }
}

long dw_peak_update(struct dw_peak *p, int64_t now_ms, long value)
{
    int64_t slot = now_ms < 0 ? 0 : now_ms / p->slot_ms;
    int i = (int)(slot % DW_PEAK_SLOTS);
    if (p->stamp[i] != slot) {
        p->stamp[i] = slot;
        p->max[i] = value;
    } else if (value > p->max[i]) {
        p->max[i] = value;
    }
    long highest = value;
    for (int k = 0; k < DW_PEAK_SLOTS; k++) {
        if (p->stamp[k] >= 0 && p->stamp[k] > slot - DW_PEAK_SLOTS && p->stamp[k] <= slot &&
            p->max[k] > highest)
            highest = p->max[k];
    }
    return highest;
}
