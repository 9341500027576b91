/* luagent: the command line (serve, run, check, config, version). */
#include <lauxlib.h>
#include <luajit.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "luagent/agents.h"
#include "luagent/auth.h"
#include "luagent/authoring.h"
#include "luagent/bind.h"
#include "luagent/config.h"
#include "luagent/json.h"
#include "luagent/log.h"
#include "luagent/registry.h"
#include "luagent/secrets.h"
#include "luagent/store.h"
#include "luagent/sched.h"
#include "luagent/server.h"

static void usage(FILE *out)
{
    fprintf(out, "usage: luagent [command]\n\n"
                 "  serve                                  serve the REST API (the default)\n"
                 "  run AGENT --task JSON [--context JSON] execute an agent once and print its result\n"
                 "  check [DIR]                            load and validate every agent (exit 1 on errors)\n"
                 "  new NAME                               write a new agent and its spec from a template\n"
                 "  test [DIR] [busted options]            run agent specs (default: spec/) offline: mock AI, fake HTTP\n"
                 "  config                                 print the effective settings (secrets redacted)\n"
                 "  config set NAME VALUE | unset NAME     run-time settings in the database (secrets encrypted)\n"
                 "  config rotate-key                      re-encrypt them for LUAGENT_NEW_SECRET_KEY\n"
                 "  migrate                                apply the database migrations (DATABASE_URL)\n"
                 "  keys create --name NAME --role viewer|operator|admin [--rate-limit N/min] [--expires DAYS]\n"
                 "              [--agents a,b]            (the agents the key may run; default all)\n"
                 "  keys list | keys revoke ID             API keys (in Postgres, or LUAGENT_API_KEYS_FILE)\n"
                 "  version                                print the version\n\n"
                 "Settings come from the environment and ./.env (see .env.example).\n");
}

/* ---- run ---- */

typedef struct run_state {
    int done, rc;
} run_state_t;

static void run_done(lg_exec_t *e)
{
    run_state_t *s = e->owner;
    lg_buf_t b = {0};
    lg_json_error_t jerr;
    s->done = 1;
    s->rc = 1;
    switch (e->end) {
    case LG_END_OK:
        if (lua_gettop(e->co) == 0)
            lua_pushnil(e->co);
        if (lg_json_encode(e->co, 1, &b, LG_JSON_DEFAULT_MAX_DEPTH, &jerr) == LG_JSON_OK) {
            printf("%s\n", b.data);
            s->rc = 0;
        } else {
            fprintf(stderr, "luagent: the agent's result is not JSON: %s\n", jerr.msg);
        }
        break;
    case LG_END_ERROR:
        if (lg_json_encode(e->co, -1, &b, LG_JSON_DEFAULT_MAX_DEPTH, &jerr) == LG_JSON_OK)
            fprintf(stderr, "luagent: %s failed: %s\n", e->agent, b.data);
        else
            fprintf(stderr, "luagent: %s failed\n", e->agent);
        break;
    case LG_END_TIMEOUT:
        fprintf(stderr, "luagent: %s exceeded its deadline of %d ms\n", e->agent, e->timeout_ms);
        break;
    case LG_END_MEMORY:
        fprintf(stderr, "luagent: %s exceeded the memory limit\n", e->agent);
        break;
    case LG_END_CANCELLED:
        fprintf(stderr, "luagent: %s was cancelled\n", e->agent);
        break;
    }
    lg_buf_free(&b);
}

static int decode_arg(lua_State *L, const char *what, const char *text)
{
    lg_json_error_t err;
    if (lg_json_decode(L, text, strlen(text), 64, &err) != LG_JSON_OK) {
        fprintf(stderr, "luagent: %s is not valid JSON: %s\n", what, err.msg);
        return -1;
    }
    return 0;
}

