/*
 * gen.c - generation steps shared by POST /chat and POST /v1/chat/completions.
 */
#include "gen.h"

#include "log.h"

#include <cjson/cJSON.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define POLL_MS 50 /* how often a waiting connection checks whether its client left */

bool zq_gen_input_refused(zq_server *srv, const zq_gen_request *request)
{
    if (!srv->filter)
        return false;
    for (int i = 0; i < request->n_turns; i++) {
        if (zq_word_filter_matches(srv->filter, request->turns[i])) {
            zq_metrics_filter_hit(srv->metrics, true);
            return true;
        }
    }
    return false;
}

int zq_gen_count_prompt(const zq_server *srv, const char *const *turns, int n_turns)
{
    int32_t scratch[64];
    int total = 1; /* [CLS] */
    for (int i = 0; i < n_turns; i++) {
        int n = 0;
        zq_tokenize(srv->model, turns[i], scratch, 64, &n); /* n is the full count */
        total += n + 1;                                      /* the turn and its [SEP] */
    }
    return total;
}

bool zq_gen_build_prompt(zq_server *srv, zq_http_req *req, const char *const *turns,
                         int n_turns, int reserve, int32_t *ids, int *n_ids, int *n_dropped)
{
    const zq_status st = zq_chat_build_prompt(srv->model, turns, n_turns, srv->n_ctx, reserve,
                                              ids, srv->n_ctx, n_ids, n_dropped);
    if (st == ZQ_ERR_CONTEXT_FULL) {
        const int need = zq_gen_count_prompt(srv, turns + n_turns - 1, 1);
        zq_http_send_error(req, 400, "invalid_request_error",
                           "the message is %d tokens and %d more are reserved for the reply, "
                           "but the context holds %d tokens; shorten the message or lower "
                           "max_new_tokens",
                           need, reserve, srv->n_ctx);
        return false;
    }
    if (st != ZQ_OK) {
        ZQ_SRV_LOG_ERROR("building the prompt failed: %s", zq_last_error());
        zq_http_send_error(req, 500, "server_error", "building the prompt failed: %s",
                           zq_last_error());
        return false;
    }
    return true;
}

static zq_job *cached_job(zq_server *srv, zq_http_req *req, const char *key)
{
    zq_cached_reply hit;
    if (!zq_cache_get(srv->cache, key, &hit)) {
        zq_metrics_cache(srv->metrics, false);
        return NULL;
    }
    zq_metrics_cache(srv->metrics, true);
    if (hit.output_masked)
        zq_metrics_filter_hit(srv->metrics, false);
    zq_job *job = zq_job_create_done(hit.text, hit.n_tokens, hit.finish);
    zq_cached_reply_free(&hit);
    if (job)
        req->cache_hit = true;
    return job;
}

zq_job *zq_gen_start(zq_server *srv, zq_http_req *req, const zq_gen_request *request,
                     const int32_t *ids, int n_ids, char key[ZQ_CACHE_KEY_LEN + 1])
{
    key[0] = '\0';
    if (srv->cache && zq_gen_request_deterministic(request)) {
        const zq_cache_key_input input = {
            .model_id = srv->model_id,
            .prompt = ids,
            .n_prompt = n_ids,
            .sampling = &request->sampling,
            .max_new_tokens = request->max_new_tokens,
            .ignore_eos = request->ignore_eos,
            .filter_fingerprint = srv->filter ? zq_word_filter_fingerprint(srv->filter) : 0,
        };
        zq_cache_key(&input, key);
        zq_job *job = cached_job(srv, req, key);
        if (job) {
            key[0] = '\0';
            return job;
        }
    }

    const zq_job_params params = {
        .prompt = ids,
        .n_prompt = n_ids,
        .sampling = request->sampling,
        .max_new_tokens = request->max_new_tokens,
        .ignore_eos = request->ignore_eos,
        .output_filter = srv->filter,
        .t_arrival = req->t_start,
    };
    zq_job *job = zq_job_create(&params);
    if (!job) {
        zq_http_send_error(req, 500, "server_error", "out of memory for the request");
        return NULL;
    }
    const zq_submit_result submitted = zq_sched_submit(srv->sched, job);
    if (submitted == ZQ_SUBMIT_OK)
        return job;
    zq_job_release(job);
    if (submitted == ZQ_SUBMIT_QUEUE_FULL)
        zq_http_send_error(req, 503, "overloaded_error",
                           "all %d decoding slots are busy and %d requests are waiting; retry "
                           "later",
                           srv->cfg.parallel, srv->cfg.queue);
    else
        zq_http_send_error(req, 503, "unavailable_error", "the server is shutting down");
    return NULL;
}

