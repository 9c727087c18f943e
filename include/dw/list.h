/*
 * An intrusive doubly-linked list (curl's lib/llist.h is the model): the
 * element embeds a struct dw_list_node, the list keeps head, tail and
 * length, and every operation is O(1) and allocates nothing. The one list
 * of the tree; DW_CONTAINER_OF (common.h) turns a node back into its
 * element.
 *
 * Not thread-safe: the owner serializes access. A node is on at most one
 * list at a time. Header-only: the operations are a few stores each.
 */
#ifndef DW_LIST_H
#define DW_LIST_H

#include <stdbool.h>
#include <stddef.h>

#include "dw/common.h"

struct dw_list_node {
    struct dw_list_node *prev, *next;
};

struct dw_list {
    struct dw_list_node *head, *tail;
    size_t len;
};

/* An empty list; a zeroed struct dw_list is one too. */
static inline void dw_list_init(struct dw_list *l)
{
    l->head = l->tail = NULL;
    l->len = 0;
}

static inline bool dw_list_empty(const struct dw_list *l)
{
    return l->head == NULL;
}

static inline void dw_list_push_back(struct dw_list *l, struct dw_list_node *n)
{
    n->next = NULL;
    n->prev = l->tail;
    if (l->tail)
        l->tail->next = n;
    else
        l->head = n;
    l->tail = n;
    l->len++;
}

static inline void dw_list_push_front(struct dw_list *l, struct dw_list_node *n)
{
    n->prev = NULL;
    n->next = l->head;
    if (l->head)
        l->head->prev = n;
    else
        l->tail = n;
    l->head = n;
    l->len++;
}

/* Takes n, which must be on l, out of it. */
static inline void dw_list_remove(struct dw_list *l, struct dw_list_node *n)
{
    if (n->prev)
        n->prev->next = n->next;
    else
        l->head = n->next;
    if (n->next)
        n->next->prev = n->prev;
    else
        l->tail = n->prev;
    n->prev = n->next = NULL;
    l->len--;
}

/* The first node, taken out; NULL when empty. */
static inline struct dw_list_node *dw_list_pop_front(struct dw_list *l)
{
    struct dw_list_node *n = l->head;
    if (n)
        dw_list_remove(l, n);
    return n;
}

/* Moves every node of src to the end of dst, in order; src ends empty. */
static inline void dw_list_splice_back(struct dw_list *dst, struct dw_list *src)
{
    if (!src->head)
        return;
    if (dst->tail) {
        dst->tail->next = src->head;
        src->head->prev = dst->tail;
    } else {
        dst->head = src->head;
    }
    dst->tail = src->tail;
    dst->len += src->len;
    dw_list_init(src);
}

#endif /* DW_LIST_H */
