/*
 * The intrusive min-heap: pops come out in key order, a node removed from
 * the middle never comes out, and every node's index stays true (checked
 * after each step against a brute-force model, with a seeded sequence).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "dw/heap.h"

#define N 500

struct item {
    int id;
    bool on_heap;
    struct dw_heap_node node;
};

static uint64_t rng = 42;

static uint64_t next_random(void)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return rng;
}

/* Every node sits where it says, and no child is smaller than its parent. */
static void check_shape(const struct dw_heap *h)
{
    for (size_t i = 0; i < h->len; i++) {
        assert_int_equal(h->nodes[i]->index, i);
        if (i > 0)
            assert_true(h->nodes[(i - 1) / 2]->key <= h->nodes[i]->key);
    }
}

static int64_t smallest_on(const struct item *items)
{
    int64_t min = INT64_MAX;
    for (int i = 0; i < N; i++)
        if (items[i].on_heap && items[i].node.key < min)
            min = items[i].node.key;
    return min;
}

static void test_against_a_model(void **state)
{
    (void)state;
    static struct item items[N];
    struct dw_heap h;
    dw_heap_init(&h);
    assert_null(dw_heap_top(&h));
    assert_null(dw_heap_pop(&h));
    for (int round = 0; round < 20000; round++) {
        struct item *it = &items[next_random() % N];
        it->id = (int)(it - items);
        if (!it->on_heap) {
            it->node.key = (int64_t)(next_random() % 1000); /* ties on purpose */
            dw_heap_push(&h, &it->node);
            it->on_heap = true;
        } else if (next_random() % 2) {
            dw_heap_remove(&h, &it->node);
            it->on_heap = false;
        } else {
            struct dw_heap_node *top = dw_heap_pop(&h);
            assert_non_null(top);
            assert_int_equal(top->key, smallest_on(items));
            DW_CONTAINER_OF(top, struct item, node)->on_heap = false;
        }
        check_shape(&h);
    }
    int64_t last = INT64_MIN;
    size_t left = h.len;
    for (size_t i = 0; i < left; i++) {
        struct dw_heap_node *top = dw_heap_pop(&h);
        assert_true(top->key >= last);
        last = top->key;
        struct item *it = DW_CONTAINER_OF(top, struct item, node);
        assert_true(it->on_heap);
        it->on_heap = false;
    }
    assert_null(dw_heap_pop(&h));
    dw_heap_cleanup(&h);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_against_a_model),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
