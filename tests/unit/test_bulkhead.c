/*
 * The bulkhead: slots up to max_concurrent, refusal without a waiter, the
 * FIFO queue with direct hand-over (no queue jumping but continuations'),
 * cancelling a wait,
 * and many threads taking, queueing for, cancelling and giving back slots
 * while never more than max_concurrent are held (run under TSan by the
 * test command).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <string.h>

#include "dw/bulkhead.h"

static void grants_up_to_the_limit_then_refuses(void **state)
{
    (void)state;
    struct dw_bulkhead *b = dw_bulkhead_create(3);
    assert_int_equal(dw_bulkhead_max(b), 3);
    for (int i = 0; i < 3; i++)
        assert_int_equal(dw_bulkhead_acquire(b, NULL), DW_BULKHEAD_GRANTED);
    assert_int_equal(dw_bulkhead_acquire(b, NULL), DW_BULKHEAD_REJECTED);
    assert_int_equal(dw_bulkhead_in_use(b), 3);
    assert_null(dw_bulkhead_release(b));
    assert_int_equal(dw_bulkhead_in_use(b), 2);
    assert_int_equal(dw_bulkhead_acquire(b, NULL), DW_BULKHEAD_GRANTED);
    for (int i = 0; i < 3; i++)
        assert_null(dw_bulkhead_release(b));
    assert_int_equal(dw_bulkhead_in_use(b), 0);
    assert_null(dw_bulkhead_release(b)); /* one too many: stays at 0 */
    assert_int_equal(dw_bulkhead_in_use(b), 0);
    dw_bulkhead_destroy(b);
    dw_bulkhead_destroy(NULL);
}

/* Continuations (waiter.first: the next step of work a slot already served)
 * are served before the calls that would start new work, in their own
 * order; cancelling one takes it out of its own queue. */
static void continuations_go_first(void **state)
{
    (void)state;
    struct dw_bulkhead *b = dw_bulkhead_create(1);
    struct dw_bulkhead_waiter w[5] = {{0}};
    w[2].first = w[3].first = w[4].first = true;
    assert_int_equal(dw_bulkhead_acquire(b, NULL), DW_BULKHEAD_GRANTED);
    for (int i = 0; i < 5; i++)
        assert_int_equal(dw_bulkhead_acquire(b, &w[i]), DW_BULKHEAD_QUEUED);
    assert_int_equal(dw_bulkhead_queued(b), 5);
    assert_true(dw_bulkhead_cancel(b, &w[3]));
    assert_int_equal(dw_bulkhead_queued(b), 4);
    assert_ptr_equal(dw_bulkhead_release(b), &w[2]);
    assert_ptr_equal(dw_bulkhead_release(b), &w[4]);
    assert_ptr_equal(dw_bulkhead_release(b), &w[0]);
    /* A grant (a larger size) follows the same order. */
    struct dw_bulkhead_waiter late = {.first = true};
    assert_int_equal(dw_bulkhead_acquire(b, &late), DW_BULKHEAD_QUEUED);
    dw_bulkhead_set_max(b, 2);
    assert_ptr_equal(dw_bulkhead_grant(b), &late);
    assert_null(dw_bulkhead_grant(b));
    assert_ptr_equal(dw_bulkhead_release(b), &w[1]);
    assert_int_equal(dw_bulkhead_queued(b), 0);
    assert_null(dw_bulkhead_release(b));
    assert_null(dw_bulkhead_release(b));
    assert_int_equal(dw_bulkhead_in_use(b), 0);
    dw_bulkhead_destroy(b);
}

/* The pool makes the size follow the adaptive limit: a larger size hands
 * free slots to waiters through dw_bulkhead_grant, oldest first; a
 * smaller one drains as calls end, handing nothing over until in_use is
 * below it. */
