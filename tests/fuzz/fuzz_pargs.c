/* Fuzz target: the patterns' argument maps (daemon/patterns/pargs.c) on
 * arbitrary bytes, as a client could send them in "args" (the frame's
 * decoder checks well-formedness first; this target does not rely on
 * it). Properties: no crash or overread; whatever is reported present
 * points inside the input. */
#include <assert.h>
#include <stdint.h>
#include <string.h>

#include "pargs.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct parg s[] = {
        {.name = "name", .type = PA_STR, .required = true},
        {.name = "n", .type = PA_UINT},
        {.name = "b", .type = PA_BOOL},
        {.name = "f", .type = PA_NUM},
        {.name = "keys", .type = PA_ARRAY},
        {.name = "any", .type = PA_ANY},
    };
    size_t n = sizeof(s) / sizeof(s[0]);
    char msg[128];
    if (pargs_read(data, size, s, n, msg, sizeof(msg)))
        return 0;
    for (size_t i = 0; i < n; i++) {
        if (!s[i].present || s[i].type == PA_UINT || s[i].type == PA_BOOL || s[i].type == PA_NUM)
            continue;
        assert(s[i].p >= data && s[i].p + s[i].n <= data + size);
    }
    if (s[4].present) {
        const char *argv[16];
        size_t lens[16];
        int k = pargs_strings(s[4].p, s[4].n, argv, lens, 16, msg, sizeof(msg));
        for (int i = 0; i < k; i++)
            assert((const uint8_t *)argv[i] >= data && (const uint8_t *)argv[i] + lens[i] <= data + size);
    }
    return 0;
}
