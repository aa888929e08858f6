/*
 * routes_openai.c - POST /v1/chat/completions and GET /v1/models in the shape of the
 * OpenAI API. The messages become chat turns, and system messages are skipped. Unlike
 * /chat, nothing is dropped to fit the context: a longer conversation gets a 400 response
 * that gives the token counts.
 */
#include "gen.h"

#include <cjson/cJSON.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

typedef struct {
    zq_server *srv;
    char id[40]; /* "chatcmpl-" and 24 hex digits */
    long created;
    int prompt_tokens;
    bool include_usage;
    char key[ZQ_CACHE_KEY_LEN + 1];
} completion;

static void completion_free(void *user)
{
    free(user);
}

static bool completion_init(completion *c, zq_server *srv, int prompt_tokens,
                            bool include_usage)
{
    unsigned char bytes[12];
    if (getrandom(bytes, sizeof bytes, 0) != (ssize_t)sizeof bytes)
        return false;
    c->srv = srv;
    int n = snprintf(c->id, sizeof c->id, "chatcmpl-");
    for (int i = 0; i < 12; i++)
        n += snprintf(c->id + n, sizeof c->id - (size_t)n, "%02x", bytes[i]);
    c->created = (long)time(NULL);
    c->prompt_tokens = prompt_tokens;
    c->include_usage = include_usage;
    return true;
}

/* Starts an object with the fields every response and chunk has. */
static cJSON *response_head(const completion *c, const char *object)
{
    cJSON *root = cJSON_CreateObject();
    cJSON_AddStringToObject(root, "id", c->id);
    cJSON_AddStringToObject(root, "object", object);
    cJSON_AddNumberToObject(root, "created", (double)c->created);
    cJSON_AddStringToObject(root, "model", c->srv->model_id);
    return root;
}

static void add_usage(cJSON *root, const completion *c, int completion_tokens)
{
    cJSON *usage = cJSON_AddObjectToObject(root, "usage");
    cJSON_AddNumberToObject(usage, "prompt_tokens", c->prompt_tokens);
    cJSON_AddNumberToObject(usage, "completion_tokens", completion_tokens);
    cJSON_AddNumberToObject(usage, "total_tokens", c->prompt_tokens + completion_tokens);
}

static cJSON *completion_object(const completion *c, const char *text,
                                const zq_job_state *state)
{
    cJSON *root = response_head(c, "chat.completion");
    cJSON *choice = cJSON_CreateObject();
    cJSON_AddNumberToObject(choice, "index", 0);
    cJSON *message = cJSON_AddObjectToObject(choice, "message");
    cJSON_AddStringToObject(message, "role", "assistant");
    cJSON_AddStringToObject(message, "content", text);
    cJSON_AddStringToObject(choice, "finish_reason", zq_finish_reason(state->finish));
    cJSON_AddItemToArray(cJSON_AddArrayToObject(root, "choices"), choice);
    add_usage(root, c, state->n_tokens);
    return root;
}

/* ---- streaming chunks ------------------------------------------------------------------- */

/* A chat.completion.chunk whose one choice has the given delta and finish_reason (NULL is
 * JSON null). Takes ownership of delta. */
static cJSON *chunk(const completion *c, cJSON *delta, const char *finish_reason)
{
    cJSON *root = response_head(c, "chat.completion.chunk");
    cJSON *choice = cJSON_CreateObject();
    cJSON_AddNumberToObject(choice, "index", 0);
    cJSON_AddItemToObject(choice, "delta", delta);
    if (finish_reason)
        cJSON_AddStringToObject(choice, "finish_reason", finish_reason);
    else
        cJSON_AddNullToObject(choice, "finish_reason");
    cJSON_AddItemToArray(cJSON_AddArrayToObject(root, "choices"), choice);
    return root;
}

static void stream_open(void *user, zq_buf *out)
{
    cJSON *delta = cJSON_CreateObject();
    cJSON_AddStringToObject(delta, "role", "assistant");
    cJSON_AddStringToObject(delta, "content", "");
    zq_sse_event(out, chunk(user, delta, NULL));
}

static void stream_delta(void *user, const char *text, size_t len, zq_buf *out)
{
    cJSON *delta = cJSON_CreateObject();
    char *piece = strndup(text, len);
    cJSON_AddStringToObject(delta, "content", piece ? piece : "");
    free(piece);
    zq_sse_event(out, chunk(user, delta, NULL));
}

static void stream_close(void *user, const char *text, const zq_job_state *state, zq_buf *out)
{
    const completion *c = user;
    if (state->finish == ZQ_FINISH_ERROR || state->finish == ZQ_FINISH_CANCELLED) {
        zq_gen_error_event(c->srv, state, out);
    } else {
        zq_gen_cache_store(c->srv, c->key, text, state);
        zq_sse_event(out, chunk(c, cJSON_CreateObject(), zq_finish_reason(state->finish)));
        if (c->include_usage) {
            cJSON *last = response_head(c, "chat.completion.chunk");
            cJSON_AddArrayToObject(last, "choices");
            add_usage(last, c, state->n_tokens);
            zq_sse_event(out, last);
        }
    }
    zq_buf_puts(out, "data: [DONE]\n\n");
}

