/* luagent.db: parameterized PostgreSQL queries and transactions on the worker's pool (pg.h).
 *
 *   rows, info = luagent.db.query(sql, ...)   -- $1..$n bound to the extra arguments; yields
 *   ...        = luagent.db.tx(fn)            -- BEGIN; fn(); COMMIT (fn's results) | ROLLBACK + re-raise
 *
 * rows is an array (json array marker: [] when empty) of tables keyed by column name; info is
 * {command = "INSERT 0 1", rows_affected = n}. Parameters go as text: nil / json.null -> NULL,
 * booleans -> true/false, integral numbers without exponent, other numbers %.17g, tables -> JSON
 * text, strings as they are (a string holding a NUL byte goes as raw bytes, binary format: it fits
 * bytea and text). Column values by type OID: bool -> boolean; int2/int4/oid -> number; int8 ->
 * number within +-2^53, else string; float4/float8 -> number (NaN and infinities -> string);
 * numeric -> number when the double printed at the value's own scale gives back the same text,
 * else string; json/jsonb -> decoded value; bytea -> raw bytes; SQL NULL -> json.null; anything
 * else -> its text.
 *
 * Errors are tables (pcall-able; uncaught, they become the reply): a statement the server refused
 * {status = 500, code = "db_error", message = "<message> (SQLSTATE xxxxx)", sqlstate = "xxxxx"};
 * no database (unreachable, connection lost) {status = 503, code = "db_unavailable", message};
 * DATABASE_URL unset {status = 500, code = "db_error", message = "luagent.db: DATABASE_URL is not
 * set"}. Messages never carry the connection string.
 *
 * Ownership: a pending query is the execution's pending operation (its cleanup cancels it: the
 * result is discarded). A transaction's connection is an lg_resource_t owned by the execution, so
 * any end of the execution (error, deadline, client gone, drain) gives it back to the pool, which
 * rolls it back first. Inside fn, luagent.db.query on the execution's coroutine uses that
 * connection. */
#include <lauxlib.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "luagent/bind.h"
#include "luagent/json.h"
#include "luagent/pg.h"
#include "luagent/sched.h"

/* type OIDs (pg_type.h) */
enum {
    OID_BOOL = 16, OID_BYTEA = 17, OID_INT8 = 20, OID_INT2 = 21, OID_INT4 = 23, OID_OID = 26, OID_JSON = 114,
    OID_FLOAT4 = 700, OID_FLOAT8 = 701, OID_NUMERIC = 1700, OID_JSONB = 3802,
};

#define MAX_SAFE_INT 9007199254740992LL /* 2^53 */

typedef struct db_tx {
    lg_resource_t res; /* first member: the execution owns the transaction through it */
    lg_exec_t *e;
    lg_pg_req_t *acq;  /* the acquire in progress */
    lg_pg_conn_t *conn;
} db_tx_t;

/* ---- errors: pushed as (false, err) for the Lua wrapper to raise ---- */

static void push_err_table(lua_State *L, int status, const char *code, const char *msg, const char *sqlstate)
{
    lua_pushboolean(L, 0);
    lua_createtable(L, 0, 4);
    lua_pushinteger(L, status);
    lua_setfield(L, -2, "status");
    lua_pushstring(L, code);
    lua_setfield(L, -2, "code");
    if (sqlstate != NULL) {
        lua_pushfstring(L, "%s (SQLSTATE %s)", msg, sqlstate);
        lua_setfield(L, -2, "message");
        lua_pushstring(L, sqlstate);
        lua_setfield(L, -2, "sqlstate");
    } else {
        lua_pushstring(L, msg);
        lua_setfield(L, -2, "message");
    }
}

/* a server error has a SQLSTATE; without one the database itself was unavailable */
static void push_pg_error(lua_State *L, const char *err, const char *sqlstate)
{
    if (sqlstate != NULL)
        push_err_table(L, 500, "db_error", err, sqlstate);
    else
        push_err_table(L, 503, "db_unavailable", err, NULL);
}

/* The runtime's pool, or (false, err) pushed and NULL. */
static lg_pg_t *pool_or_error(lua_State *L, lg_exec_t *e)
{
    lg_pg_t *p = lg_rt_pg(e->rt);
    if (p == NULL) {
        if (e->rt->cfg->database_url == NULL)
            push_err_table(L, 500, "db_error", "luagent.db: DATABASE_URL is not set", NULL);
        else
            push_err_table(L, 503, "db_unavailable", "luagent.db: libpq (libpq.so.5) cannot be loaded", NULL);
    }
    return p;
}

