/* `luagent new NAME` and `luagent test [DIR]`: what an agent author runs (docs/authoring.md).
 *
 * new writes agents/NAME.lua and spec/NAME_spec.lua (spec/ beside the agents directory; a dotted
 * name team.review is agents/team/review.lua and spec/team.review_spec.lua) from templates compiled
 * into the binary, and never overwrites a file. test puts the luagent.testing module (and the
 * server's ai.lua it runs) in a temporary directory on LUA_PATH and runs busted under LuaJIT on the
 * spec directory; its exit status is busted's. */
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "luagent/authoring.h"
#include "luagent/router.h"
#include "lua_text.h"      /* LG_TEXT_ai */
#include "templates_text.h" /* LG_TEXT_agent, LG_TEXT_agent_spec, LG_TEXT_testing */

/* mkdir -p of path's parent directories */
static int make_parents(const char *path)
{
    char buf[PATH_MAX];
    snprintf(buf, sizeof(buf), "%s", path);
    for (char *p = buf + 1; *p; p++) {
        if (*p != '/')
            continue;
        *p = '\0';
        if (mkdir(buf, 0755) != 0 && errno != EEXIST)
            return -1;
        *p = '/';
    }
    return 0;
}

/* `tpl` with every {{KEY}} replaced: NAME, FILE (the agent's path under the agents directory),
 * SPEC (the spec's path). Returns a malloc'ed string. */
static char *expand(const char *tpl, const char *name, const char *file, const char *spec)
{
    size_t cap = strlen(tpl) * 2 + 1024, n = 0;
    char *out = malloc(cap);
    if (out == NULL)
        return NULL;
    for (const char *p = tpl; *p;) {
        const char *v = NULL;
        size_t skip = 0;
        if (strncmp(p, "{{NAME}}", 8) == 0)
            v = name, skip = 8;
        else if (strncmp(p, "{{FILE}}", 8) == 0)
            v = file, skip = 8;
        else if (strncmp(p, "{{SPEC}}", 8) == 0)
            v = spec, skip = 8;
        size_t add = v ? strlen(v) : 1;
        if (n + add + 1 > cap) {
            cap = (n + add + 1) * 2;
            char *grown = realloc(out, cap);
            if (grown == NULL) {
                free(out);
                return NULL;
            }
            out = grown;
        }
        if (v != NULL) {
            memcpy(out + n, v, add);
            n += add;
            p += skip;
        } else {
            out[n++] = *p++;
        }
    }
    out[n] = '\0';
    return out;
}

/* Create `path` with `text`, failing if it exists. 0, or -1 with errno. */
static int write_new(const char *path, const char *text)
{
    if (make_parents(path) != 0)
        return -1;
    int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
    if (fd < 0)
        return -1;
    size_t len = strlen(text), off = 0;
    while (off < len) {
        ssize_t w = write(fd, text + off, len - off);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0) {
            int e = errno;
            close(fd);
            unlink(path);
            errno = e;
            return -1;
        }
        off += (size_t)w;
    }
    return close(fd);
}

/* The spec directory: "spec" beside the agents directory. */
static void spec_dir_of(const char *agents_dir, char *out, size_t cap)
{
    char copy[PATH_MAX];
    snprintf(copy, sizeof(copy), "%s", agents_dir);
    size_t n = strlen(copy);
    while (n > 1 && copy[n - 1] == '/')
        copy[--n] = '\0';
    const char *parent = dirname(copy);
    if (strcmp(parent, ".") == 0)
        snprintf(out, cap, "spec");
    else
        snprintf(out, cap, "%s/spec", parent);
}

