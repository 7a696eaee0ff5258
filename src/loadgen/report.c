/* meterd loadgen: progress and summary output. */
#include "loadgen/report.h"

#include <jansson.h>
#include <stdint.h>

static double ms(uint64_t us)
{
    return (double)us / 1000.0;
}

void lg_report_progress(FILE *f, double elapsed_s, double interval_s, const lg_counts *delta,
                        const lg_counts *total, const lg_hist *interval)
{
    double d = interval_s > 0 ? interval_s : 1;
    fprintf(f, "\r%6.1fs %9.0f req/s %11.0f readings/s  errors %llu  p99 %.2f ms   ",
            elapsed_s, (double)delta->responses / d, (double)delta->ok_readings / d,
            (unsigned long long)lg_counts_errors(total), ms(lg_hist_percentile(interval, 99)));
    fflush(f);
}

static json_t *summary_json(const lg_summary *s)
{
    const lg_counts *c = s->c;
    double el = s->elapsed_s > 0 ? s->elapsed_s : 1e-9;
    json_t *st = json_object(), *fails = json_object();
    for (int i = 0; i < 600; i++)
        if (c->status[i]) {
            char k[16];
            snprintf(k, sizeof k, "%d", i);
            json_object_set_new(st, k, json_integer((json_int_t)c->status[i]));
        }
    for (unsigned i = 0; i < LG_GRPC_CODES; i++) /* --format grpc */
        if (c->grpc_status[i])
            json_object_set_new(st, lg_grpc_status_name(i),
                                json_integer((json_int_t)c->grpc_status[i]));
    for (int i = 0; i < LG_FAIL_N; i++)
        if (c->fail[i])
            json_object_set_new(fails, lg_fail_name((lg_fail)i), json_integer((json_int_t)c->fail[i]));
    const lg_hist *h = s->lat;
    json_t *lat = json_pack("{s:f,s:f,s:f,s:f,s:f,s:f}", "p50", ms(lg_hist_percentile(h, 50)),
                            "p90", ms(lg_hist_percentile(h, 90)), "p99",
                            ms(lg_hist_percentile(h, 99)), "p99_9", ms(lg_hist_percentile(h, 99.9)),
                            "max", ms(h->max), "mean", lg_hist_mean(h) / 1000.0);
    json_t *o = json_pack(
        "{s:s,s:s,s:I,s:I,s:i,s:i,s:f,s:f,s:I,s:I,s:I,s:f,s:f,s:I,s:o,s:o,s:o,s:I,s:I}", "url",
        s->url, "format", lg_format_name(s->o->format), "batch", (json_int_t)s->o->batch,
        "devices", (json_int_t)(s->o->fleet ? s->o->fleet : s->o->devices), "connections",
        (int)s->o->connections, "threads", (int)s->o->threads, "rate_target", s->o->rate,
        "elapsed_s", s->elapsed_s, "requests", (json_int_t)c->responses, "ok",
        (json_int_t)c->ok, "readings_ok", (json_int_t)c->ok_readings, "requests_per_s",
        (double)c->responses / el, "readings_per_s", (double)c->ok_readings / el, "errors",
        (json_int_t)lg_counts_errors(c), "status", st, "failures", fails, "latency_ms", lat,
        "bytes_out", (json_int_t)c->bytes_out, "bytes_in", (json_int_t)c->bytes_in);
    if (s->o->fleet)
        json_object_set_new(o, "fleet", json_pack("{s:I,s:I,s:I}", "devices",
                                                  (json_int_t)s->o->fleet, "resent_ok",
                                                  (json_int_t)c->ok_resent, "late_ok",
                                                  (json_int_t)c->ok_late));
    if (s->first_error && s->first_error[0])
        json_object_set_new(o, "first_error", json_string(s->first_error));
    if (s->v.done) {
        const lg_verify_result *v = &s->v;
        json_t *vj = json_pack("{s:b,s:b,s:f,s:f,s:f,s:f,s:f,s:f,s:f,s:f}", "ok", v->ok,
                               "drained", v->drained, "drain_s", v->drain_s, "expected_stored",
                               v->expected, "stored", v->stored, "missing",
                               v->expected - v->stored, "duplicates", v->duplicates, "invalid",
                               v->invalid, "max_worker_lag_s", v->max_lag_s, "max_queue_depth",
                               v->max_depth);
        if (v->err[0]) json_object_set_new(vj, "error", json_string(v->err));
        json_object_set_new(o, "verify", vj);
    }
    return o;
}

