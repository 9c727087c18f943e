/*
 * The intrusive binary min-heap: an array of node pointers, each node
 * remembering its index so removal from the middle is O(log n). Single
 * owner; no locking here.
 */
#include "dw/heap.h"

#include <stdlib.h>

#include "dw/common.h"

void dw_heap_init(struct dw_heap *h)
{
    h->nodes = NULL;
    h->len = h->cap = 0;
}

void dw_heap_cleanup(struct dw_heap *h)
{
    free(h->nodes);
    dw_heap_init(h);
}

static void place(struct dw_heap *h, size_t i, struct dw_heap_node *node)
{
    h->nodes[i] = node;
    node->index = i;
}

static void sift_up(struct dw_heap *h, size_t i, struct dw_heap_node *node)
{
    while (i > 0) {
        size_t parent = (i - 1) / 2;
        if (h->nodes[parent]->key <= node->key)
            break;
        place(h, i, h->nodes[parent]);
        i = parent;
    }
    place(h, i, node);
}

static void sift_down(struct dw_heap *h, size_t i, struct dw_heap_node *node)
{
    for (;;) {
        size_t child = 2 * i + 1;
        if (child >= h->len)
            break;
        if (child + 1 < h->len && h->nodes[child + 1]->key < h->nodes[child]->key)
            child++;
        if (node->key <= h->nodes[child]->key)
            break;
        place(h, i, h->nodes[child]);
        i = child;
    }
    place(h, i, node);
}

void dw_heap_push(struct dw_heap *h, struct dw_heap_node *node)
{
    if (h->len == h->cap) {
        h->cap = h->cap ? h->cap * 2 : 64;
        h->nodes = dw_xrealloc(h->nodes, h->cap * sizeof(*h->nodes));
    }
    sift_up(h, h->len++, node);
}

void dw_heap_remove(struct dw_heap *h, struct dw_heap_node *node)
{
    size_t i = node->index;
    struct dw_heap_node *last = h->nodes[--h->len];
    if (last == node)
        return;
    /* The last node fills the hole, then moves whichever way its key says. */
    if (i > 0 && last->key < h->nodes[(i - 1) / 2]->key)
        sift_up(h, i, last);
    else
        sift_down(h, i, last);
}

struct dw_heap_node *dw_heap_top(const struct dw_heap *h)
{
    return h->len ? h->nodes[0] : NULL;
}

struct dw_heap_node *dw_heap_pop(struct dw_heap *h)
{
    struct dw_heap_node *top = dw_heap_top(h);
    if (top)
        dw_heap_remove(h, top);
    return top;
}
