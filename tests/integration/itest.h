/*
 * Helpers shared by the integration tests: where the real parts run. The
 * ctest fixture (parts.sh) starts PostgreSQL, the dev broker and the channel
 * simulator and writes their addresses to $DW_ITEST_DIR/parts.env; an
 * environment variable of the same name (DW_TEST_<NAME>) wins. A part that
 * is not there fails the test loudly: it is never skipped.
 */
#ifndef DW_ITEST_H
#define DW_ITEST_H

/* The value of NAME (PG_DSN, BROKERS, SIM_URL, WORKER_BIN, ...); aborts the
 * test with a message when it is unknown. Returns a static string. */
const char *itest_env(const char *name);

#endif
