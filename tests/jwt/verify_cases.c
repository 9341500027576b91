/* jwt_cases DIR: verify the tokens tests/jwt/mint.mjs (jose) wrote into DIR with lg_jwt_verify and
 * compare each verdict with the expected one. Prints one TAP-like line per case, then
 * "N passed, N failed"; exit status 1 when any case failed, 2 on a setup problem. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "luagent/jwt.h"

enum { HS, RSA_PEM, RSA_TEXT, EC_PEM, JWKS, NKEYSETS };
static const char *const NAMES[NKEYSETS] = {"hs", "rsa_pem", "rsa_text", "ec_pem", "jwks"};

static char *slurp(const char *dir, const char *name)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    char *buf = malloc(1 << 20);
    size_t n = buf ? fread(buf, 1, (1 << 20) - 1, f) : 0;
    fclose(f);
    if (buf)
        buf[n] = '\0';
    return buf;
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: jwt_cases DIR\n");
        return 2;
    }
    const char *dir = argv[1];
    char *secret = slurp(dir, "secret.txt"), *rsa_text = slurp(dir, "rsa.pem"), *now_s = slurp(dir, "now.txt");
    if (!secret || !rsa_text || !now_s) {
        fprintf(stderr, "jwt_cases: %s lacks secret.txt, rsa.pem or now.txt\n", dir);
        return 2;
    }
    uint64_t now = strtoull(now_s, NULL, 10);
    char paths[3][4096];
    snprintf(paths[0], sizeof paths[0], "%s/rsa.pem", dir);
    snprintf(paths[1], sizeof paths[1], "%s/ec.pem", dir);
    snprintf(paths[2], sizeof paths[2], "%s/jwks.json", dir);
    const char *pubs[NKEYSETS] = {NULL, paths[0], rsa_text, paths[1], paths[2]};
    lg_jwt_keys_t *keys[NKEYSETS];
    for (int i = 0; i < NKEYSETS; i++) {
        lg_config_t cfg;
        memset(&cfg, 0, sizeof cfg);
        cfg.jwt_secret = i == HS ? secret : NULL;
        cfg.jwt_public_key = (char *)pubs[i];
        cfg.jwt_issuer = "https://issuer.test";
        cfg.jwt_audience = "luagent";
        char err[256];
        if (!(keys[i] = lg_jwt_keys_load(&cfg, err, sizeof err))) {
            fprintf(stderr, "jwt_cases: keyset %s: %s\n", NAMES[i], err);
            return 2;
        }
    }
    char *cases = slurp(dir, "cases.tsv");
    if (!cases) {
        fprintf(stderr, "jwt_cases: no cases.tsv in %s\n", dir);
        return 2;
    }
    int passed = 0, failed = 0, n = 0;
    char *save = NULL;
    for (char *line = strtok_r(cases, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
        char *f[4];
        int nf = 0;
        for (char *p = line; nf < 4; nf++) {
            f[nf] = p;
            char *tab = strchr(p, '\t');
            if (!tab) {
                nf++;
                break;
            }
            *tab = '\0';
            p = tab + 1;
        }
        n++;
        int ks = -1;
        for (int i = 0; nf == 4 && i < NKEYSETS; i++)
            if (strcmp(f[1], NAMES[i]) == 0)
                ks = i;
        if (ks < 0) {
            printf("not ok %d - bad case line\n", n);
            failed++;
            continue;
        }
        lg_jwt_claims_t cl;
        char err[128] = "";
        int rc = lg_jwt_verify(keys[ks], f[3], strlen(f[3]), now, &cl, err, sizeof err);
        char got[512];
        if (rc == 0)
            snprintf(got, sizeof got, "ok:%s", cl.sub);
        else
            snprintf(got, sizeof got, "%s", err);
        int good = strcmp(got, f[2]) == 0 || (strcmp(f[2], "ok") == 0 && rc == 0);
        if (good) {
            printf("ok %d - %s (%s)\n", n, f[0], got);
            passed++;
        } else {
            printf("not ok %d - %s: expected \"%s\", got \"%s\"\n", n, f[0], f[2], got);
            failed++;
        }
    }
    for (int i = 0; i < NKEYSETS; i++)
        lg_jwt_keys_free(keys[i]);
    free(cases), free(secret), free(rsa_text), free(now_s);
    printf("%d passed, %d failed\n", passed, failed);
    return failed ? 1 : 0;
}
