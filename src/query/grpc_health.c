/* grpc.health.v1.Health/Check, and the answer to methods meterd does not offer. */
#include "grpc/health/v1/health.pb-c.h"
#include "ingest/json_util.h"
#include "query/grpc_decode.h"
#include "query/grpc_internal.h"

#include <stdio.h>
#include <string.h>

/* Services a health check may name; "" is the server as a whole. */
static const char *const SERVICES[] = {"", "meterd.v1.Meterd", "meterusage.v1.MeterUsage",
                                       "grpc.health.v1.Health"};

grpc_status_code grpcsrv_health_decode(const uint8_t *data, size_t len, char *msg, size_t msglen)
{
    Grpc__Health__V1__HealthCheckRequest *req =
        data ? grpc__health__v1__health_check_request__unpack(NULL, len, data) : NULL;
    if (!req) {
        snprintf(msg, msglen, "request: not a grpc.health.v1.HealthCheckRequest");
        return GRPC_STATUS_INVALID_ARGUMENT;
    }
    int known = 0;
    for (size_t i = 0; i < sizeof SERVICES / sizeof SERVICES[0]; i++)
        known |= strcmp(req->service, SERVICES[i]) == 0;
    if (!known) { /* the name is the client's bytes: made valid UTF-8 for the log line */
        ingest_error e;
        ingest_fail(&e, 404, "service '%.200s' unknown", req->service);
        snprintf(msg, msglen, "%s", e.message);
    }
    grpc__health__v1__health_check_request__free_unpacked(req, NULL);
    return known ? GRPC_STATUS_OK : GRPC_STATUS_NOT_FOUND;
}

void grpcsrv_handle_health_check(grpcsrv_rpc *rpc)
{
    char msg[300];
    grpc_status_code code = grpcsrv_decode_call(rpc, grpcsrv_health_decode, msg, sizeof msg);
    if (code != GRPC_STATUS_OK) {
        grpcsrv_reply(rpc, NULL, code, "%s", msg);
        return;
    }
    Grpc__Health__V1__HealthCheckResponse resp = GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__INIT;
    int serving = atomic_load(&rpc->srv->q->ready) && !atomic_load(&rpc->srv->stopping);
    resp.status = serving ? GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__SERVING
                          : GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__NOT_SERVING;
    grpcsrv_reply_ok(rpc, grpcsrv_pack(&resp.base));
}

void grpcsrv_handle_unknown(grpcsrv_rpc *rpc)
{
    char method[256];
    size_t len = GRPC_SLICE_LENGTH(rpc->details.method);
    if (len >= sizeof method) len = sizeof method - 1;
    memcpy(method, GRPC_SLICE_START_PTR(rpc->details.method), len);
    method[len] = '\0';
    grpcsrv_reply(rpc, NULL, GRPC_STATUS_UNIMPLEMENTED, "method %s is not offered by meterd",
                  method);
}