void lg_report_final(FILE *f, const lg_summary *s, int json)
{
    if (json) {
        json_t *o = summary_json(s);
        char *txt = o ? json_dumps(o, JSON_COMPACT | JSON_PRESERVE_ORDER) : NULL;
        fprintf(f, "%s\n", txt ? txt : "{\"error\":\"out of memory\"}");
        free(txt);
        json_decref(o);
        return;
    }
    const lg_counts *c = s->c;
    const lg_hist *h = s->lat;
    double el = s->elapsed_s > 0 ? s->elapsed_s : 1e-9;
    fprintf(f, "%s %s, batch %zu, %u connections, %u threads, %.2f s\n", lg_format_name(s->o->format),
            s->url, s->o->batch, s->o->connections, s->o->threads, s->elapsed_s);
    fprintf(f, "  requests     %llu (%.0f/s), %s %llu\n", (unsigned long long)c->responses,
            (double)c->responses / el, s->o->format == LG_FMT_GRPC ? "OK" : "2xx",
            (unsigned long long)c->ok);
    fprintf(f, "  readings     %llu acknowledged (%.0f/s)\n", (unsigned long long)c->ok_readings,
            (double)c->ok_readings / el);
    fprintf(f, "  latency ms   p50 %.3f  p90 %.3f  p99 %.3f  p99.9 %.3f  max %.3f%s\n",
            ms(lg_hist_percentile(h, 50)), ms(lg_hist_percentile(h, 90)),
            ms(lg_hist_percentile(h, 99)), ms(lg_hist_percentile(h, 99.9)), ms(h->max),
            s->o->rate > 0 ? " (from the scheduled send time or the send, the later)" : "");
    fprintf(f, "  errors       %llu", (unsigned long long)lg_counts_errors(c));
    for (int i = 0; i < 600; i++)
        if (c->status[i] && (i < 200 || i >= 300))
            fprintf(f, "  [%d] %llu", i, (unsigned long long)c->status[i]);
    for (unsigned i = 1; i < LG_GRPC_CODES; i++)
        if (c->grpc_status[i])
            fprintf(f, "  [%s] %llu", lg_grpc_status_name(i),
                    (unsigned long long)c->grpc_status[i]);
    for (int i = 0; i < LG_FAIL_N; i++)
        if (c->fail[i]) fprintf(f, "  [%s] %llu", lg_fail_name((lg_fail)i), (unsigned long long)c->fail[i]);
    fputc('\n', f);
    if (s->first_error && s->first_error[0]) fprintf(f, "  first error  %s\n", s->first_error);
    if (s->o->fleet)
        fprintf(f, "  fleet        %llu devices, %llu resent, %llu late\n",
                (unsigned long long)s->o->fleet, (unsigned long long)c->ok_resent,
                (unsigned long long)c->ok_late);
    if (s->v.done) {
        const lg_verify_result *v = &s->v;
        fprintf(f, "  verify       %s: stored %.0f of %.0f expected (%.0f duplicates, %.0f invalid), "
                   "drained in %.2f s, max worker lag %.3f s, max queue depth %.0f%s%s\n",
                v->ok ? "OK" : "FAILED", v->stored, v->expected, v->duplicates, v->invalid,
                v->drain_s, v->max_lag_s, v->max_depth, v->err[0] ? ": " : "", v->err);
    }
}