void zq_gen_wait(zq_http_req *req, zq_job *job, zq_buf *text, zq_job_state *state)
{
    size_t offset = 0;
    for (;;) {
        offset = zq_job_poll(job, offset, POLL_MS, text, state);
        if (state->finish != ZQ_FINISH_NONE)
            break;
        /* The scheduler holds its own reference and drops the job at its next step, or
         * when a queued job reaches a slot, so the connection need not wait for that. */
        if (zq_http_client_gone(req)) {
            zq_job_cancel(job);
            state->finish = ZQ_FINISH_CANCELLED;
            break;
        }
    }
    req->tokens = state->n_tokens;
}

void zq_gen_cache_store(zq_server *srv, const char *key, const char *text,
                        const zq_job_state *state)
{
    if (!key[0] || !srv->cache)
        return;
    if (state->finish != ZQ_FINISH_STOP && state->finish != ZQ_FINISH_LENGTH)
        return;
    const zq_cached_reply reply = {
        .text = (char *)text,
        .n_tokens = state->n_tokens,
        .finish = state->finish,
        .output_masked = state->output_masked,
    };
    zq_cache_put(srv->cache, key, &reply);
}

/* The status, type and message of a job that ended with ZQ_FINISH_ERROR. */
typedef struct {
    int status;
    const char *type;
    char message[256]; /* "generation failed: " and the job's error */
} failure;

/* Describes a failed job the same way for plain and streamed responses: jobs that the
 * shutdown aborted are 503 unavailable_error, runtime failures 500 server_error (logged). */
static void describe_failure(zq_server *srv, const zq_job_state *state, failure *f)
{
    if (atomic_load(&srv->draining)) {
        f->status = 503;
        f->type = "unavailable_error";
        snprintf(f->message, sizeof f->message, "%s", state->error);
        return;
    }
    ZQ_SRV_LOG_ERROR("generation failed: %s", state->error);
    f->status = 500;
    f->type = "server_error";
    snprintf(f->message, sizeof f->message, "generation failed: %s", state->error);
}

enum MHD_Result zq_gen_send_failure(zq_http_req *req, const zq_job_state *state)
{
    failure f;
    describe_failure(req->srv, state, &f);
    return zq_http_send_error(req, f.status, f.type, "%s", f.message);
}

void zq_gen_error_event(zq_server *srv, const zq_job_state *state, zq_buf *out)
{
    failure f;
    if (state->finish == ZQ_FINISH_CANCELLED) {
        /* Only the connection cancels its job, after its client has gone, so no client
         * reads this event; it keeps the stream well-formed all the same. */
        f.status = 500;
        f.type = "server_error";
        snprintf(f.message, sizeof f.message, "the request was cancelled");
    } else {
        describe_failure(srv, state, &f);
    }
    cJSON *event = cJSON_CreateObject();
    cJSON *error = cJSON_AddObjectToObject(event, "error");
    cJSON_AddStringToObject(error, "message", f.message);
    cJSON_AddStringToObject(error, "type", f.type);
    cJSON_AddNumberToObject(error, "code", f.status);
    zq_sse_event(out, event);
}
