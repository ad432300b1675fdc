/* server_metrics.h: what telemetry's metrics read from the daemon (op
 * outcomes and durations, clients, the backends' emitters), handed over
 * as a narrow interface so telemetry never reads struct server. */
#ifndef FERRY_SERVER_METRICS_H
#define FERRY_SERVER_METRICS_H

#include "metrics.h"

struct server;

/* Fills src with callbacks that read s. */
void server_metrics_source(struct server *s, struct metrics_source *src);

#endif