static void the_size_follows_the_limit(void **state)
{
    (void)state;
    struct dw_bulkhead *b = dw_bulkhead_create(2);
    struct dw_bulkhead_waiter w[4] = {{0}};
    assert_int_equal(dw_bulkhead_acquire(b, NULL), DW_BULKHEAD_GRANTED);
    assert_int_equal(dw_bulkhead_acquire(b, NULL), DW_BULKHEAD_GRANTED);
    for (int i = 0; i < 4; i++)
        assert_int_equal(dw_bulkhead_acquire(b, &w[i]), DW_BULKHEAD_QUEUED);
    assert_null(dw_bulkhead_grant(b)); /* full: nothing to hand out */

    dw_bulkhead_set_max(b, 4);
    assert_int_equal(dw_bulkhead_max(b), 4);
    assert_ptr_equal(dw_bulkhead_grant(b), &w[0]);
    assert_ptr_equal(dw_bulkhead_grant(b), &w[1]);
    assert_null(dw_bulkhead_grant(b));
    assert_int_equal(dw_bulkhead_in_use(b), 4);
    assert_int_equal(dw_bulkhead_queued(b), 2);

    /* Shrunk to 2 with 4 in use: two releases only drain... */
    dw_bulkhead_set_max(b, 2);
    assert_null(dw_bulkhead_release(b));
    assert_null(dw_bulkhead_release(b));
    assert_int_equal(dw_bulkhead_in_use(b), 2);
    /* ...then a release hands over again, keeping in_use at the size. */
    assert_ptr_equal(dw_bulkhead_release(b), &w[2]);
    assert_int_equal(dw_bulkhead_in_use(b), 2);
    /* A new call still queues behind the last waiter. */
    struct dw_bulkhead_waiter late = {0};
    assert_int_equal(dw_bulkhead_acquire(b, &late), DW_BULKHEAD_QUEUED);
    dw_bulkhead_set_max(b, 0); /* below 1 counts as 1 */
    assert_int_equal(dw_bulkhead_max(b), 1);
    assert_null(dw_bulkhead_release(b));
    assert_ptr_equal(dw_bulkhead_release(b), &w[3]);
    assert_ptr_equal(dw_bulkhead_release(b), &late);
    assert_null(dw_bulkhead_release(b));
    assert_int_equal(dw_bulkhead_in_use(b), 0);
    dw_bulkhead_destroy(b);
}

static void released_slots_go_to_waiters_in_order(void **state)
{
    (void)state;
    struct dw_bulkhead *b = dw_bulkhead_create(1);
    struct dw_bulkhead_waiter w1 = {0}, w2 = {0}, w3 = {0};
    assert_int_equal(dw_bulkhead_acquire(b, &w1), DW_BULKHEAD_GRANTED);
    assert_false(w1.queued);
    assert_int_equal(dw_bulkhead_acquire(b, &w2), DW_BULKHEAD_QUEUED);
    assert_int_equal(dw_bulkhead_acquire(b, &w3), DW_BULKHEAD_QUEUED);
    assert_int_equal(dw_bulkhead_queued(b), 2);
    assert_ptr_equal(dw_bulkhead_release(b), &w2); /* the oldest first */
    assert_int_equal(dw_bulkhead_in_use(b), 1);    /* handed over, not freed */
    /* No queue jumping: a newcomer waits behind w3 although a slot just
     * changed hands. */
    struct dw_bulkhead_waiter w4 = {0};
    assert_int_equal(dw_bulkhead_acquire(b, &w4), DW_BULKHEAD_QUEUED);
    assert_ptr_equal(dw_bulkhead_release(b), &w3);
    assert_ptr_equal(dw_bulkhead_release(b), &w4);
    assert_null(dw_bulkhead_release(b));
    assert_int_equal(dw_bulkhead_in_use(b), 0);
    assert_int_equal(dw_bulkhead_queued(b), 0);
    dw_bulkhead_destroy(b);
}

static void cancel_tells_whether_a_slot_came(void **state)
{
    (void)state;
    struct dw_bulkhead *b = dw_bulkhead_create(1);
    struct dw_bulkhead_waiter w1 = {0}, w2 = {0}, w3 = {0};
    assert_int_equal(dw_bulkhead_acquire(b, NULL), DW_BULKHEAD_GRANTED);
    assert_int_equal(dw_bulkhead_acquire(b, &w1), DW_BULKHEAD_QUEUED);
    assert_int_equal(dw_bulkhead_acquire(b, &w2), DW_BULKHEAD_QUEUED);
    assert_int_equal(dw_bulkhead_acquire(b, &w3), DW_BULKHEAD_QUEUED);
    /* w2 gives up from the middle of the queue. */
    assert_true(dw_bulkhead_cancel(b, &w2));
    assert_false(w2.queued);
    assert_int_equal(dw_bulkhead_queued(b), 2);
    assert_ptr_equal(dw_bulkhead_release(b), &w1);
    /* w1 gives up too late: it was handed the slot, which it now owns. */
    assert_false(dw_bulkhead_cancel(b, &w1));
    assert_int_equal(dw_bulkhead_in_use(b), 1);
    assert_ptr_equal(dw_bulkhead_release(b), &w3);
    assert_true(dw_bulkhead_cancel(b, &w2) == false); /* not queued any more */
    assert_null(dw_bulkhead_release(b));
    assert_int_equal(dw_bulkhead_in_use(b), 0);
    dw_bulkhead_destroy(b);
}

