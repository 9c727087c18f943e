/*
 * An intrusive binary min-heap on an int64_t key (a due time): the element
 * embeds a struct dw_heap_node and the heap holds pointers to the nodes, so
 * pushing never copies the element and any node can be removed from the
 * middle (each node knows its place). The one heap of the tree: the pool's
 * timers and the channel simulator's wake-ups.
 *
 * Not thread-safe: the owner serializes access. dw_heap_init/_cleanup
 * (caller-allocated); the heap never owns the elements.
 */
#ifndef DW_HEAP_H
#define DW_HEAP_H

#include <stddef.h>
#include <stdint.h>

#include "dw/common.h" /* DW_CONTAINER_OF */

struct dw_heap_node {
    int64_t key;  /* set before dw_heap_push; do not change while on a heap */
    size_t index; /* the heap's, while on it */
};

struct dw_heap {
    struct dw_heap_node **nodes;
    size_t len;
    size_t cap;
};

void dw_heap_init(struct dw_heap *h);
/* Frees the heap's array, not the elements. */
void dw_heap_cleanup(struct dw_heap *h);

/* Adds node, by its key; grows as needed (aborts on out-of-memory). */
void dw_heap_push(struct dw_heap *h, struct dw_heap_node *node);

/* Takes node, which must be on h, out of it. */
void dw_heap_remove(struct dw_heap *h, struct dw_heap_node *node);

/* The node with the smallest key (ties in no particular order), or NULL
 * when empty; dw_heap_pop also takes it out. */
struct dw_heap_node *dw_heap_top(const struct dw_heap *h);
struct dw_heap_node *dw_heap_pop(struct dw_heap *h);

#endif /* DW_HEAP_H */