static int cmd_run(const lg_config_t *cfg, int argc, char **argv)
{
    const char *agent = NULL, *task = NULL, *context = NULL;
    for (int i = 0; i < argc; i++) {
        if (strcmp(argv[i], "--task") == 0 && i + 1 < argc)
            task = argv[++i];
        else if (strcmp(argv[i], "--context") == 0 && i + 1 < argc)
            context = argv[++i];
        else if (agent == NULL && argv[i][0] != '-')
            agent = argv[i];
        else {
            usage(stderr);
            return 2;
        }
    }
    if (agent == NULL || task == NULL) {
        usage(stderr);
        return 2;
    }
    if (lg_registry_init(LG_SCRIPT_AGENT, cfg->agents_dir, (size_t)cfg->memory_limit_mb << 20) != 0)
        return 1;
    lg_registry_scan(LG_SCRIPT_AGENT);
    if (lg_registry_init(LG_SCRIPT_PROVIDER, cfg->providers_dir, (size_t)cfg->memory_limit_mb << 20) == 0)
        lg_registry_scan(LG_SCRIPT_PROVIDER);
    lg_cache_init();
    h2o_evloop_t *loop = h2o_evloop_create();
    lg_rt_t rt;
    if (lg_rt_init(&rt, cfg, loop) != 0)
        return 1;
    static const lg_exec_ops_t ops = {.on_done = run_done};
    run_state_t state = {0};
    lg_exec_t *e = lg_exec_new(&rt, &ops, &state);
    int rc = 1;
    if (decode_arg(e->co, "--task", task) != 0 || (context ? decode_arg(e->co, "--context", context) : (lua_pushnil(e->co), 0)) != 0) {
        lua_settop(e->co, 0);
        lg_exec_discard(e);
    } else if (lua_isnil(e->co, 1) || lg_json_is_null(e->co, 1)) {
        fprintf(stderr, "luagent: --task must not be null\n");
        lua_settop(e->co, 0);
        lg_exec_discard(e);
    } else {
        lg_uuid4(e->request_id);
        lg_schema_report_t invalid = {0};
        lg_launch_status_t ls = lg_exec_launch(e, agent, strlen(agent), 0, &invalid);
        if (ls != LG_LAUNCH_OK) {
            if (ls == LG_LAUNCH_INVALID)
                fprintf(stderr, "luagent: the task does not match the input schema of %s: %s\n", agent,
                        invalid.details.data);
            else
                fprintf(stderr, "luagent: no agent named '%s' in %s\n", agent, cfg->agents_dir);
            lg_buf_free(&invalid.details);
            lua_settop(e->co, 0);
            lg_exec_discard(e);
        } else {
            while (!state.done)
                lg_rt_run_once(&rt, 1000);
            rc = state.rc;
        }
    }
    lg_rt_dispose(&rt);
    h2o_evloop_destroy(loop);
    lg_registry_dispose();
    return rc;
}

/* ---- check ---- */

static void print_entry(void *ud, const lg_agent_entry_t *e)
{
    if (e->error != NULL)
        printf("error  %-24s %s\n", e->name, e->error);
    else
        printf("ok     %-24s %s\n", e->name, e->version);
}

static int cmd_check(const lg_config_t *cfg, const char *dir)
{
    lg_log_setup(LG_LOG_ERROR, cfg->log_format, NULL); /* the report below says it all */
    if (lg_registry_init(LG_SCRIPT_AGENT, dir, (size_t)cfg->memory_limit_mb << 20) != 0)
        return 1;
    lg_registry_scan(LG_SCRIPT_AGENT);
    lg_registry_each(LG_SCRIPT_AGENT, print_entry, NULL);
    size_t errors = lg_registry_error_count(LG_SCRIPT_AGENT), n = lg_registry_count(LG_SCRIPT_AGENT);
    printf("%zu agents, %zu with errors\n", n, errors);
    lg_registry_dispose();
    return errors ? 1 : 0;
}

/* Settings stored in the database apply where the environment and .env leave them unset. */
static void load_stored(lg_config_t *cfg, int quiet)
{
    char err[512];
    int applied;
    if (cfg->database_url != NULL && lg_config_load_stored(cfg, &applied, err, sizeof(err)) != 0 && !quiet)
        lg_log(LG_LOG_WARN, "settings stored in the database not applied: %s", err);
}

