/*
 * Reads the parts' addresses: DW_TEST_<NAME> from the environment, else
 * NAME=value lines of $DW_ITEST_DIR/parts.env (written by parts.sh).
 */
#include "itest.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static char values[32][1024];
static int used;

const char *itest_env(const char *name)
{
    char var[128];
    snprintf(var, sizeof(var), "DW_TEST_%s", name);
    const char *v = getenv(var);
    if (v && *v)
        return v;

    const char *dir = getenv("DW_ITEST_DIR");
    char path[1024];
    snprintf(path, sizeof(path), "%s/parts.env", dir ? dir : ".");
    FILE *f = fopen(path, "r");
    if (f) {
        char line[1200];
        size_t nlen = strlen(name);
        while (fgets(line, sizeof(line), f)) {
            if (strncmp(line, name, nlen) == 0 && line[nlen] == '=' && used < 32) {
                line[strcspn(line, "\n")] = '\0';
                snprintf(values[used], sizeof(values[used]), "%s", line + nlen + 1);
                fclose(f);
                return values[used++];
            }
        }
        fclose(f);
    }
    fprintf(stderr, "integration test: %s is not known: set %s or start the parts (%s)\n",
            name, var, path);
    exit(1);
}
