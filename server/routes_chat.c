/*
 * routes_chat.c - POST /chat, POST /chat/reset and GET /chat/history: the session API.
 *
 * A /chat request continues the session named by session_id, or a new session when it is
 * missing. The stored exchanges plus the new prompt form the chat prompt, and the oldest
 * exchanges are dropped when it would overflow the context. A successful reply is appended
 * to the session. Rejected, failed and cancelled turns are not stored.
 */
#include "gen.h"

#include "log.h"

#include <cjson/cJSON.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* What a /chat reply needs once its job has ended, for both the plain and the streamed
 * response. */
typedef struct {
    zq_server *srv;
    char session_id[ZQ_SESSION_ID_MAX + 1];
    char *prompt; /* the user turn to store; NULL for a refusal, which is not stored */
    int n_drop;   /* exchanges that did not fit the context, forgotten on success */
    char key[ZQ_CACHE_KEY_LEN + 1];
} chat_turn;

static void chat_turn_free(void *user)
{
    chat_turn *t = user;
    if (!t)
        return;
    free(t->prompt);
    free(t);
}

static const char *lookup_query(void *user, const char *name, size_t *len)
{
    const char *value = NULL;
    if (MHD_lookup_connection_value_n(user, MHD_GET_ARGUMENT_KIND, name, strlen(name), &value,
                                      len) != MHD_YES)
        return NULL;
    return value;
}

/* Stores the exchange and caches the reply when the job ended normally. */
static void finish_turn(const chat_turn *t, const char *text, const zq_job_state *state)
{
    if (state->finish != ZQ_FINISH_STOP && state->finish != ZQ_FINISH_LENGTH)
        return;
    zq_gen_cache_store(t->srv, t->key, text, state);
    if (t->prompt && !zq_sessions_append(t->srv->sessions, t->session_id, t->n_drop, t->prompt,
                                         text))
        ZQ_SRV_LOG_ERROR("session %s: storing the exchange failed; the reply was sent but the "
                         "session did not advance",
                         t->session_id);
}

static cJSON *reply_object(const chat_turn *t, const char *text, const zq_job_state *state)
{
    cJSON *root = cJSON_CreateObject();
    cJSON_AddStringToObject(root, "reply", text);
    cJSON_AddStringToObject(root, "session_id", t->session_id);
    cJSON_AddNumberToObject(root, "tokens", state->n_tokens);
    cJSON_AddStringToObject(root, "finish_reason", zq_finish_reason(state->finish));
    return root;
}

/* ---- streaming: data: {"delta": ...} events, then the reply object, then [DONE] ---------- */

static void stream_open(void *user, zq_buf *out)
{
}

static void stream_delta(void *user, const char *text, size_t len, zq_buf *out)
{
    cJSON *event = cJSON_CreateObject();
    char *piece = strndup(text, len);
    cJSON_AddStringToObject(event, "delta", piece ? piece : "");
    free(piece);
    zq_sse_event(out, event);
}

static void stream_close(void *user, const char *text, const zq_job_state *state, zq_buf *out)
{
    const chat_turn *t = user;
    if (state->finish == ZQ_FINISH_ERROR || state->finish == ZQ_FINISH_CANCELLED) {
        zq_gen_error_event(t->srv, state, out);
    } else {
        finish_turn(t, text, state);
        zq_sse_event(out, reply_object(t, text, state));
    }
    zq_buf_puts(out, "data: [DONE]\n\n");
}

static const zq_sse_ops chat_stream_ops = {stream_open, stream_delta, stream_close,
                                           chat_turn_free};

/* ---- /chat ------------------------------------------------------------------------------ */

/* Sends the job's reply, streamed or after waiting for its end. Takes ownership of t. */
static enum MHD_Result respond(zq_http_req *req, zq_job *job, chat_turn *t, bool stream)
{
    if (stream)
        return zq_sse_respond(req, job, &chat_stream_ops, t);

    zq_buf text = {0};
    zq_job_state state;
    zq_gen_wait(req, job, &text, &state);
    const char *reply = text.data ? text.data : "";
    enum MHD_Result ret;
    if (state.finish == ZQ_FINISH_CANCELLED) {
        ret = MHD_NO; /* the client has gone: nothing to send */
    } else if (state.finish == ZQ_FINISH_ERROR) {
        ret = zq_gen_send_failure(req, &state);
    } else {
        finish_turn(t, reply, &state);
        ret = zq_http_send_json(req, 200, reply_object(t, reply, &state));
    }
    zq_buf_free(&text);
    chat_turn_free(t);
    return ret;
}

/* Builds the prompt from the session and the new turn, and starts its job. */
static zq_job *start_turn(zq_server *srv, zq_http_req *req, const zq_gen_request *gr,
                          chat_turn *t)
{
    zq_history history;
    if (!zq_sessions_load(srv->sessions, t->session_id, &history)) {
        zq_http_send_error(req, 503, "unavailable_error", "the session store is unreachable");
        return NULL;
    }
    const char **turns = calloc((size_t)history.n_turns + 1, sizeof *turns);
    int32_t *ids = malloc((size_t)srv->n_ctx * sizeof *ids);
    zq_job *job = NULL;
    int n_ids = 0;
    if (!turns || !ids) {
        zq_http_send_error(req, 500, "server_error", "out of memory");
    } else {
        for (int i = 0; i < history.n_turns; i++)
            turns[i] = history.turns[i];
        turns[history.n_turns] = gr->turns[0];
        /* As zq_chat_reply does: reserve the reply length unless it would take the whole
         * context, then half of it. In a context of ZQ_SERVE_MIN_CTX, half would leave no
         * room for [CLS], one token and [SEP], so the reserve never takes more than the
         * context minus those three. */
        int reserve = gr->max_new_tokens < srv->n_ctx - 2 ? gr->max_new_tokens : srv->n_ctx / 2;
        if (reserve > srv->n_ctx - 3)
            reserve = srv->n_ctx - 3;
        if (zq_gen_build_prompt(srv, req, turns, history.n_turns + 1, reserve, ids, &n_ids,
                                &t->n_drop))
            job = zq_gen_start(srv, req, gr, ids, n_ids, t->key);
    }
    free(turns);
    free(ids);
    zq_history_free(&history);
    return job;
}