static int cmd_config(lg_config_t *cfg, int argc, char **argv)
{
    char err[512];
    const char *sub = argc > 0 ? argv[0] : "";
    if (argc == 0) {
        load_stored(cfg, 0);
        lg_config_print(cfg, stdout);
        return 0;
    }
    if (strcmp(sub, "set") == 0 && argc == 3) {
        if (lg_config_store(cfg, argv[1], argv[2], err, sizeof(err)) != 0) {
            fprintf(stderr, "luagent config set: %s\n", err);
            return 1;
        }
        int secret;
        lg_config_storable(argv[1], &secret);
        printf("stored %s%s\n", argv[1], secret ? " (encrypted)" : "");
        return 0;
    }
    if (strcmp(sub, "unset") == 0 && argc == 2) {
        int rc = lg_config_unstore(cfg, argv[1], err, sizeof(err));
        if (rc < 0)
            fprintf(stderr, "luagent config unset: %s\n", err);
        else
            printf(rc ? "removed %s\n" : "%s was not stored\n", argv[1]);
        return rc < 0 ? 1 : 0;
    }
    if (strcmp(sub, "rotate-key") == 0 && argc == 1) {
        const char *nk = getenv("LUAGENT_NEW_SECRET_KEY");
        int n = nk != NULL ? lg_config_rotate(cfg, nk, err, sizeof(err)) : -1;
        if (nk == NULL)
            snprintf(err, sizeof(err), "set LUAGENT_NEW_SECRET_KEY to the new key (64 hex digits or base64)");
        if (n < 0) {
            fprintf(stderr, "luagent config rotate-key: %s\n", err);
            return 1;
        }
        printf("re-encrypted %d secret%s: now set LUAGENT_SECRET_KEY to the new key\n", n, n == 1 ? "" : "s");
        return 0;
    }
    fprintf(stderr, "luagent config: config | config set NAME VALUE | config unset NAME | config rotate-key\n");
    return 2;
}

static int cmd_migrate(const lg_config_t *cfg)
{
    if (cfg->database_url == NULL) {
        fprintf(stderr, "luagent migrate: DATABASE_URL is not set\n");
        return 2;
    }
    char err[512];
    int applied;
    if (lg_migrate(cfg->database_url, &applied, err, sizeof(err)) != 0) {
        fprintf(stderr, "luagent migrate: %s\n", err);
        return 1;
    }
    printf("applied %d migration%s; schema version %d\n", applied, applied == 1 ? "" : "s", lg_migrate_count());
    return 0;
}

