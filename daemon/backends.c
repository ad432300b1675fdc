/* backends.c: the backend table: every backend ferryd can run, with its
 * name, its keys of ferryd.conf and its constructor. Adding a backend is
 * adding its row here; main.c, the config and the request path take it
 * from the table. */
#include "backend.h"
#include "mq_backend.h"
#include "rds_backend.h"

const struct backend_kind *const backend_kinds[] = {
    &rds_backend_kind,
    &mq_backend_kind,
};

const size_t backend_nkinds = sizeof(backend_kinds) / sizeof(backend_kinds[0]);
