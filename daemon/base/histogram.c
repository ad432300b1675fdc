/* histogram.c: see histogram.h. */
#include <ctype.h>
#include <stdlib.h>
#include <string.h>

#include "cbuf.h"
#include "histogram.h"

int histogram_parse_bounds(const char *spec, double *out, size_t cap, size_t *n)
{
    char *copy = xstrdup(spec);
    double prev = -1;
    int rc = 0;
    *n = 0;
    for (char *save = NULL, *p = strtok_r(copy, ",", &save); p; p = strtok_r(NULL, ",", &save)) {
        char *end;
        double v = strtod(p, &end);
        while (isspace((unsigned char)*end))
            end++;
        if (end == p || *end || !(v > prev) || *n == cap) { /* !(v > prev) also refuses NaN */
            rc = -1;
            break;
        }
        out[(*n)++] = prev = v;
    }
    free(copy);
    return rc;
}

void histogram_init(struct histogram *h, size_t nbounds)
{
    memset(h, 0, sizeof(*h));
    h->counts = xcalloc(nbounds + 1, sizeof(uint64_t));
}

void histogram_free(struct histogram *h)
{
    free(h->counts);
    h->counts = NULL;
}

void histogram_record(struct histogram *h, const double *bounds, size_t nbounds, double v)
{
    size_t i = 0;
    while (i < nbounds && v > bounds[i])
        i++;
    h->counts[i]++;
    if (h->count == 0 || v < h->min)
        h->min = v;
    if (h->count == 0 || v > h->max)
        h->max = v;
    h->count++;
    h->sum += v;
}