static int cmd_keys(const lg_config_t *cfg, int argc, char **argv)
{
    char err[512];
    if (cfg->database_url == NULL && cfg->api_keys_file == NULL) {
        fprintf(stderr, "luagent keys: keys live in Postgres (DATABASE_URL) or a file (LUAGENT_API_KEYS_FILE); neither is set\n");
        return 2;
    }
    int applied;
    if (cfg->database_url != NULL && lg_migrate(cfg->database_url, &applied, err, sizeof(err)) != 0) {
        fprintf(stderr, "luagent keys: %s\n", err);
        return 1;
    }
    const char *sub = argc > 0 ? argv[0] : "list";
    if (strcmp(sub, "create") == 0) {
        const char *name = NULL, *role = NULL, *agents = "";
        int rate = 0, window = 0, days = 0;
        for (int i = 1; i + 1 < argc; i += 2) {
            if (!strcmp(argv[i], "--name"))
                name = argv[i + 1];
            else if (!strcmp(argv[i], "--role"))
                role = argv[i + 1];
            else if (!strcmp(argv[i], "--agents") && lg_keys_agents_valid(argv[i + 1]))
                agents = argv[i + 1];
            else if (!strcmp(argv[i], "--rate-limit") && lg_config_parse_rate(argv[i + 1], &rate, &window) == 0)
                continue;
            else if (!strcmp(argv[i], "--expires") && (days = atoi(argv[i + 1])) > 0)
                continue;
            else {
                fprintf(stderr, "luagent keys create: bad option %s %s\n", argv[i], argv[i + 1]);
                return 2;
            }
        }
        lg_role_t r = role ? lg_role_parse(role, strlen(role)) : LG_ROLE_NONE;
        if (name == NULL || r == LG_ROLE_NONE) {
            fprintf(stderr, "luagent keys create: --name NAME and --role viewer|operator|admin are required\n");
            return 2;
        }
        char key[LG_KEY_LEN + 1], id[40];
        if (lg_keys_create(cfg, name, r, rate, window, days, agents, key, id, err, sizeof(err)) != 0) {
            fprintf(stderr, "luagent keys create: %s\n", err);
            return 1;
        }
        printf("{\"id\":\"%s\",\"key\":\"%s\",\"role\":\"%s\"}\n", id, key, lg_role_name(r));
        return 0;
    }
    if (strcmp(sub, "revoke") == 0 && argc == 2) {
        int rc = lg_keys_revoke(cfg, argv[1], err, sizeof(err));
        if (rc < 0)
            fprintf(stderr, "luagent keys revoke: %s\n", err);
        else if (rc == 0)
            fprintf(stderr, "luagent keys revoke: no key %s\n", argv[1]);
        else
            printf("revoked %s\n", argv[1]);
        return rc == 1 ? 0 : 1;
    }
    if (strcmp(sub, "list") == 0) {
        lg_config_t c = *cfg;
        c.auth = LG_AUTH_OFF; /* listing never creates the first admin key */
        if (lg_keys_init(&c, err, sizeof(err)) != 0) {
            fprintf(stderr, "luagent keys list: %s\n", err);
            return 1;
        }
        lg_buf_t b = {0};
        lg_keys_list_json(&b);
        printf("%s\n", b.data);
        lg_buf_free(&b);
        lg_keys_shutdown();
        return 0;
    }
    fprintf(stderr, "luagent keys: create | list | revoke ID\n");
    return 2;
}

int main(int argc, char **argv)
{
    const char *cmd = argc > 1 ? argv[1] : "serve";
    if (strcmp(cmd, "version") == 0 || strcmp(cmd, "--version") == 0) {
        printf("luagent %s (%s, libh2o-evloop 2.2)\n", LUAGENT_VERSION, LUAJIT_VERSION);
        return 0;
    }
    if (strcmp(cmd, "help") == 0 || strcmp(cmd, "--help") == 0 || strcmp(cmd, "-h") == 0) {
        usage(stdout);
        return 0;
    }
    lg_config_t cfg;
    char err[512];
    if (lg_config_load(&cfg, NULL, err, sizeof(err)) != 0) {
        fprintf(stderr, "luagent: configuration error: %s\n", err);
        return 2;
    }
    lg_log_setup(cfg.log_level, cfg.log_format, cfg.log_file);
    int rc;
    if (strcmp(cmd, "serve") == 0) {
        load_stored(&cfg, 0);
        rc = lg_server_run(&cfg);
    }
    else if (strcmp(cmd, "run") == 0) {
        load_stored(&cfg, 0);
        rc = cmd_run(&cfg, argc - 2, argv + 2);
    }
    else if (strcmp(cmd, "check") == 0)
        rc = cmd_check(&cfg, argc > 2 ? argv[2] : cfg.agents_dir);
    else if (strcmp(cmd, "new") == 0)
        rc = lg_cmd_new(&cfg, argc - 2, argv + 2);
    else if (strcmp(cmd, "test") == 0)
        rc = lg_cmd_test(&cfg, argc - 2, argv + 2);
    else if (strcmp(cmd, "keys") == 0)
        rc = cmd_keys(&cfg, argc - 2, argv + 2);
    else if (strcmp(cmd, "migrate") == 0)
        rc = cmd_migrate(&cfg);
    else if (strcmp(cmd, "config") == 0)
        rc = cmd_config(&cfg, argc - 2, argv + 2);
    else {
        fprintf(stderr, "luagent: unknown command '%s'\n\n", cmd);
        usage(stderr);
        rc = 2;
    }
    lg_config_free(&cfg);
    return rc;
}
