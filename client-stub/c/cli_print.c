/* cli_print.c: how the `ferry` command prints replies, shared by its
 * commands' files. */
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "cli_print.h"

/* Prints a value the way redis-cli's raw mode does. */
void cli_print_raw(const cbor_item_t *it)
{
    switch (cbor_typeof(it)) {
    case CBOR_TYPE_BYTESTRING:
    case CBOR_TYPE_STRING:
        if (cbor_isa_bytestring(it) ? cbor_bytestring_is_definite(it) : cbor_string_is_definite(it)) {
            size_t n = cbor_isa_bytestring(it) ? cbor_bytestring_length(it) : cbor_string_length(it);
            const unsigned char *p = cbor_isa_bytestring(it) ? cbor_bytestring_handle(it) : cbor_string_handle(it);
            fwrite(p, 1, n, stdout);
        }
        putchar('\n');
        break;
    case CBOR_TYPE_UINT:
        printf("%" PRIu64 "\n", cbor_get_int(it));
        break;
    case CBOR_TYPE_NEGINT:
        printf("-%" PRIu64 "\n", cbor_get_int(it) + 1);
        break;
    case CBOR_TYPE_ARRAY:
        for (size_t i = 0; i < cbor_array_size(it); i++)
            cli_print_raw(cbor_array_handle((cbor_item_t *)it)[i]);
        break;
    case CBOR_TYPE_FLOAT_CTRL:
        /* Test the width first: libcbor 0.8's cbor_is_bool() asserts on
         * floats. */
        if (cbor_float_get_width(it) != CBOR_FLOAT_0)
            printf("%.17g\n", cbor_float_get_float(it));
        else if (cbor_is_bool(it))
            puts(cbor_get_bool(it) ? "true" : "false");
        else
            putchar('\n');
        break;
    case CBOR_TYPE_MAP: {
        struct cbor_pair *p = cbor_map_handle((cbor_item_t *)it);
        for (size_t i = 0; i < cbor_map_size(it); i++) {
            cli_print_raw(p[i].key);
            cli_print_raw(p[i].value);
        }
        break;
    }
    default:
        putchar('\n');
        break;
    }
}

/* Prints a nested map as "a.b.c: value" lines, for stats. */
void cli_print_flat(const char *prefix, const cbor_item_t *it)
{
    char key[512];
    if (cbor_isa_map(it)) {
        struct cbor_pair *p = cbor_map_handle((cbor_item_t *)it);
        for (size_t i = 0; i < cbor_map_size(it); i++) {
            const cbor_item_t *k = p[i].key;
            int n = cbor_isa_string(k) ? (int)cbor_string_length(k) : 0;
            snprintf(key, sizeof(key), "%s%s%.*s", prefix, prefix[0] ? "." : "", n,
                     n ? (const char *)cbor_string_handle(k) : "");
            cli_print_flat(key, p[i].value);
        }
        return;
    }
    if (cbor_isa_array(it)) {
        for (size_t i = 0; i < cbor_array_size(it); i++) {
            snprintf(key, sizeof(key), "%s.%zu", prefix, i);
            cli_print_flat(key, cbor_array_handle((cbor_item_t *)it)[i]);
        }
        return;
    }
    printf("%s: ", prefix);
    cli_print_raw(it);
}

int cli_check_result(ferry_msg_t *m, int rc)
{
    if (rc != 0) {
        fprintf(stderr, "ferry: %s\n", ferry_strerror(rc));
        return 2;
    }
    if (m->err_code) {
        fprintf(stderr, "(error) %s: %s\n", m->err_code, m->err_message);
        return 1;
    }
    return 0;
}

void cli_map_put(cbor_item_t *map, const char *key, cbor_item_t *value)
{
    cbor_map_add(map, (struct cbor_pair){.key = cbor_move(cbor_build_string(key)), .value = cbor_move(value)});
}


const cbor_item_t *cli_map_get(const cbor_item_t *m, const char *key)
{
    if (!m || !cbor_isa_map(m))
        return NULL;
    size_t n = strlen(key);
    struct cbor_pair *p = cbor_map_handle(m);
    for (size_t i = 0; i < cbor_map_size(m); i++)
        if (cbor_isa_string(p[i].key) && cbor_string_length(p[i].key) == n &&
            !memcmp(cbor_string_handle(p[i].key), key, n))
            return p[i].value;
    return NULL;
}