int lg_cmd_new(const lg_config_t *cfg, int argc, char **argv)
{
    if (argc != 1) {
        fprintf(stderr, "usage: luagent new NAME   (writes the agent and its spec)\n");
        return 2;
    }
    const char *name = argv[0];
    if (!lg_agent_name_valid(name, strlen(name))) {
        fprintf(stderr,
                "luagent new: '%s' is not an agent name (1..127 of letters, digits, '_', '-' and '.'; no leading, "
                "trailing or double dot)\n",
                name);
        return 2;
    }
    char rel[LG_AGENT_NAME_MAX + 8], agent_path[PATH_MAX], spec_dir[PATH_MAX], spec_path[PATH_MAX];
    snprintf(rel, sizeof(rel), "%s", name);
    for (char *p = rel; *p; p++)
        if (*p == '.')
            *p = '/';
    strcat(rel, ".lua");
    snprintf(agent_path, sizeof(agent_path), "%s/%s", cfg->agents_dir, rel);
    spec_dir_of(cfg->agents_dir, spec_dir, sizeof(spec_dir));
    if (snprintf(spec_path, sizeof(spec_path), "%s/%s_spec.lua", spec_dir, name) >= (int)sizeof(spec_path)) {
        fprintf(stderr, "luagent new: the path of the spec is too long\n");
        return 2;
    }
    struct stat st;
    const char *exists = stat(agent_path, &st) == 0 ? agent_path : stat(spec_path, &st) == 0 ? spec_path : NULL;
    if (exists != NULL) {
        fprintf(stderr, "luagent new: %s already exists: not overwriting it\n", exists);
        return 1;
    }
    char *agent = expand(LG_TEXT_agent, name, rel, spec_path), *spec = expand(LG_TEXT_agent_spec, name, rel, spec_path);
    int rc = 1;
    if (agent == NULL || spec == NULL)
        fprintf(stderr, "luagent new: out of memory\n");
    else if (write_new(agent_path, agent) != 0)
        fprintf(stderr, "luagent new: cannot write %s: %s\n", agent_path, strerror(errno));
    else if (write_new(spec_path, spec) != 0) {
        fprintf(stderr, "luagent new: cannot write %s: %s\n", spec_path, strerror(errno));
        unlink(agent_path); /* both or neither */
    } else {
        printf("created %s\ncreated %s\nrun its specs: luagent test %s\n", agent_path, spec_path, spec_dir);
        rc = 0;
    }
    free(agent);
    free(spec);
    return rc;
}

int lg_cmd_test(const lg_config_t *cfg, int argc, char **argv)
{
    char dir[PATH_MAX];
    int first = 0;
    if (argc > 0 && argv[0][0] != '-') {
        snprintf(dir, sizeof(dir), "%s", argv[0]);
        first = 1;
    } else {
        spec_dir_of(cfg->agents_dir, dir, sizeof(dir));
    }
    struct stat st;
    if (stat(dir, &st) != 0) {
        fprintf(stderr, "luagent test: no spec directory '%s' (luagent new NAME writes one)\n", dir);
        return 2;
    }
    char tmp[] = "/tmp/luagent-test-XXXXXX", mod[PATH_MAX], ai[PATH_MAX], sub[PATH_MAX];
    if (mkdtemp(tmp) == NULL) {
        fprintf(stderr, "luagent test: cannot make a temporary directory: %s\n", strerror(errno));
        return 1;
    }
    snprintf(sub, sizeof(sub), "%s/luagent", tmp);
    if (snprintf(mod, sizeof(mod), "%s/testing.lua", sub) >= (int)sizeof(mod) ||
        snprintf(ai, sizeof(ai), "%s/ai_source.lua", sub) >= (int)sizeof(ai))
        abort(); /* a /tmp name of fixed length */
    int rc = 1;
    if (write_new(mod, LG_TEXT_testing) != 0 || write_new(ai, LG_TEXT_ai) != 0) {
        fprintf(stderr, "luagent test: cannot write into %s: %s\n", tmp, strerror(errno));
        goto out;
    }
    char path[PATH_MAX + 64];
    const char *old = getenv("LUA_PATH");
    snprintf(path, sizeof(path), "%s/?.lua;%s", tmp, old != NULL && old[0] ? old : ";");
    setenv("LUA_PATH", path, 1);
    setenv("LUAGENT_AGENTS_DIR", cfg->agents_dir, 1);
    setenv("LUAGENT_PROVIDERS_DIR", cfg->providers_dir, 1);
    fflush(NULL);
    pid_t pid = fork();
    if (pid < 0) {
        fprintf(stderr, "luagent test: fork: %s\n", strerror(errno));
        goto out;
    }
    if (pid == 0) {
        char **args = calloc((size_t)argc + 4, sizeof(char *));
        int n = 0;
        args[n++] = "busted";
        args[n++] = "--lua=luajit";
        for (int i = first; i < argc; i++)
            args[n++] = argv[i];
        args[n++] = dir;
        execvp("busted", args);
        fprintf(stderr, "luagent test: cannot run busted (%s): install it (Debian: apt-get install lua-busted luajit)\n",
                strerror(errno));
        _exit(127);
    }
    int status;
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
        ;
    rc = WIFEXITED(status) ? WEXITSTATUS(status) : 1;
out:
    unlink(mod);
    unlink(ai);
    rmdir(sub);
    rmdir(tmp);
    return rc;
}
