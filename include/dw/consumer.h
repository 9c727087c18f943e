/*
 * The Kafka consumer: group membership, the rebalance callback, pausing,
 * and at-least-once commits through the commit tracker. An offset is
 * committed only once the producer acknowledged the record that finishes
 * its request (dw_producer_take_acks) and every offset before it in its
 * partition: the consumer takes those offsets from the producer, which
 * knows nothing of the consumer.
 *
 * Single-threaded: every function runs on the poll thread (main), except
 * dw_consumer_heartbeat_ms.
 */
#ifndef DW_CONSUMER_H
#define DW_CONSUMER_H

#include <stdbool.h>
#include <stdint.h>

#include <librdkafka/rdkafka.h>

#include "dw/common.h"
#include "dw/config.h"
#include "dw/log.h"
#include "dw/metrics.h"
#include "dw/producer.h"

struct dw_consumer;

/* Creates the consumer and subscribes to cfg->request_topic. Offsets are
 * done when `producer` (borrowed; it must outlive the consumer) hands them
 * back. */
enum dw_err dw_consumer_create(const struct dw_config *cfg, struct dw_log *log,
                               struct dw_metrics *metrics, struct dw_producer *producer,
                               struct dw_consumer **out, char *errbuf, size_t errlen) DW_MUST_CHECK;

/* Builds the consumer's librdkafka configuration and lets librdkafka
 * check it, without connecting (--check-config). DW_ERR_CONFIG with the
 * property or librdkafka's reason in errbuf. */
enum dw_err dw_consumer_check_config(const struct dw_config *cfg, char *errbuf,
                                     size_t errlen) DW_MUST_CHECK;

/* Polls once (serving rebalances). Returns a request message, which the
 * caller destroys with rd_kafka_message_destroy, or NULL. A returned offset
 * is pending until the producer hands it back. */
rd_kafka_message_t *dw_consumer_poll(struct dw_consumer *c, int timeout_ms);

/* Takes every offset the producer acknowledged since the last call (after
 * dw_producer_poll served the reports) and marks it done. An offset of a
 * partition no longer assigned is ignored. */
void dw_consumer_take_acks(struct dw_consumer *c);

/* When the poll thread last came round (dw_consumer_poll, or a revoke's
 * wait), in dw_now_ms time; set at create. Thread-safe (used by /healthz). */
int64_t dw_consumer_heartbeat_ms(const struct dw_consumer *c);

/* Commits what became committable; async unless sync. */
void dw_consumer_commit(struct dw_consumer *c, bool sync);

/* Pauses (or resumes) every assigned partition, and remembers it so
 * partitions assigned later start paused too. */
void dw_consumer_set_paused(struct dw_consumer *c, bool paused);
bool dw_consumer_paused(const struct dw_consumer *c);

/* Partitions assigned now (0 between a revoke and the next assignment). */
int dw_consumer_assigned(const struct dw_consumer *c);

/* Offsets handed out and not yet done, over all partitions. */
size_t dw_consumer_pending(const struct dw_consumer *c);

/*
 * On a revoke, before committing and releasing the partitions, wait up to
 * max_ms for their in-flight requests to finish, serving the producer's
 * delivery reports meanwhile. Work not finished by then is left uncommitted
 * for the next owner. Without this call, revoke commits what is done at
 * once.
 */
void dw_consumer_set_revoke_wait(struct dw_consumer *c, int max_ms);

/* Takes the producer's acknowledged offsets, commits what is done (sync)
 * and leaves the group. */
void dw_consumer_close(struct dw_consumer *c);
/* Frees; NULL is a no-op. Call dw_consumer_close first. */
void dw_consumer_destroy(struct dw_consumer *c);

#endif /* DW_CONSUMER_H */
