/*
 * test_kv.c - the KV cache allocation (runtime/workspace.c): every tensor and every int8 scale
 * array is aligned for its element type, whatever the model's shape, and growing the cache keeps
 * the rows and scales written so far.
 */
#include "../runtime/internal.h"
#include "../runtime/model.h"
#include "support/check.h"

#include <stdint.h>
#include <string.h>

static const zq_kv_type kv_types[] = {ZQ_KV_F32, ZQ_KV_F16, ZQ_KV_Q8};

/* Returns a byte that identifies the pair (tensor t, byte i) of a cache row. */
static unsigned char pattern(int t, size_t i)
{
    return (unsigned char)(t * 31 + i * 7 + 1);
}

/* Fills the first rows positions of every tensor (and its scales) with the pattern. */
static void fill_rows(zq_kv *kv, int rows)
{
    const size_t row = (size_t)kv->n_embd * zq_kv_elem_size(kv->type);
    for (int t = 0; t < 2 * kv->n_layer; t++) {
        unsigned char *p = t % 2 ? kv->v[t / 2] : kv->k[t / 2];
        for (size_t i = 0; i < rows * row; i++)
            p[i] = pattern(t, i);
        if (kv->type != ZQ_KV_Q8)
            continue;
        float *s = t % 2 ? kv->vs[t / 2] : kv->ks[t / 2];
        for (int i = 0; i < rows * kv->n_head; i++)
            s[i] = (float)(t * 1000 + i);
    }
}

/* Returns whether the first rows positions of every tensor still contain the pattern. */
static bool rows_kept(const zq_kv *kv, int rows)
{
    const size_t row = (size_t)kv->n_embd * zq_kv_elem_size(kv->type);
    for (int t = 0; t < 2 * kv->n_layer; t++) {
        const unsigned char *p = t % 2 ? kv->v[t / 2] : kv->k[t / 2];
        for (size_t i = 0; i < rows * row; i++)
            if (p[i] != pattern(t, i))
                return false;
        if (kv->type != ZQ_KV_Q8)
            continue;
        const float *s = t % 2 ? kv->vs[t / 2] : kv->ks[t / 2];
        for (int i = 0; i < rows * kv->n_head; i++)
            if (s[i] != (float)(t * 1000 + i))
                return false;
    }
    return true;
}

/* Checks that every tensor is aligned for its elements and every scale array for floats. */
static void check_alignment(const zq_kv *kv, const char *label)
{
    const uintptr_t elem = zq_kv_elem_size(kv->type);
    for (int l = 0; l < kv->n_layer; l++) {
        CHECK((uintptr_t)kv->k[l] % elem == 0, "%s: keys of layer %d misaligned", label, l);
        CHECK((uintptr_t)kv->v[l] % elem == 0, "%s: values of layer %d misaligned", label, l);
        if (kv->type != ZQ_KV_Q8)
            continue;
        CHECK((uintptr_t)kv->ks[l] % sizeof(float) == 0, "%s: key scales of layer %d misaligned",
              label, l);
        CHECK((uintptr_t)kv->vs[l] % sizeof(float) == 0,
              "%s: value scales of layer %d misaligned", label, l);
    }
}

/* Odd widths, layer counts and context sizes put the int8 scales after an odd number of bytes
 * of rows unless the allocation pads them. */
static void odd_shapes_stay_aligned(void)
{
    static const int shapes[][4] = {{15, 5, 1, 201}, {9, 3, 3, 67}, {64, 4, 2, 64}};
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
        const zq_hparams hp = {.n_embd = shapes[s][0], .n_head = shapes[s][1],
                               .n_layer = shapes[s][2], .n_ctx = shapes[s][3]};
        for (int t = 0; t < 3; t++) {
            zq_kv kv;
            CHECK(zq_kv_init(&kv, &hp, hp.n_ctx, kv_types[t]) == ZQ_OK, "%s", zq_last_error());
            for (int positions = 1; positions <= hp.n_ctx; positions = positions * 2 + 1) {
                CHECK(zq_kv_reserve(&kv, positions) == ZQ_OK, "%s", zq_last_error());
                char label[96];
                snprintf(label, sizeof label, "%s cache, %d wide, %d layers, %d of %d positions",
                         zq_kv_type_name(kv_types[t]), hp.n_embd, hp.n_layer, positions,
                         hp.n_ctx);
                check_alignment(&kv, label);
            }
            CHECK(zq_kv_reserve(&kv, hp.n_ctx) == ZQ_OK, "%s", zq_last_error());
            check_alignment(&kv, zq_kv_type_name(kv_types[t]));
            zq_kv_free(&kv);
        }
    }
}

/* Rows and scales written before a reallocation are still there after it, for each growth
 * step up to the full context. */
static void growth_keeps_rows_and_scales(void)
{
    const zq_hparams hp = {.n_embd = 24, .n_head = 3, .n_layer = 2, .n_ctx = 300};
    for (int t = 0; t < 3; t++) {
        zq_kv kv;
        CHECK(zq_kv_init(&kv, &hp, hp.n_ctx, kv_types[t]) == ZQ_OK, "%s", zq_last_error());
        CHECK(zq_kv_reserve(&kv, 10) == ZQ_OK, "%s", zq_last_error());
        int written = kv.cap;
        fill_rows(&kv, written);
        while (kv.cap < hp.n_ctx) {
            const int before = kv.cap;
            CHECK(zq_kv_reserve(&kv, kv.cap + 1) == ZQ_OK, "%s", zq_last_error());
            CHECK(kv.cap > before, "%s cache: reserve did not grow", zq_kv_type_name(kv_types[t]));
            CHECK(rows_kept(&kv, written), "%s cache: rows lost growing from %d to %d positions",
                  zq_kv_type_name(kv_types[t]), before, kv.cap);
            written = kv.cap;
            fill_rows(&kv, written);
        }
        CHECK_EQ_INT(kv.cap, hp.n_ctx);
        CHECK(zq_kv_reserve(&kv, hp.n_ctx + 1) == ZQ_ERR_CONTEXT_FULL, "%s",
              "reserve past the context accepted");
        zq_kv_free(&kv);
    }
}

int main(void)
{
    ZQ_RUN(odd_shapes_stay_aligned);
    ZQ_RUN(growth_keeps_rows_and_scales);
    ZQ_CHECK_EXIT();
}
