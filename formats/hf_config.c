/*
 * hf_config.c - reads the hyper-parameters of a GPT-2 model from config.json, as
 * transformers' GPT2Config writes it.
 */
#include "hf_internal.h"

#include "../runtime/internal.h"

#include <math.h>
#include <string.h>

/* Reads an integer key in [1, max]. A missing key gives fallback when fallback > 0. */
static zq_status get_int(const char *path, const cJSON *root, const char *key, int32_t max,
                         int32_t fallback, int32_t *out)
{
    const cJSON *item = cJSON_GetObjectItemCaseSensitive(root, key);
    if (!item && fallback > 0) {
        *out = fallback;
        return ZQ_OK;
    }
    if (!item)
        return zq_fail(ZQ_ERR_FORMAT, "%s: \"%s\" is missing", path, key);
    const double v = cJSON_IsNumber(item) ? item->valuedouble : NAN;
    if (!(v >= 1 && v <= max && v == floor(v)))
        return zq_fail(ZQ_ERR_FORMAT, "%s: \"%s\" must be an integer from 1 to %d", path, key,
                       max);
    *out = (int32_t)v;
    return ZQ_OK;
}

static zq_status check_model_type(const char *path, const cJSON *root)
{
    const cJSON *type = cJSON_GetObjectItemCaseSensitive(root, "model_type");
    if (!cJSON_IsString(type))
        return zq_fail(ZQ_ERR_FORMAT, "%s: \"model_type\" is missing; expected \"gpt2\"", path);
    if (strcmp(type->valuestring, "gpt2") != 0)
        return zq_fail(ZQ_ERR_UNSUPPORTED,
                       "%s: model_type \"%.40s\" is not supported; zq reads GPT-2 models "
                       "(model_type \"gpt2\")",
                       path, type->valuestring);
    return ZQ_OK;
}

static zq_status read_activation(const char *path, const cJSON *root, zq_activation *out)
{
    const cJSON *item = cJSON_GetObjectItemCaseSensitive(root, "activation_function");
    const char *name = "gelu_new"; /* GPT2Config's default */
    if (item && !cJSON_IsString(item))
        return zq_fail(ZQ_ERR_FORMAT, "%s: \"activation_function\" must be a string", path);
    if (item)
        name = item->valuestring;

    if (!strcmp(name, "gelu_new") || !strcmp(name, "gelu_pytorch_tanh") ||
        !strcmp(name, "gelu_fast"))
        *out = ZQ_ACT_GELU_TANH;
    else if (!strcmp(name, "gelu"))
        *out = ZQ_ACT_GELU_ERF;
    else if (!strcmp(name, "relu"))
        *out = ZQ_ACT_RELU;
    else
        return zq_fail(ZQ_ERR_UNSUPPORTED,
                       "%s: activation_function \"%.40s\" is not supported; zq runs gelu_new, "
                       "gelu_pytorch_tanh, gelu_fast, gelu and relu",
                       path, name);
    return ZQ_OK;
}

static zq_status read_epsilon(const char *path, const cJSON *root, float *out)
{
    const cJSON *item = cJSON_GetObjectItemCaseSensitive(root, "layer_norm_epsilon");
    *out = 1e-5f; /* GPT2Config's default */
    if (!item)
        return ZQ_OK;
    if (!cJSON_IsNumber(item) || !(item->valuedouble > 0 && item->valuedouble <= 1))
        return zq_fail(ZQ_ERR_FORMAT, "%s: \"layer_norm_epsilon\" must be a number in (0, 1]",
                       path);
    *out = (float)item->valuedouble;
    return ZQ_OK;
}

/* Rejects options that change the attention arithmetic, which ZQ does not implement. */
static zq_status check_options(const char *path, const cJSON *root)
{
    static const struct {
        const char *key;
        bool supported;
    } flags[] = {
        {"scale_attn_weights", true},
        {"scale_attn_by_inverse_layer_idx", false},
        {"add_cross_attention", false},
    };
    for (size_t i = 0; i < sizeof flags / sizeof flags[0]; i++) {
        const cJSON *item = cJSON_GetObjectItemCaseSensitive(root, flags[i].key);
        if (cJSON_IsBool(item) && (bool)cJSON_IsTrue(item) != flags[i].supported)
            return zq_fail(ZQ_ERR_UNSUPPORTED, "%s: \"%s\": %s is not supported", path,
                           flags[i].key, flags[i].supported ? "false" : "true");
    }
    return ZQ_OK;
}

static zq_status read_sizes(const char *path, const cJSON *root, zq_hparams *hp)
{
    ZQ_TRY(get_int(path, root, "vocab_size", 1 << 24, 0, &hp->n_vocab));
    ZQ_TRY(get_int(path, root, "n_embd", 1 << 16, 0, &hp->n_embd));
    ZQ_TRY(get_int(path, root, "n_layer", 1024, 0, &hp->n_layer));
    ZQ_TRY(get_int(path, root, "n_head", 1 << 16, 0, &hp->n_head));
    /* Older configs name the context n_ctx; GPT2Config writes n_positions. */
    const char *ctx_key =
        cJSON_GetObjectItemCaseSensitive(root, "n_positions") ? "n_positions" : "n_ctx";
    ZQ_TRY(get_int(path, root, ctx_key, 1 << 20, 0, &hp->n_ctx));

    const cJSON *inner = cJSON_GetObjectItemCaseSensitive(root, "n_inner");
    const int32_t default_inner = 4 * hp->n_embd; /* GPT2Config's rule for null or missing */
    if (cJSON_IsNull(inner))
        hp->n_inner = default_inner;
    else
        ZQ_TRY(get_int(path, root, "n_inner", 1 << 20, default_inner, &hp->n_inner));

    if (hp->n_embd % hp->n_head != 0)
        return zq_fail(ZQ_ERR_FORMAT, "%s: n_embd %d is not a multiple of n_head %d", path,
                       hp->n_embd, hp->n_head);
    return ZQ_OK;
}

zq_status zq_hf_read_config(const char *path, zq_hparams *hp)
{
    if (!path || !hp)
        return zq_fail(ZQ_ERR_INVALID_ARG, "zq_hf_read_config: a path and hparams are required");
    memset(hp, 0, sizeof *hp);
    cJSON *root;
    ZQ_TRY(zq_hf_read_json(path, &root));
    zq_status st = cJSON_IsObject(root)
                       ? ZQ_OK
                       : zq_fail(ZQ_ERR_FORMAT, "%s: expected a JSON object", path);
    if (st == ZQ_OK)
        st = check_model_type(path, root);
    if (st == ZQ_OK)
        st = read_sizes(path, root, hp);
    if (st == ZQ_OK)
        st = read_epsilon(path, root, &hp->ln_eps);
    if (st == ZQ_OK)
        st = read_activation(path, root, &hp->activation);
    if (st == ZQ_OK)
        st = check_options(path, root);
    cJSON_Delete(root);
    return st;
}
