/* errors.c: names and messages for the error table in errors.h. */
#include <string.h>

#include "errors.h"

static const char *const names[] = {
#define FE_STR(sym, name, msg) name,
    FE_CODES(FE_STR)
#undef FE_STR
};

static const char *const messages[] = {
#define FE_MSG(sym, name, msg) msg,
    FE_CODES(FE_MSG)
#undef FE_MSG
};

const char *fe_name(int code)
{
    if (code == 0)
        return "ok";
    if (code < 0 && -code <= FE_NCODES)
        return names[-code - 1];
    return "internal";
}

const char *fe_message(int code)
{
    if (code == 0)
        return "ok";
    if (code < 0 && -code <= FE_NCODES)
        return messages[-code - 1];
    return "internal error";
}

int fe_from_name(const char *name)
{
    for (int i = 0; i < FE_NCODES; i++)
        if (strcmp(names[i], name) == 0)
            return -i - 1;
    return 0;
}
