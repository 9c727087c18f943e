/*
 * The intrusive list: FIFO order, removal from anywhere (head, middle,
 * tail), push to the front, splicing, and a length that stays true.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "dw/list.h"

struct item {
    int id;
    struct dw_list_node node;
};

static int id_of(struct dw_list_node *n)
{
    return DW_CONTAINER_OF(n, struct item, node)->id;
}

/* The list's ids, front to back, checked both ways against want. */
static void check(const struct dw_list *l, const int *want, size_t n)
{
    assert_int_equal(l->len, n);
    size_t i = 0;
    for (struct dw_list_node *p = l->head; p; p = p->next, i++) {
        assert_true(i < n);
        assert_int_equal(id_of(p), want[i]);
    }
    assert_int_equal(i, n);
    for (struct dw_list_node *p = l->tail; p; p = p->prev)
        assert_int_equal(id_of(p), want[--i]);
    assert_int_equal(i, 0);
    assert_int_equal(dw_list_empty(l), n == 0);
}

static void test_queue_and_removal(void **state)
{
    (void)state;
    struct item it[5] = {{0, {0}}, {1, {0}}, {2, {0}}, {3, {0}}, {4, {0}}};
    struct dw_list l;
    dw_list_init(&l);
    check(&l, NULL, 0);
    assert_null(dw_list_pop_front(&l));
    for (int i = 0; i < 4; i++)
        dw_list_push_back(&l, &it[i].node);
    check(&l, (int[]){0, 1, 2, 3}, 4);
    dw_list_remove(&l, &it[2].node); /* middle */
    check(&l, (int[]){0, 1, 3}, 3);
    dw_list_remove(&l, &it[3].node); /* tail */
    check(&l, (int[]){0, 1}, 2);
    dw_list_push_front(&l, &it[4].node);
    check(&l, (int[]){4, 0, 1}, 3);
    dw_list_remove(&l, &it[4].node); /* head */
    check(&l, (int[]){0, 1}, 2);
    assert_int_equal(id_of(dw_list_pop_front(&l)), 0);
    assert_int_equal(id_of(dw_list_pop_front(&l)), 1);
    check(&l, NULL, 0);
    dw_list_push_front(&l, &it[3].node); /* onto an empty list */
    check(&l, (int[]){3}, 1);
}

static void test_splice(void **state)
{
    (void)state;
    struct item it[4] = {{0, {0}}, {1, {0}}, {2, {0}}, {3, {0}}};
    struct dw_list a = {0}, b = {0};
    dw_list_splice_back(&a, &b); /* both empty */
    check(&a, NULL, 0);
    dw_list_push_back(&b, &it[0].node);
    dw_list_splice_back(&a, &b); /* into an empty list */
    check(&a, (int[]){0}, 1);
    check(&b, NULL, 0);
    dw_list_push_back(&b, &it[1].node);
    dw_list_push_back(&b, &it[2].node);
    dw_list_splice_back(&a, &b);
    check(&a, (int[]){0, 1, 2}, 3);
    check(&b, NULL, 0);
    dw_list_push_back(&a, &it[3].node); /* the tail moved along */
    check(&a, (int[]){0, 1, 2, 3}, 4);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_queue_and_removal),
        cmocka_unit_test(test_splice),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