static const zq_sse_ops completion_stream_ops = {stream_open, stream_delta, stream_close,
                                                 completion_free};

/* ---- the route -------------------------------------------------------------------------- */

static enum MHD_Result respond(zq_http_req *req, zq_job *job, completion *c, bool stream)
{
    if (stream)
        return zq_sse_respond(req, job, &completion_stream_ops, c);

    zq_buf text = {0};
    zq_job_state state;
    zq_gen_wait(req, job, &text, &state);
    const char *reply = text.data ? text.data : "";
    enum MHD_Result ret;
    if (state.finish == ZQ_FINISH_CANCELLED) {
        ret = MHD_NO;
    } else if (state.finish == ZQ_FINISH_ERROR) {
        ret = zq_gen_send_failure(req, &state);
    } else {
        zq_gen_cache_store(c->srv, c->key, reply, &state);
        ret = zq_http_send_json(req, 200, completion_object(c, reply, &state));
    }
    zq_buf_free(&text);
    completion_free(c);
    return ret;
}

/* Checks that the whole conversation and the reply fit the context; a max_tokens the
 * client did not set shrinks to the room left. Sends 400 and returns false otherwise. */
static bool fit_context(zq_server *srv, zq_http_req *req, zq_gen_request *gr, int prompt_tokens)
{
    const int room = srv->n_ctx - prompt_tokens;
    if (!gr->max_new_tokens_given && room >= 1 && gr->max_new_tokens > room)
        gr->max_new_tokens = room;
    if (prompt_tokens + gr->max_new_tokens <= srv->n_ctx)
        return true;
    zq_http_send_error(req, 400, "invalid_request_error",
                       "the context of this model is %d tokens, but the messages are %d tokens "
                       "and max_tokens asks for %d more; shorten the conversation or lower "
                       "max_tokens",
                       srv->n_ctx, prompt_tokens, gr->max_new_tokens);
    return false;
}

static zq_job *start(zq_server *srv, zq_http_req *req, zq_gen_request *gr, completion *c)
{
    const char *const *turns = (const char *const *)gr->turns;
    if (zq_gen_input_refused(srv, gr)) {
        zq_job *job = zq_job_create_done(srv->cfg.filter_reply, 0, ZQ_FINISH_FILTERED);
        if (!job)
            zq_http_send_error(req, 500, "server_error", "out of memory");
        return job;
    }
    if (!fit_context(srv, req, gr, c->prompt_tokens))
        return NULL;
    int32_t *ids = malloc((size_t)srv->n_ctx * sizeof *ids);
    if (!ids) {
        zq_http_send_error(req, 500, "server_error", "out of memory");
        return NULL;
    }
    int n_ids = 0, n_dropped = 0;
    zq_job *job = NULL;
    if (zq_gen_build_prompt(srv, req, turns, gr->n_turns, gr->max_new_tokens, ids, &n_ids,
                            &n_dropped))
        job = zq_gen_start(srv, req, gr, ids, n_ids, c->key);
    free(ids);
    return job;
}

enum MHD_Result zq_route_completions(zq_server *srv, zq_http_req *req)
{
    zq_gen_request gr;
    zq_param_error err;
    if (!zq_parse_openai_body(req->body.data ? req->body.data : "", req->body.len,
                              &srv->cfg.limits, &gr, &err))
        return zq_http_send_error(req, 400, "invalid_request_error", "%s",
                                  err.message[0] ? err.message : "out of memory");
    zq_http_log_prompt(req, gr.turns[gr.n_turns - 1]);

    completion *c = calloc(1, sizeof *c);
    const int prompt_tokens =
        zq_gen_count_prompt(srv, (const char *const *)gr.turns, gr.n_turns);
    enum MHD_Result ret = MHD_YES;
    if (!c || !completion_init(c, srv, prompt_tokens, gr.include_usage)) {
        free(c);
        ret = zq_http_send_error(req, 500, "server_error", "cannot start a completion");
    } else {
        zq_job *job = start(srv, req, &gr, c);
        if (job)
            ret = respond(req, job, c, gr.stream);
        else
            completion_free(c);
        zq_job_release(job);
    }
    zq_gen_request_free(&gr);
    return ret;
}

enum MHD_Result zq_route_models(zq_server *srv, zq_http_req *req)
{
    cJSON *root = cJSON_CreateObject();
    cJSON_AddStringToObject(root, "object", "list");
    cJSON *model = cJSON_CreateObject();
    cJSON_AddStringToObject(model, "id", srv->model_id);
    cJSON_AddStringToObject(model, "object", "model");
    cJSON_AddNumberToObject(model, "created", (double)srv->created);
    cJSON_AddStringToObject(model, "owned_by", "zq");
    cJSON_AddNumberToObject(model, "context_length", srv->n_ctx);
    cJSON_AddItemToArray(cJSON_AddArrayToObject(root, "data"), model);
    return zq_http_send_json(req, 200, root);
}
