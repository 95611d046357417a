/* grpc_decode_bench.c — ModelInferRequest in: ortserve's splitter + decoder (src/grpc/wire.c, one copy
 * of each tensor out of the receive buffer, into its aligned place) against protobuf-c's unpack of the
 * same bytes (which copies every raw_input_contents entry into memory of its own), for an MLP-sized
 * (256 B) and a MobileNetV2-sized (602 KB) input. Prints ns per message, medians of 9 runs. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "grpc/wire.h"
#include "grpc_service.pb-c.h"

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e9 + ts.tv_nsec;
}

static int cmp(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static void one(const char *what, size_t bytes, int64_t d0, int64_t d1, int reps)
{
    Inference__ModelInferRequest r = INFERENCE__MODEL_INFER_REQUEST__INIT;
    Inference__ModelInferRequest__InferInputTensor in = INFERENCE__MODEL_INFER_REQUEST__INFER_INPUT_TENSOR__INIT,
                                                   *ins[1] = {&in};
    int64_t shape[2] = {d0, d1};
    ProtobufCBinaryData raw = {bytes, calloc(1, bytes)};
    r.model_name = "m";
    in.name = "x";
    in.datatype = "FP32";
    in.n_shape = 2;
    in.shape = shape;
    r.n_inputs = 1;
    r.inputs = ins;
    r.n_raw_input_contents = 1;
    r.raw_input_contents = &raw;
    size_t n = inference__model_infer_request__get_packed_size(&r);
    uint8_t *msg = malloc(n), *slot = aligned_alloc(64, (n + OSV_GW_RAW_SLACK + 63) & ~63ul);
    inference__model_infer_request__pack(&r, msg);
    double hand[9], pbc[9];
    for (int k = 0; k < 9; k++) {
        double t0 = now();
        for (int i = 0; i < reps; i++) {
            osv_gw_split_t s;
            osv_gw_input_t gi[1];
            osv_gw_output_t go[1];
            osv_gw_request_t q = {.inputs = gi, .n_inputs = 1, .outputs = go, .n_outputs = 1};
            osv_err_t err;
            osv_gw_split_init(&s, slot, (n + OSV_GW_RAW_SLACK + 63) & ~63ul, n);
            if (osv_gw_split_feed(&s, msg, n, &err) || osv_gw_split_end(&s, &err) ||
                osv_gw_decode(slot, s.meta_len, &s, &q, &err))
                abort();
        }
        hand[k] = (now() - t0) / reps;
        t0 = now();
        for (int i = 0; i < reps; i++) {
            /* protobuf-c needs the message contiguous first: the same socket-to-buffer copy, then unpack */
            memcpy(slot, msg, n);
            Inference__ModelInferRequest *u = inference__model_infer_request__unpack(NULL, n, slot);
            if (!u)
                abort();
            inference__model_infer_request__free_unpacked(u, NULL);
        }
        pbc[k] = (now() - t0) / reps;
    }
    qsort(hand, 9, sizeof *hand, cmp);
    qsort(pbc, 9, sizeof *pbc, cmp);
    printf("%-12s %8zu B  hand-written %9.0f ns  protobuf-c %9.0f ns  ratio %.2fx\n", what, n, hand[4], pbc[4],
           pbc[4] / hand[4]);
    free(raw.data);
    free(msg);
    free(slot);
}

int main(void)
{
    one("mlp", 256, 1, 64, 200000);
    one("mobilenetv2", 3 * 224 * 224 * 4, 1, 150528, 2000);
    return 0;
}
