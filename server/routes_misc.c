/*
 * routes_misc.c - GET /health and GET /metrics.
 */
#include "http.h"

#include <cjson/cJSON.h>

#include <string.h>

enum MHD_Result zq_route_health(zq_server *srv, zq_http_req *req)
{
    cJSON *root = cJSON_CreateObject();
    int status = 200;
    if (atomic_load(&srv->draining)) {
        cJSON_AddStringToObject(root, "status", "shutting_down");
        status = 503;
    } else if (!atomic_load(&srv->ready)) {
        cJSON_AddStringToObject(root, "status", "loading");
        status = 503;
    } else {
        cJSON_AddStringToObject(root, "status", "ok");
        cJSON_AddStringToObject(root, "model", srv->model_id);
    }
    return zq_http_send_json(req, status, root);
}

enum MHD_Result zq_route_metrics(zq_server *srv, zq_http_req *req)
{
    if (srv->sessions)
        zq_metrics_set_sessions(srv->metrics, zq_sessions_count(srv->sessions));
    char *text = zq_metrics_render(srv->metrics);
    if (!text)
        return zq_http_send_error(req, 500, "server_error", "out of memory");
    return zq_http_send(req, 200, "text/plain; version=0.0.4; charset=utf-8", text,
                        strlen(text));
}
