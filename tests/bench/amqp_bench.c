/* amqp_bench.c: a direct rabbitmq-c publisher and consumer, the baseline
 * that ferryd's AMQP path is measured against in `make bench`.
 *
 *   amqp-bench --port P -t publish -q QUEUE -n N -P IN_FLIGHT -d BYTES
 *   amqp-bench --port P -t consume -q QUEUE -n N -P PREFETCH
 *
 * publish: persistent messages with publisher confirms, IN_FLIGHT
 * unconfirmed at most, like ferry-bench's publish test. consume: receives
 * N deliveries with a prefetch window, acking every 50 with multiple=true,
 * as ferry-bench does. Prints "PUBLISH: <rate> messages per second". */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <amqp.h>
#include <amqp_tcp_socket.h>

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void check(amqp_rpc_reply_t r, const char *what)
{
    if (r.reply_type != AMQP_RESPONSE_NORMAL) {
        fprintf(stderr, "amqp-bench: %s failed\n", what);
        exit(1);
    }
}

int main(int argc, char **argv)
{
    int port = 5672, opt;
    long n = 10000, inflight = 1, bytes = 100;
    const char *test = "publish", *queue = "ferry.bench";
    while ((opt = getopt(argc, argv, "p:t:q:n:P:d:")) != -1) {
        switch (opt) {
        case 'p': port = atoi(optarg); break;
        case 't': test = optarg; break;
        case 'q': queue = optarg; break;
        case 'n': n = atol(optarg); break;
        case 'P': inflight = atol(optarg); break;
        case 'd': bytes = atol(optarg); break;
        default:
            fprintf(stderr, "usage: amqp-bench -p PORT -t publish|consume -q QUEUE -n N -P K -d BYTES\n");
            return 64;
        }
    }
    amqp_connection_state_t c = amqp_new_connection();
    amqp_socket_t *s = amqp_tcp_socket_new(c);
    if (amqp_socket_open(s, "127.0.0.1", port) != AMQP_STATUS_OK) {
        fprintf(stderr, "amqp-bench: cannot connect\n");
        return 1;
    }
    check(amqp_login(c, "/", 0, 131072, 0, AMQP_SASL_METHOD_PLAIN, "guest", "guest"), "login");
    amqp_channel_open(c, 1);
    check(amqp_get_rpc_reply(c), "channel.open");
    amqp_queue_declare(c, 1, amqp_cstring_bytes(queue), 0, 1, 0, 0, amqp_empty_table);
    check(amqp_get_rpc_reply(c), "queue.declare");

    if (!strcmp(test, "publish")) {
        amqp_confirm_select(c, 1);
        check(amqp_get_rpc_reply(c), "confirm.select");
        char *body = malloc((size_t)bytes);
        memset(body, 'x', (size_t)bytes);
        amqp_basic_properties_t props = {._flags = AMQP_BASIC_DELIVERY_MODE_FLAG, .delivery_mode = 2};
        amqp_bytes_t b = {.len = (size_t)bytes, .bytes = body};
        long sent = 0, confirmed = 0;
        double t0 = now();
        while (confirmed < n) {
            while (sent < n && sent - confirmed < inflight) {
                if (amqp_basic_publish(c, 1, amqp_empty_bytes, amqp_cstring_bytes(queue), 0, 0, &props, b)) {
                    fprintf(stderr, "amqp-bench: publish failed\n");
                    return 1;
                }
                sent++;
            }
            amqp_frame_t f;
            if (amqp_simple_wait_frame(c, &f) != AMQP_STATUS_OK)
                return 1;
            if (f.frame_type == AMQP_FRAME_METHOD && f.payload.method.id == AMQP_BASIC_ACK_METHOD) {
                amqp_basic_ack_t *a = f.payload.method.decoded;
                confirmed = (long)a->delivery_tag; /* tags count from 1, in order */
            }
            amqp_maybe_release_buffers(c);
        }
        printf("PUBLISH: %.2f messages per second\n", (double)n / (now() - t0));
        free(body);
    } else {
        amqp_basic_qos(c, 1, 0, (uint16_t)inflight, 0);
        check(amqp_get_rpc_reply(c), "basic.qos");
        amqp_basic_consume(c, 1, amqp_cstring_bytes(queue), amqp_empty_bytes, 0, 0, 0, amqp_empty_table);
        check(amqp_get_rpc_reply(c), "basic.consume");
        double t0 = now();
        for (long i = 1; i <= n; i++) {
            amqp_envelope_t env;
            amqp_maybe_release_buffers(c);
            if (amqp_consume_message(c, &env, NULL, 0).reply_type != AMQP_RESPONSE_NORMAL)
                return 1;
            if (i % 50 == 0 || i == n)
                amqp_basic_ack(c, 1, env.delivery_tag, 1);
            amqp_destroy_envelope(&env);
        }
        printf("CONSUME: %.2f messages per second\n", (double)n / (now() - t0));
    }
    amqp_channel_close(c, 1, AMQP_REPLY_SUCCESS);
    amqp_connection_close(c, AMQP_REPLY_SUCCESS);
    amqp_destroy_connection(c);
    return 0;
}
