/* config.h: ferryd's settings, declared once as tables.
 *
 * Each key has a name, a type, bounds, a default, a one-line help and a
 * reload flag. The daemon's own keys are here; each backend declares its
 * keys in a section of its own (struct cfg_section), which the backend
 * table registers, so config.c knows no backend. The file parser, the FERRY_* environment, the command-line
 * flags, --help, conf/ferryd.conf and `ferry stats` all read the same table,
 * so they cannot disagree. Precedence: defaults < file < environment < flags. */
#ifndef FERRY_CONFIG_H
#define FERRY_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <sys/types.h>

#define FERRY_VERSION "0.1.0"
#define FERRY_DEFAULT_CONFIG "/etc/ferry/ferryd.conf"
#define FERRY_DEFAULT_SOCKET "/run/ferry/ferry.sock"

enum cfg_type { CFG_STR, CFG_INT, CFG_MODE, CFG_LEVEL };

#define CFG_SECTIONS_BYTES 512
#define CFG_MAX_SECTIONS 8

struct config {
    char *socket;             /* owns */
    long socket_mode;
    char *socket_owner;       /* owns; "" leaves it as created */
    long max_clients;
    long max_frame;
    long max_items;
    long max_depth;
    long client_max_inflight;
    long client_max_output;
    long max_buffered;
    long frame_timeout_ms;
    long default_deadline_ms;
    long max_deadline_ms;
    long drain_timeout_ms;
    long ready_timeout_ms;
    long log_level;
    char *duration_buckets;   /* owns */
    char *policy_file;        /* owns; "" means no access policy */
    /* owns: the registered sections' values, each at its own offset
     * (config_section): embedded, so that a pointer into the configuration
     * in force stays good across reloads, which replace it in place. */
    _Alignas(16) unsigned char sections[CFG_SECTIONS_BYTES];
};

struct cfg_key {
    const char *name;
    enum cfg_type type;
    size_t offset;
    const char *def;          /* the default, as text */
    long min, max;            /* bounds for integers */
    bool reloadable;
    const char *help;
    /* Checks a value beyond its type, with the same code the start uses
     * to read it (a URL parser, the histogram bounds, the user database),
     * so that a value the start would refuse is refused where it is set,
     * naming the file and line or the variable, and by --check-config.
     * Returns 0, or -1 with why (which may name the key itself). May be
     * NULL. */
    int (*check)(const char *value, char *why, size_t whylen);
};

/* A backend's keys. Their offsets point into a struct of size bytes,
 * kept inside struct config (config_section). */
struct cfg_section {
    const char *name;
    const struct cfg_key *keys;
    size_t nkeys;
    size_t size;
    /* Checks relations between its keys once all are loaded. May be NULL. */
    int (*validate)(const void *values, char *err, size_t errlen);
};

/* Adds sections after the daemon's own keys, once, before any config is
 * made (main.c registers the backend table's). Aborts when they do not
 * fit CFG_SECTIONS_BYTES, a programming error. */
void config_register(const struct cfg_section *const *sections, size_t n);
/* The values of section sec in c. */
const void *config_section(const struct config *c, const struct cfg_section *sec);

/* Every key, the daemon's first, then each section's in order. */
size_t config_nkeys(void);
const struct cfg_key *config_key(size_t i);

/* Sets every key to its default. */
void config_defaults(struct config *c);
void config_free(struct config *c);
void config_copy(struct config *dst, const struct config *src);

/* Each returns 0, or -1 after writing one line naming the key (and the file
 * and line, or the variable, or the flag) to err. */
int config_set(struct config *c, const char *key, const char *value, const char *where,
               char *err, size_t errlen) __attribute__((warn_unused_result));
int config_load_file(struct config *c, const char *path, bool must_exist, char *err, size_t errlen)
    __attribute__((warn_unused_result));
int config_load_env(struct config *c, char *err, size_t errlen) __attribute__((warn_unused_result));
/* Resolves socket_owner's "user[:group]" ("" and missing parts: -1, keep
 * as is). Returns 0, or -1 with why. The listener uses it to chown. */
int config_owner_resolve(const char *owner, uid_t *uid, gid_t *gid, char *why, size_t whylen)
    __attribute__((warn_unused_result));
/* Checks relations between keys once everything is loaded. */
int config_validate(const struct config *c, char *err, size_t errlen)
    __attribute__((warn_unused_result));

const struct cfg_key *config_find(const char *name);
/* Writes a key's current value as text. */
void config_format(const struct config *c, const struct cfg_key *k, char *buf, size_t len);
/* Writes the documented example file (conf/ferryd.conf is generated from it
 * and checked by the tests). */
void config_write_example(FILE *f);

#endif
