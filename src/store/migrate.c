/* Schema migrations: migrations/NNNN_name.sql, embedded in the binary at build time, applied in
 * order, each in its own transaction, under an advisory lock (concurrent starts wait for each
 * other; the second finds nothing to do). Blocking libpq: only for the main thread before the
 * workers run, or for `luagent migrate`. */
#include <stdio.h>
#include <string.h>

#include "luagent/pg.h"
#include "luagent/store.h"

#include "migrations_sql.h" /* generated: LG_MIGRATIONS[] */

#define LOCK_KEY "7146351902" /* pg_advisory_lock key for migrations */

static int failed(PGconn *c, PGresult *r, const char *what, char *err, size_t errlen)
{
    ExecStatusType st = r != NULL ? PQresultStatus(r) : PGRES_FATAL_ERROR;
    if (st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK)
        return 0;
    const char *msg = r != NULL ? PQresultErrorField(r, PG_DIAG_MESSAGE_PRIMARY) : NULL;
    const char *state = r != NULL ? PQresultErrorField(r, PG_DIAG_SQLSTATE) : NULL;
    snprintf(err, errlen, "%s: %s%s%s%s", what, msg ? msg : PQerrorMessage(c), state ? " (SQLSTATE " : "",
             state ? state : "", state ? ")" : "");
    size_t n = strlen(err);
    while (n > 0 && (err[n - 1] == '\n' || err[n - 1] == ' '))
        err[--n] = '\0';
    return -1;
}

static int run(PGconn *c, const char *sql, const char *what, char *err, size_t errlen)
{
    PGresult *r = PQexec(c, sql);
    int rc = failed(c, r, what, err, errlen);
    PQclear(r);
    return rc;
}

int lg_migrate_count(void) { return (int)(sizeof(LG_MIGRATIONS) / sizeof(LG_MIGRATIONS[0])); }

int lg_migrate(const char *url, int *applied, char *err, size_t errlen)
{
    *applied = 0;
    PGconn *c = lg_pg_connect_blocking(url, "luagent migrate", err, errlen);
    if (c == NULL)
        return -1;
    int rc = run(c, "SET client_min_messages = warning", "settings", err, errlen);
    if (rc == 0)
        rc = run(c, "SELECT pg_advisory_lock(" LOCK_KEY ")", "advisory lock", err, errlen);
    if (rc == 0)
        rc = run(c,
                 "CREATE TABLE IF NOT EXISTS schema_migrations (version integer PRIMARY KEY, name text NOT NULL, "
                 "applied_at timestamptz NOT NULL DEFAULT now())",
                 "schema_migrations", err, errlen);
    for (int i = 0; rc == 0 && i < lg_migrate_count(); i++) {
        char version[16], what[160];
        snprintf(version, sizeof(version), "%d", LG_MIGRATIONS[i].version);
        snprintf(what, sizeof(what), "migration %04d_%s", LG_MIGRATIONS[i].version, LG_MIGRATIONS[i].name);
        const char *p1[] = {version};
        PGresult *r = PQexecParams(c, "SELECT 1 FROM schema_migrations WHERE version = $1", 1, NULL, p1, NULL, NULL, 0);
        if ((rc = failed(c, r, what, err, errlen)) == 0 && PQntuples(r) == 0) {
            rc = run(c, "BEGIN", what, err, errlen);
            if (rc == 0)
                rc = run(c, LG_MIGRATIONS[i].sql, what, err, errlen);
            if (rc == 0) {
                const char *p2[] = {version, LG_MIGRATIONS[i].name};
                PGresult *ins = PQexecParams(c, "INSERT INTO schema_migrations (version, name) VALUES ($1, $2)", 2, NULL,
                                             p2, NULL, NULL, 0);
                rc = failed(c, ins, what, err, errlen);
                PQclear(ins);
            }
            if (rc == 0)
                rc = run(c, "COMMIT", what, err, errlen);
            else
                PQclear(PQexec(c, "ROLLBACK"));
            if (rc == 0)
                (*applied)++;
        }
        PQclear(r);
    }
    PQclear(PQexec(c, "SELECT pg_advisory_unlock(" LOCK_KEY ")"));
    PQfinish(c);
    return rc;
}