/* ---- results ---- */

static void push_int8(lua_State *L, const char *s)
{
    char *end;
    long long v = strtoll(s, &end, 10);
    if (*end == '\0' && v >= -MAX_SAFE_INT && v <= MAX_SAFE_INT)
        lua_pushnumber(L, (lua_Number)v);
    else
        lua_pushstring(L, s);
}

static void push_float(lua_State *L, const char *s)
{
    char *end;
    double d = strtod(s, &end);
    if (*end == '\0' && isfinite(d))
        lua_pushnumber(L, d);
    else
        lua_pushstring(L, s); /* NaN, Infinity, -Infinity: JSON has no such numbers */
}

/* numeric: a number only when nothing is lost (the double printed at the same scale is the same text) */
static void push_numeric(lua_State *L, const char *s, int len)
{
    char *end, buf[64];
    double d = strtod(s, &end);
    const char *dot = strchr(s, '.');
    int scale = dot != NULL ? (int)(len - (dot - s) - 1) : 0;
    if (len < 40 && *end == '\0' && isfinite(d) && snprintf(buf, sizeof(buf), "%.*f", scale, d) == len &&
        memcmp(buf, s, (size_t)len) == 0)
        lua_pushnumber(L, d);
    else
        lua_pushlstring(L, s, (size_t)len);
}

static void push_value(lua_State *L, const PGresult *res, int row, int col, Oid type)
{
    if (PQgetisnull(res, row, col)) {
        lg_json_push_null(L);
        return;
    }
    const char *s = PQgetvalue(res, row, col);
    int len = PQgetlength(res, row, col);
    switch (type) {
    case OID_BOOL:
        lua_pushboolean(L, s[0] == 't');
        break;
    case OID_INT2:
    case OID_INT4:
    case OID_OID:
        lua_pushnumber(L, strtod(s, NULL));
        break;
    case OID_INT8:
        push_int8(L, s);
        break;
    case OID_FLOAT4:
    case OID_FLOAT8:
        push_float(L, s);
        break;
    case OID_NUMERIC:
        push_numeric(L, s, len);
        break;
    case OID_JSON:
    case OID_JSONB:
        if (lg_json_decode(L, s, (size_t)len, LG_JSON_DEFAULT_MAX_DEPTH, NULL) != LG_JSON_OK)
            lua_pushlstring(L, s, (size_t)len);
        break;
    case OID_BYTEA: {
        size_t n = 0;
        unsigned char *bytes = PQunescapeBytea((const unsigned char *)s, &n);
        if (bytes != NULL) {
            lua_pushlstring(L, (const char *)bytes, n);
            PQfreemem(bytes);
        } else {
            lua_pushlstring(L, s, (size_t)len);
        }
        break;
    }
    default:
        lua_pushlstring(L, s, (size_t)len);
        break;
    }
}

/* true, rows, info */
static void push_result(lua_State *L, PGresult *res)
{
    int nrows = PQntuples(res), ncols = PQnfields(res);
    lua_checkstack(L, 8);
    lua_pushboolean(L, 1);
    lua_createtable(L, nrows, 0);
    lg_json_push_array_mt(L);
    lua_setmetatable(L, -2);
    for (int i = 0; i < nrows; i++) {
        lua_createtable(L, 0, ncols);
        for (int j = 0; j < ncols; j++) {
            lua_pushstring(L, PQfname(res, j));
            push_value(L, res, i, j, PQftype(res, j));
            lua_rawset(L, -3);
        }
        lua_rawseti(L, -2, i + 1);
    }
    lua_createtable(L, 0, 2);
    lua_pushstring(L, PQcmdStatus(res));
    lua_setfield(L, -2, "command");
    const char *n = PQcmdTuples(res);
    lua_pushnumber(L, n != NULL && *n ? strtod(n, NULL) : 0);
    lua_setfield(L, -2, "rows_affected");
}

/* ---- query: start, resume (on_result), cleanup (cancel) ---- */

static void on_result(void *data, PGresult *res, const char *err, const char *sqlstate)
{
    lg_exec_t *e = data;
    if (err == NULL) {
        push_result(e->co, res);
        lg_sched_wake(e, 3);
    } else {
        lua_checkstack(e->co, 4);
        push_pg_error(e->co, err, sqlstate);
        lg_sched_wake(e, 2);
    }
}