static enum MHD_Result send_reset(zq_http_req *req, const char *session_id)
{
    cJSON *root = cJSON_CreateObject();
    cJSON_AddStringToObject(root, "session_id", session_id);
    cJSON_AddBoolToObject(root, "reset", true);
    return zq_http_send_json(req, 200, root);
}

static enum MHD_Result chat(zq_server *srv, zq_http_req *req, const zq_gen_request *gr)
{
    chat_turn *t = calloc(1, sizeof *t);
    if (!t)
        return zq_http_send_error(req, 500, "server_error", "out of memory");
    t->srv = srv;
    if (gr->session_id)
        snprintf(t->session_id, sizeof t->session_id, "%s", gr->session_id);
    else if (!zq_session_id_generate(t->session_id)) {
        chat_turn_free(t);
        return zq_http_send_error(req, 500, "server_error", "cannot draw a session id");
    }

    if (gr->reset && !zq_sessions_reset(srv->sessions, t->session_id)) {
        chat_turn_free(t);
        return zq_http_send_error(req, 503, "unavailable_error",
                                  "the session store is unreachable");
    }
    if (gr->n_turns == 0) {
        enum MHD_Result ret = send_reset(req, t->session_id);
        chat_turn_free(t);
        return ret;
    }
    zq_http_log_prompt(req, gr->turns[0]);

    zq_job *job;
    if (zq_gen_input_refused(srv, gr)) {
        job = zq_job_create_done(srv->cfg.filter_reply, 0, ZQ_FINISH_FILTERED);
        if (!job)
            zq_http_send_error(req, 500, "server_error", "out of memory");
    } else {
        t->prompt = strdup(gr->turns[0]);
        job = t->prompt ? start_turn(srv, req, gr, t) : NULL;
        if (!t->prompt)
            zq_http_send_error(req, 500, "server_error", "out of memory");
    }
    if (!job) {
        chat_turn_free(t);
        return MHD_YES; /* the error response is queued */
    }
    enum MHD_Result ret = respond(req, job, t, gr->stream);
    zq_job_release(job);
    return ret;
}

enum MHD_Result zq_route_chat(zq_server *srv, zq_http_req *req)
{
    zq_gen_request gr;
    zq_param_error err;
    bool ok = req->body.len > 0
                  ? zq_parse_chat_body(req->body.data, req->body.len, &srv->cfg.limits, &gr, &err)
                  : zq_parse_chat_query(lookup_query, req->conn, &srv->cfg.limits, &gr, &err);
    if (!ok)
        return zq_http_send_error(req, 400, "invalid_request_error", "%s",
                                  err.message[0] ? err.message : "out of memory");
    enum MHD_Result ret = chat(srv, req, &gr);
    zq_gen_request_free(&gr);
    return ret;
}

/* ---- /chat/reset and /chat/history ------------------------------------------------------ */

/* Reads session_id from the query string or a JSON body; sends 400 and returns NULL when
 * it is missing or invalid. Returns a malloc'd copy. */
static char *session_arg(zq_http_req *req)
{
    size_t len = 0;
    const char *query = lookup_query(req->conn, "session_id", &len);
    char *id = NULL;
    if (query) {
        /* A decoded %00 would cut the id short; the result is invalid either way. */
        id = strdup(strlen(query) == len ? query : "");
    } else if (req->body.len > 0) {
        zq_param_error err;
        if (!zq_parse_session_body(req->body.data, req->body.len, &id, &err)) {
            zq_http_send_error(req, 400, "invalid_request_error", "%s", err.message);
            return NULL;
        }
    }
    if (!id || !zq_session_id_valid(id)) {
        free(id);
        zq_http_send_error(req, 400, "invalid_request_error",
                           "session_id is missing or invalid: 1-%d characters of A-Z, a-z, "
                           "0-9, '-' and '_'",
                           ZQ_SESSION_ID_MAX);
        return NULL;
    }
    return id;
}

enum MHD_Result zq_route_chat_reset(zq_server *srv, zq_http_req *req)
{
    char *id = session_arg(req);
    enum MHD_Result ret = MHD_YES;
    if (id && !zq_sessions_reset(srv->sessions, id))
        ret = zq_http_send_error(req, 503, "unavailable_error", "the session store is unreachable");
    else if (id)
        ret = send_reset(req, id);
    free(id);
    return ret;
}

enum MHD_Result zq_route_chat_history(zq_server *srv, zq_http_req *req)
{
    char *id = session_arg(req);
    zq_history history = {0};
    enum MHD_Result ret = MHD_YES;
    if (id && !zq_sessions_load(srv->sessions, id, &history)) {
        ret = zq_http_send_error(req, 503, "unavailable_error", "the session store is unreachable");
    } else if (id) {
        char *json = zq_history_to_json(&history);
        cJSON *root = json ? cJSON_Parse(json) : NULL;
        if (root)
            cJSON_AddStringToObject(root, "session_id", id);
        free(json);
        ret = zq_http_send_json(req, 200, root);
    }
    zq_history_free(&history);
    free(id);
    return ret;
}