/* ---- many threads on one bulkhead ---- */

#define THREADS 8
#define LIMIT   3

struct slot_waiter {
    struct dw_bulkhead_waiter w; /* first: the container is the same address */
    atomic_bool granted;
};

struct hammer {
    struct dw_bulkhead *b;
    atomic_int held;
    atomic_int max_held;
    atomic_int rejected, queued, cancelled, handed;
};

static void hold(struct hammer *h)
{
    int held = atomic_fetch_add(&h->held, 1) + 1;
    int max = atomic_load(&h->max_held);
    while (held > max && !atomic_compare_exchange_weak(&h->max_held, &max, held))
        ;
}

static void give_back(struct hammer *h)
{
    atomic_fetch_sub(&h->held, 1);
    struct dw_bulkhead_waiter *next = dw_bulkhead_release(h->b);
    if (next) {
        /* The slot passes to a waiter: count it held before waking it. */
        hold(h);
        atomic_fetch_add(&h->handed, 1);
        atomic_store(&((struct slot_waiter *)next)->granted, true);
    }
}

static void *worker(void *arg)
{
    struct hammer *h = arg;
    uint64_t x = (uint64_t)(uintptr_t)&x | 1;
    for (int i = 0; i < 20000; i++) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        struct slot_waiter sw;
        memset(&sw, 0, sizeof(sw));
        atomic_init(&sw.granted, false);
        bool wait = x % 4 != 0;
        switch (dw_bulkhead_acquire(h->b, wait ? &sw.w : NULL)) {
        case DW_BULKHEAD_GRANTED:
            hold(h);
            break;
        case DW_BULKHEAD_REJECTED:
            atomic_fetch_add(&h->rejected, 1);
            continue;
        case DW_BULKHEAD_QUEUED:
            atomic_fetch_add(&h->queued, 1);
            /* Wait a little, as a parked job would, then maybe give up. */
            for (int spin = 0; spin < (int)(x % 64) && !atomic_load(&sw.granted); spin++)
                sched_yield();
            if (!atomic_load(&sw.granted) && dw_bulkhead_cancel(h->b, &sw.w)) {
                atomic_fetch_add(&h->cancelled, 1);
                continue;
            }
            /* Handed a slot (maybe just before cancelling): wait for the
             * releaser to finish telling us, then own it. */
            while (!atomic_load(&sw.granted))
                sched_yield();
            break;
        }
        assert_true(atomic_load(&h->held) <= LIMIT);
        give_back(h);
    }
    return NULL;
}

static void never_more_than_the_limit_under_many_threads(void **state)
{
    (void)state;
    static struct hammer h;
    memset(&h, 0, sizeof(h));
    h.b = dw_bulkhead_create(LIMIT);
    pthread_t th[THREADS];
    for (int i = 0; i < THREADS; i++)
        pthread_create(&th[i], NULL, worker, &h);
    for (int i = 0; i < THREADS; i++)
        pthread_join(th[i], NULL);
    print_message("  max held %d of %d; %d refused, %d queued (%d handed a slot, %d gave up)\n",
                  atomic_load(&h.max_held), LIMIT, atomic_load(&h.rejected), atomic_load(&h.queued),
                  atomic_load(&h.handed), atomic_load(&h.cancelled));
    assert_true(atomic_load(&h.max_held) <= LIMIT);
    assert_int_equal(atomic_load(&h.held), 0);
    assert_int_equal(atomic_load(&h.queued), atomic_load(&h.handed) + atomic_load(&h.cancelled));
    assert_int_equal(dw_bulkhead_in_use(h.b), 0);
    assert_int_equal(dw_bulkhead_queued(h.b), 0);
    dw_bulkhead_destroy(h.b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(grants_up_to_the_limit_then_refuses),
        cmocka_unit_test(released_slots_go_to_waiters_in_order),
        cmocka_unit_test(cancel_tells_whether_a_slot_came),
        cmocka_unit_test(the_size_follows_the_limit),
        cmocka_unit_test(continuations_go_first),
        cmocka_unit_test(never_more_than_the_limit_under_many_threads),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