static void query_cleanup(lg_exec_t *e, void *data) { lg_pg_cancel(data); }

static void tx_release(lg_resource_t *res);

/* The execution's transaction, if fn of luagent.db.tx is running. */
static db_tx_t *current_tx(lg_exec_t *e)
{
    for (lg_resource_t *r = e->resources; r != NULL; r = r->next)
        if (r->release == tx_release)
            return (db_tx_t *)r;
    return NULL;
}

/* Lua value at idx -> text parameter: pushes the text (or nothing for NULL) and fills *value, *len,
 * *binary. Raises on a value that cannot be sent. */
static void param_text(lua_State *L, int idx, int n, const char **value, int *len, int *binary)
{
    *value = NULL;
    *len = 0;
    *binary = 0;
    switch (lua_type(L, idx)) {
    case LUA_TNIL:
        return;
    case LUA_TBOOLEAN:
        lua_pushstring(L, lua_toboolean(L, idx) ? "true" : "false");
        break;
    case LUA_TNUMBER: {
        char buf[400];
        double d = lua_tonumber(L, idx);
        if (isnan(d))
            snprintf(buf, sizeof(buf), "NaN");
        else if (isinf(d))
            snprintf(buf, sizeof(buf), "%sInfinity", d < 0 ? "-" : "");
        else if (d == floor(d))
            snprintf(buf, sizeof(buf), "%.0f", d);
        else
            snprintf(buf, sizeof(buf), "%.17g", d);
        lua_pushstring(L, buf);
        break;
    }
    case LUA_TSTRING: {
        size_t l;
        const char *s = lua_tolstring(L, idx, &l);
        lua_pushvalue(L, idx);
        *binary = memchr(s, '\0', l) != NULL;
        break;
    }
    case LUA_TTABLE: {
        lg_buf_t b = {0};
        lg_json_error_t jerr;
        if (lg_json_encode(L, idx, &b, LG_JSON_DEFAULT_MAX_DEPTH, &jerr) != LG_JSON_OK) {
            lg_buf_free(&b);
            luaL_error(L, "luagent.db.query: parameter $%d: %s", n, jerr.msg);
        }
        lua_pushlstring(L, b.data, b.len);
        lg_buf_free(&b);
        break;
    }
    case LUA_TLIGHTUSERDATA:
        if (lg_json_is_null(L, idx))
            return;
        /* fallthrough */
    default:
        luaL_error(L, "luagent.db.query: parameter $%d: cannot send a %s", n, luaL_typename(L, idx));
        return;
    }
    size_t l;
    *value = lua_tolstring(L, -1, &l);
    *len = (int)l;
}

/* raw_query(sql, ...) -> true, rows, info | false, err   (yields) */
static int db_raw_query(lua_State *L)
{
    size_t sqllen;
    const char *sql = luaL_checklstring(L, 1, &sqllen);
    lg_exec_t *e = lg_sched_check(L, "luagent.db.query");
    if (strlen(sql) != sqllen)
        return luaL_error(L, "luagent.db.query: the SQL text contains a NUL byte");
    int nparams = lua_gettop(L) - 1;
    if (nparams > 65535)
        return luaL_error(L, "luagent.db.query: at most 65535 parameters");
    luaL_checkstack(L, nparams + 8, "luagent.db.query: too many parameters");
    const char **values = NULL;
    int *lengths = NULL, *formats = NULL, any_binary = 0;
    if (nparams > 0) { /* Lua-owned memory: nothing leaks if a parameter raises */
        values = lua_newuserdata(L, (size_t)nparams * (sizeof(char *) + 2 * sizeof(int)));
        lengths = (int *)(values + nparams);
        formats = lengths + nparams;
    }
    for (int i = 0; i < nparams; i++) {
        param_text(L, i + 2, i + 1, &values[i], &lengths[i], &formats[i]);
        any_binary |= formats[i];
    }
    const char *err = NULL;
    lg_pg_req_t *r;
    db_tx_t *tx = current_tx(e);
    if (tx != NULL && tx->conn != NULL) {
        r = lg_pg_conn_query(tx->conn, sql, nparams, values, lengths, any_binary ? formats : NULL, on_result, e, &err);
    } else {
        lg_pg_t *p = pool_or_error(L, e);
        if (p == NULL)
            return 2;
        r = lg_pg_query(p, sql, nparams, values, lengths, any_binary ? formats : NULL, on_result, e, &err);
    }
    if (r == NULL) {
        push_pg_error(L, err, NULL);
        return 2;
    }
    return lg_sched_yield(L, query_cleanup, r);
}

