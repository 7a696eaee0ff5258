/* meterd loadgen: command-line options. */
#ifndef METERD_LOADGEN_OPTIONS_H
#define METERD_LOADGEN_OPTIONS_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

typedef enum lg_format {
    LG_FMT_SINGLE,   /* POST /api/v1/readings, one reading */
    LG_FMT_BATCH,    /* POST /api/v1/readings, --batch readings */
    LG_FMT_RAW,      /* POST /api/readings/raw, base64 protobuf MeterData of --batch readings */
    LG_FMT_ENVELOPE, /* POST /api/v1/envelopes, --batch PM entries */
    LG_FMT_SITE,     /* POST /readings, one site reading */
    LG_FMT_GRPC,     /* gRPC meterd.v1.Meterd/Write of --batch readings on --grpc-addr */
} lg_format;

typedef struct lg_opts {
    char host[256], port[8], prefix[256]; /* from --url; prefix has no trailing '/' */
    char grpc_addr[300];   /* --format grpc: gRPC target; default host of --url, port 50051 */
    lg_format format;
    size_t batch;          /* readings per request (1 for single and site) */
    uint64_t devices;
    unsigned connections, threads;
    double rate;           /* requests/s over all threads; 0 = as fast as possible */
    double duration_s;     /* 0 when --count is used */
    uint64_t count;        /* requests; 0 when --duration is used */
    uint64_t fleet;        /* devices of the fleet replay; 0 = off */
    double timeout_s;      /* per request */
    double verify_timeout_s;
    int json, verify, progress;
} lg_opts;

/* Returns the name of a format ("single", ...). */
const char *lg_format_name(lg_format f);
/* Fills o from argv[first..]. Returns 0, 1 when --help was given, or MD_ERR_INVALID with
 * a message in err naming the option. */
int lg_opts_parse(lg_opts *o, int argc, char **argv, int first, char *err, size_t errlen);
/* Prints the usage text. */
void lg_opts_help(FILE *f);

#endif
