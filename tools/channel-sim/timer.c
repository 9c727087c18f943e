/*
 * channel-sim: The timer: suspended connections on a min-heap of wake-up times, resumed
 * by one thread when due.
 */
#include "sim.h"

/* ------------------------------------------------------------------------ */
/* Timer: a min-heap of wake-ups, one thread                                */
/* ------------------------------------------------------------------------ */

/* A request is on the heap at most once: only while suspended. */
static void heap_push_locked(struct timer *t, int64_t due_us, struct sim_request *req)
{
    req->wake.key = due_us;
    dw_heap_push(&t->heap, &req->wake);
}

static struct sim_request *heap_pop_locked(struct timer *t)
{
    return DW_CONTAINER_OF(dw_heap_pop(&t->heap), struct sim_request, wake);
}

/*
 * Suspends req's connection and wakes it at due_us. Must be called from the
 * access handler (libmicrohttpd's rule for suspending). Returns false when
 * the simulator is stopping: the caller then answers at once.
 */
bool timer_park(struct sim *sim, struct sim_request *req, int64_t due_us)
{
    struct timer *t = &sim->timer;
    pthread_mutex_lock(&t->lock);
    if (t->stopping) {
        pthread_mutex_unlock(&t->lock);
        return false;
    }
    MHD_suspend_connection(req->conn);
    bool earliest = t->heap.len == 0 || due_us < dw_heap_top(&t->heap)->key;
    heap_push_locked(t, due_us, req);
    if (earliest)
        pthread_cond_signal(&t->cond);
    pthread_mutex_unlock(&t->lock);
    return true;
}

/* True when a hung call should end now: its client went away, the hang
 * fault was lifted, or it has hung for SIM_HANG_MAX_MS. Runs on the timer
 * thread while the connection is suspended, so the fd is not in use. */
static bool hang_should_end(struct sim *sim, struct sim_request *req, int64_t now)
{
    struct channel_faults f;
    char c;
    faults_get(sim, req->ep->channel, &f);
    if (!f.hang || now - req->hang_since_us >= (int64_t)SIM_HANG_MAX_MS * 1000)
        return true;
    if (req->fd < 0)
        return false;
    ssize_t n = recv(req->fd, &c, 1, MSG_PEEK | MSG_DONTWAIT);
    if (n == 0)
        return true; /* orderly close by the client */
    if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)
        return true; /* reset */
    return false;
}

static void *timer_main(void *arg)
{
    struct sim *sim = arg;
    struct timer *t = &sim->timer;
    struct sim_request *batch[SIM_TIMER_BATCH];

    pthread_mutex_lock(&t->lock);
    for (;;) {
        if (t->stopping)
            break;
        if (t->heap.len == 0) {
            pthread_cond_wait(&t->cond, &t->lock);
            continue;
        }
        int64_t now = dw_now_us();
        if (dw_heap_top(&t->heap)->key > now) {
            struct timespec ts;
            int64_t due = dw_heap_top(&t->heap)->key;
            ts.tv_sec = (time_t)(due / 1000000);
            ts.tv_nsec = (long)(due % 1000000) * 1000;
            pthread_cond_timedwait(&t->cond, &t->lock, &ts);
            continue;
        }
        size_t n = 0;
        while (n < SIM_TIMER_BATCH && t->heap.len > 0 && dw_heap_top(&t->heap)->key <= now)
            batch[n++] = heap_pop_locked(t);
        pthread_mutex_unlock(&t->lock);

        /* Resume with no lock held: resuming takes libmicrohttpd's own lock,
         * which a handler may hold while it waits for ours in timer_park. */
        for (size_t i = 0; i < n; i++) {
            struct sim_request *req = batch[i];
            if (req->state == ST_HANGING && !hang_should_end(sim, req, now)) {
                pthread_mutex_lock(&t->lock);
                heap_push_locked(t, now + SIM_HANG_CHECK_MS * 1000, req);
                pthread_mutex_unlock(&t->lock);
                continue;
            }
            MHD_resume_connection(req->conn);
        }
        pthread_mutex_lock(&t->lock);
    }
    /* Stopping: every parked connection must be resumed before
     * MHD_stop_daemon(); delayed ones get their answer, hung ones close. */
    while (t->heap.len > 0)
        MHD_resume_connection(heap_pop_locked(t)->conn);
    pthread_mutex_unlock(&t->lock);
    return NULL;
}

int timer_start(struct sim *sim)
{
    struct timer *t = &sim->timer;
    pthread_mutex_init(&t->lock, NULL);
    dw_cond_init_monotonic(&t->cond);
    dw_heap_init(&t->heap);
    t->stopping = false;
    return pthread_create(&t->thread, NULL, timer_main, sim);
}

void timer_stop(struct sim *sim)
{
    struct timer *t = &sim->timer;
    pthread_mutex_lock(&t->lock);
    t->stopping = true;
    pthread_cond_signal(&t->cond);
    pthread_mutex_unlock(&t->lock);
    pthread_join(t->thread, NULL);
}

void timer_cleanup(struct sim *sim)
{
    struct timer *t = &sim->timer;
    dw_heap_cleanup(&t->heap);
    pthread_cond_destroy(&t->cond);
    pthread_mutex_destroy(&t->lock);
}
