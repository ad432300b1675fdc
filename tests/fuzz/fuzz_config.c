/* Fuzz target: ferryd.conf and the FERRY_* environment. The bytes are a
 * configuration file (base/config.c's parser, then every key's own check:
 * the URL parsers, the deny-list, the histogram bounds); the same text's
 * lines are also set one by one as "KEY=VALUE", as the environment and
 * --set are. Properties: no crash or overread, and a file that loads also
 * validates or says why. */
#define _GNU_SOURCE
#include <assert.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "backend.h"
#include "config.h"

static int registered;

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!registered) {
        const struct cfg_section *secs[8];
        for (size_t i = 0; i < backend_nkinds; i++)
            secs[i] = backend_kinds[i]->config;
        config_register(secs, backend_nkinds);
        registered = 1;
    }
    int fd = memfd_create("ferryd.conf", 0);
    if (fd < 0)
        return 0;
    if (write(fd, data, size) != (ssize_t)size) {
        close(fd);
        return 0;
    }
    char path[64];
    snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
    struct config c;
    char err[512];
    config_defaults(&c);
    if (config_load_file(&c, path, true, err, sizeof(err)) == 0) {
        err[0] = '\0';
        if (config_validate(&c, err, sizeof(err)) != 0)
            assert(err[0] != '\0');
    } else {
        assert(err[0] != '\0');
    }
    config_free(&c);
    close(fd);

    /* The environment's and the flags' path: KEY=VALUE per line. */
    char *text = malloc(size + 1);
    memcpy(text, data, size);
    text[size] = '\0';
    config_defaults(&c);
    for (char *save = NULL, *line = strtok_r(text, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
        char *eq = strchr(line, '=');
        if (!eq)
            continue;
        *eq = '\0';
        (void)config_set(&c, line, eq + 1, "fuzz", err, sizeof(err));
    }
    config_free(&c);
    free(text);
    return 0;
}
