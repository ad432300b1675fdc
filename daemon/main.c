/* main.c: ferryd's entry point: flags, configuration, then the server. */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "backend.h"
#include "config.h"
#include "log.h"
#include "ops_core.h"
#include "server.h"
#include "server_metrics.h"
#include "telemetry.h"

static void usage(FILE *f)
{
    fprintf(f,
            "usage: ferryd [options]\n"
            "\n"
            "  -c, --config FILE     configuration file (default %s if it exists)\n"
            "  -s, --socket PATH     Unix socket to listen on (key 'socket')\n"
            "  -r, --redis URL       Redis URL (key 'redis_url')\n"
            "  -a, --amqp URL        RabbitMQ URL(s) (key 'amqp_url')\n"
            "  -l, --log-level LVL   error, warn, info or debug (key 'log_level')\n"
            "  -o, --set KEY=VALUE   set any key below\n"
            "      --check-config    validate the configuration and exit\n"
            "      --print-config    print the documented example configuration\n"
            "  -h, --help            this help\n"
            "  -V, --version         print the version\n"
            "\n"
            "Precedence: defaults < file < environment (FERRY_<KEY>) < flags.\n"
            "Keys:\n",
            FERRY_DEFAULT_CONFIG);
    for (size_t i = 0, n = config_nkeys(); i < n; i++)
        fprintf(f, "  %-26s %s\n", config_key(i)->name, config_key(i)->help);
    fprintf(f, "\nSignals: SIGTERM/SIGINT drain and exit, SIGHUP reloads.\n"
               "Exit codes: 0 clean exit, 1 runtime failure, 2 bad configuration or usage.\n");
}

int main(int argc, char **argv)
{
    static const struct option longopts[] = {
        {"config", required_argument, NULL, 'c'},
        {"socket", required_argument, NULL, 's'},
        {"redis", required_argument, NULL, 'r'},
        {"amqp", required_argument, NULL, 'a'},
        {"log-level", required_argument, NULL, 'l'},
        {"set", required_argument, NULL, 'o'},
        {"check-config", no_argument, NULL, 'C'},
        {"print-config", no_argument, NULL, 'P'},
        {"help", no_argument, NULL, 'h'},
        {"version", no_argument, NULL, 'V'},
        {NULL, 0, NULL, 0},
    };
    static struct server srv;
    /* Every backend's keys join the daemon's before anything reads them:
     * --help and --print-config list them too. */
    const struct cfg_section *sections[SERVER_MAX_BACKENDS];
    for (size_t i = 0; i < backend_nkinds; i++)
        sections[i] = backend_kinds[i]->config;
    config_register(sections, backend_nkinds);
    server_init(&srv);
    const char *config_path = getenv("FERRY_CONFIG");
    bool must_exist = config_path != NULL;
    bool check_only = false;
    char **overrides = calloc((size_t)argc + 1, sizeof(char *));
    int nover = 0;
    int opt;
    int status = 0;

    while ((opt = getopt_long(argc, argv, "c:s:r:a:l:o:hV", longopts, NULL)) != -1) {
        const char *key = NULL;
        switch (opt) {
        case 'c':
            config_path = optarg;
            must_exist = true;
            continue;
        case 's': key = "socket"; break;
        case 'r': key = "redis_url"; break;
        case 'a': key = "amqp_url"; break;
        case 'l': key = "log_level"; break;
        case 'o':
            if (!strchr(optarg, '=')) {
                fprintf(stderr, "ferryd: --set needs KEY=VALUE, got '%s'\n", optarg);
                status = 2;
                goto out;
            }
            overrides[nover++] = strdup(optarg);
            continue;
        case 'C': check_only = true; continue;
        case 'P': config_write_example(stdout); goto out;
        case 'h': usage(stdout); goto out;
        case 'V': printf("ferryd %s (protocol 1)\n", FERRY_VERSION); goto out;
        default: usage(stderr); status = 2; goto out;
        }
        size_t n = strlen(key) + strlen(optarg) + 2;
        overrides[nover] = malloc(n);
        snprintf(overrides[nover++], n, "%s=%s", key, optarg);
    }
    if (optind < argc) {
        fprintf(stderr, "ferryd: unexpected argument '%s'\n", argv[optind]);
        status = 2;
        goto out;
    }
    if (!config_path)
        config_path = FERRY_DEFAULT_CONFIG;

    char err[512];
    config_defaults(&srv.cfg);
    int rc = config_load_file(&srv.cfg, config_path, must_exist, err, sizeof(err));
    if (rc == 0)
        rc = config_load_env(&srv.cfg, err, sizeof(err));
    for (int i = 0; rc == 0 && i < nover; i++) {
        char *eq = strchr(overrides[i], '=');
        char key[128];
        snprintf(key, sizeof(key), "%.*s", (int)(eq - overrides[i]), overrides[i]);
        char where[160];
        snprintf(where, sizeof(where), "flag %s", key);
        rc = config_set(&srv.cfg, key, eq + 1, where, err, sizeof(err));
    }
    if (rc == 0)
        rc = config_validate(&srv.cfg, err, sizeof(err));
    for (size_t i = 0; rc == 0 && i < backend_nkinds; i++) {
        struct backend *b = backend_kinds[i]->create(&srv.host, err, sizeof(err));
        if (b)
            srv.backends[srv.nbackends++] = b;
        else
            rc = -1;
    }
    /* The backends' ops first: the op table is scanned in order for every
     * frame, and theirs are the busy ones. */
    if (rc == 0 && ops_core_register(&srv) != 0) {
        snprintf(err, sizeof(err), "cannot register the core ops");
        rc = -1;
    }
    /* After every op is registered: a policy's op names are checked. */
    if (rc == 0 && server_load_policies(&srv, err, sizeof(err)) != 0)
        rc = -1;
    /* --check-config takes the start's own path up to listening: every
     * value is checked as it is set (config_set), then the relations
     * (config_validate), the backends and telemetry as they are made. */
    struct metrics_source src;
    server_metrics_source(&srv, &src);
    if (rc == 0 && telemetry_init(&srv.tel, &src, srv.cfg.duration_buckets, err, sizeof(err)) != 0)
        rc = -1;
    if (rc != 0) {
        for (size_t i = 0; i < srv.nbackends; i++)
            srv.backends[i]->ops->destroy(srv.backends[i]);
        srv.nbackends = 0;
        policy_free(&srv.policies);
    }
    if (rc != 0) {
        fprintf(stderr, "ferryd: bad configuration: %s\n", err);
        status = 2;
    } else if (check_only) {
        printf("configuration ok\n");
        telemetry_free(srv.tel);
        for (size_t i = 0; i < srv.nbackends; i++)
            srv.backends[i]->ops->destroy(srv.backends[i]);
        ops_free(&srv.ops);
        policy_free(&srv.policies);
    } else {
        srv.config_path = config_path;
        srv.config_must_exist = must_exist;
        srv.overrides = overrides;
        srv.noverrides = nover;
        status = server_run(&srv);
        telemetry_free(srv.tel);
    }
    config_free(&srv.cfg);
out:
    for (int i = 0; i < nover; i++)
        free(overrides[i]);
    free(overrides);
    return status;
}