/* ---- transactions ---- */

static void tx_free(db_tx_t *tx)
{
    if (tx->acq != NULL)
        lg_pg_cancel(tx->acq);
    if (tx->conn != NULL)
        lg_pg_release(tx->conn); /* rolls back if the transaction is still open */
    free(tx);
}

static void tx_release(lg_resource_t *res) { tx_free((db_tx_t *)res); }

static void on_acquired(void *data, lg_pg_conn_t *c, const char *err)
{
    db_tx_t *tx = data;
    lg_exec_t *e = tx->e;
    tx->acq = NULL;
    lua_checkstack(e->co, 4);
    if (c != NULL) {
        tx->conn = c;
        lua_pushboolean(e->co, 1);
        lg_sched_wake(e, 1);
    } else {
        lg_exec_disown(e, &tx->res);
        tx_free(tx);
        push_pg_error(e->co, err, NULL);
        lg_sched_wake(e, 2);
    }
}

/* raw_begin() -> true | false, err   (yields until a connection is lent) */
static int db_raw_begin(lua_State *L)
{
    lg_exec_t *e = lg_sched_check(L, "luagent.db.tx");
    if (current_tx(e) != NULL)
        return luaL_error(L, "luagent.db.tx: nested transactions are not supported");
    lg_pg_t *p = pool_or_error(L, e);
    if (p == NULL)
        return 2;
    db_tx_t *tx = calloc(1, sizeof(*tx));
    tx->res.release = tx_release;
    tx->e = e;
    const char *err = NULL;
    if ((tx->acq = lg_pg_acquire(p, on_acquired, tx, &err)) == NULL) {
        free(tx);
        push_pg_error(L, err, NULL);
        return 2;
    }
    lg_exec_own(e, &tx->res); /* any end of the execution cancels the acquire or returns the connection */
    return lg_sched_yield(L, NULL, NULL);
}

/* raw_end(): give the transaction's connection back (the pool rolls back what was not committed) */
static int db_raw_end(lua_State *L)
{
    lg_exec_t *e = lg_sched_current(L);
    db_tx_t *tx = e != NULL ? current_tx(e) : NULL;
    if (tx != NULL) {
        lg_exec_disown(e, &tx->res);
        tx_free(tx);
    }
    return 0;
}

/* The public functions raise instead of returning (false, err): a Lua wrapper, because a yielding
 * C function cannot run code after it resumes. tx runs fn under pcall on the same coroutine, so
 * queries inside fn find the transaction (current_tx) and may yield. */
static const char wrapper[] =
    "local raw_query, raw_begin, raw_end = ...\n"
    "local error, pcall, type = error, pcall, type\n"
    "local function check(ok, a, b) if not ok then error(a, 0) end return a, b end\n"
    "local db = {}\n"
    "function db.query(sql, ...) return check(raw_query(sql, ...)) end\n"
    "local function finish(ok, ...)\n"
    "  if not ok then raw_end() error((...), 0) end\n"
    "  local okc, a, info = raw_query('COMMIT')\n"
    "  raw_end()\n"
    "  if not okc then error(a, 0) end\n"
    "  if info.command == 'ROLLBACK' then\n"
    "    error({status = 500, code = 'db_error', sqlstate = '25P02', message = 'luagent.db.tx: the transaction "
    "was rolled back because a statement in it failed (SQLSTATE 25P02)'}, 0)\n"
    "  end\n"
    "  return ...\n"
    "end\n"
    "function db.tx(fn)\n"
    "  if type(fn) ~= 'function' then error('luagent.db.tx: expected a function', 2) end\n"
    "  check(raw_begin())\n"
    "  local ok, err = raw_query('BEGIN')\n"
    "  if not ok then raw_end() error(err, 0) end\n"
    "  return finish(pcall(fn))\n"
    "end\n"
    "return db\n";

void lg_bind_open_db(lua_State *L)
{
    if (luaL_loadbuffer(L, wrapper, sizeof(wrapper) - 1, "=luagent.db") != 0)
        lua_error(L);
    lua_pushcfunction(L, db_raw_query);
    lua_pushcfunction(L, db_raw_begin);
    lua_pushcfunction(L, db_raw_end);
    lua_call(L, 3, 1);
}
