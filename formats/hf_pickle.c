/*
 * hf_pickle.c - a restricted pickle machine for the data.pkl of a torch.save archive.
 *
 * It implements the opcodes that torch.save (pickle protocol 2) emits for a state dict, plus
 * FRAME, SHORT_BINUNICODE and MEMOIZE of protocol 4, and recognises these callables by name:
 * collections.OrderedDict, torch._utils._rebuild_tensor_v2, torch._utils._rebuild_parameter
 * and the torch.*Storage types. REDUCE builds their results itself, so nothing that the file
 * names is ever imported or called; any other opcode or global is rejected.
 */
#include "hf_internal.h"

#include "../runtime/internal.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_STACK ((size_t)1 << 20)
#define MAX_MEMO ((size_t)1 << 20)
/* A state dict makes about 15 values per tensor, so this allows some 17,000 tensors while
 * keeping a hostile pickle (one that builds tuples forever) under about 100 MB. */
#define MAX_VALUES ((size_t)1 << 18)

typedef enum {
    V_NONE,
    V_BOOL,
    V_INT,
    V_FLOAT,
    V_STR,
    V_TUPLE,
    V_LIST,
    V_DICT,    /* items: key, value, key, value, ... */
    V_GLOBAL,
    V_STORAGE, /* a persistent id: a storage in the zip archive */
    V_TENSOR,
} value_kind;

typedef enum {
    G_ORDERED_DICT,
    G_REBUILD_TENSOR,
    G_REBUILD_PARAMETER,
    G_STORAGE_TYPE,
} global_kind;

typedef struct value value;
struct value {
    value_kind kind;
    int64_t i;              /* V_BOOL, V_INT */
    char *s;                /* V_STR, NUL-terminated */
    value **items;          /* V_TUPLE, V_LIST, V_DICT */
    size_t n, cap;
    global_kind global;     /* V_GLOBAL */
    zq_torch_tensor tensor; /* V_GLOBAL storage type, V_STORAGE and V_TENSOR fill parts */
};

typedef struct {
    const char *path;
    const uint8_t *start, *p, *end;
    value **stack;
    size_t sp, stack_cap;
    size_t *marks;
    size_t n_marks, marks_cap;
    value **memo;
    size_t memo_cap, memo_len;
    value **all; /* every value made, freed together at the end */
    size_t n_all, all_cap;
    value *result;
} vm;

/* Grows *items (of element size elem) to hold at least need entries. */
static bool grow(void *items, size_t *cap, size_t need, size_t elem)
{
    if (need <= *cap)
        return true;
    size_t n = *cap ? *cap : 16;
    while (n < need)
        n *= 2;
    void *p = realloc(*(void **)items, n * elem);
    if (!p)
        return false;
    *(void **)items = p;
    *cap = n;
    return true;
}

static zq_status fail_at(const vm *m, zq_status status, const char *what)
{
    return zq_fail(status, "%s: byte %td: %s", m->path, m->p - m->start, what);
}

static zq_status no_memory(const vm *m)
{
    if (m->n_all >= MAX_VALUES)
        return fail_at(m, ZQ_ERR_UNSUPPORTED, "the pickle builds too many objects for a state "
                                              "dict");
    return zq_fail(ZQ_ERR_NOMEM, "%s: out of memory", m->path);
}

/* Returns a new value, or NULL when memory or the MAX_VALUES budget runs out. */
static value *new_value(vm *m, value_kind kind)
{
    if (m->n_all >= MAX_VALUES || !grow(&m->all, &m->all_cap, m->n_all + 1, sizeof *m->all))
        return NULL;
    value *v = calloc(1, sizeof *v);
    if (v) {
        v->kind = kind;
        m->all[m->n_all++] = v;
    }
    return v;
}

static zq_status push(vm *m, value *v)
{
    if (!v)
        return no_memory(m);
    if (m->sp >= MAX_STACK)
        return fail_at(m, ZQ_ERR_FORMAT, "pickle stack too deep");
    if (!grow(&m->stack, &m->stack_cap, m->sp + 1, sizeof *m->stack))
        return no_memory(m);
    m->stack[m->sp++] = v;
    return ZQ_OK;
}

static size_t mark_floor(const vm *m)
{
    return m->n_marks ? m->marks[m->n_marks - 1] : 0;
}

static zq_status pop(vm *m, value **out)
{
    if (m->sp <= mark_floor(m))
        return fail_at(m, ZQ_ERR_FORMAT, "pickle stack underflow");
    *out = m->stack[--m->sp];
    return ZQ_OK;
}

static zq_status top(vm *m, value **out)
{
    if (m->sp <= mark_floor(m))
        return fail_at(m, ZQ_ERR_FORMAT, "pickle stack underflow");
    *out = m->stack[m->sp - 1];
    return ZQ_OK;
}

/* Removes the last mark; the values pushed since are stack[*from, sp). */
static zq_status pop_mark(vm *m, size_t *from)
{
    if (m->n_marks == 0)
        return fail_at(m, ZQ_ERR_FORMAT, "pickle MARK missing");
    *from = m->marks[--m->n_marks];
    return ZQ_OK;
}

static zq_status append_item(vm *m, value *container, value *item)
{
    if (!grow(&container->items, &container->cap, container->n + 1, sizeof *container->items))
        return no_memory(m);
    container->items[container->n++] = item;
    return ZQ_OK;
}

static zq_status need(vm *m, size_t n, const uint8_t **bytes)
{
    if ((size_t)(m->end - m->p) < n)
        return fail_at(m, ZQ_ERR_FORMAT, "the pickle is truncated");
    *bytes = m->p;
    m->p += n;
    return ZQ_OK;
}

static uint64_t load_le(const uint8_t *b, size_t n)
{
    uint64_t v = 0;
    for (size_t i = 0; i < n; i++)
        v |= (uint64_t)b[i] << (8 * i);
    return v;
}

/* ---- opcodes that push a new value ------------------------------------------------------ */

static zq_status push_int(vm *m, int64_t i)
{
    value *v = new_value(m, V_INT);
    if (v)
        v->i = i;
    return push(m, v);
}

/* LONG1: a little-endian two's complement integer of n <= 8 bytes. */
static zq_status op_long1(vm *m)
{
    const uint8_t *b = NULL;
    ZQ_TRY(need(m, 1, &b));
    const size_t n = b[0];
    if (n > 8)
        return fail_at(m, ZQ_ERR_UNSUPPORTED, "LONG1 integer wider than 64 bits");
    ZQ_TRY(need(m, n, &b));
    uint64_t u = load_le(b, n);
    if (n > 0 && n < 8 && (b[n - 1] & 0x80))
        u |= ~(uint64_t)0 << (8 * n); /* sign-extend */
    return push_int(m, (int64_t)u);
}

/* BINFLOAT: an 8-byte big-endian double. Floats in a state dict pickle are metadata that ZQ
 * does not use, so the value is skipped. */
static zq_status op_binfloat(vm *m)
{
    const uint8_t *b = NULL;
    ZQ_TRY(need(m, 8, &b));
    return push(m, new_value(m, V_FLOAT));
}

static zq_status op_string(vm *m, size_t len_bytes)
{
    const uint8_t *b = NULL;
    ZQ_TRY(need(m, len_bytes, &b));
    const uint64_t len = load_le(b, len_bytes);
    if (len > (uint64_t)(m->end - m->p))
        return fail_at(m, ZQ_ERR_FORMAT, "the pickle is truncated inside a string");
    ZQ_TRY(need(m, (size_t)len, &b));
    value *v = new_value(m, V_STR);
    if (v && (v->s = malloc((size_t)len + 1))) {
        memcpy(v->s, b, (size_t)len);
        v->s[len] = 0;
        return push(m, v);
    }
    return no_memory(m);
}

/* TUPLE (from the mark) and TUPLE1..3 (the top n values). */
static zq_status op_tuple(vm *m, int n)
{
    size_t from = m->sp >= (size_t)n ? m->sp - (size_t)n : 0;
    if (n < 0)
        ZQ_TRY(pop_mark(m, &from));
    else if (m->sp < mark_floor(m) + (size_t)n)
        return fail_at(m, ZQ_ERR_FORMAT, "pickle stack underflow");
    value *t = new_value(m, V_TUPLE);
    if (!t)
        return no_memory(m);
    for (size_t i = from; i < m->sp; i++)
        ZQ_TRY(append_item(m, t, m->stack[i]));
    m->sp = from;
    return push(m, t);
}

/* ---- memo ------------------------------------------------------------------------------- */

static zq_status memo_put(vm *m, uint64_t index)
{
    if (index >= MAX_MEMO)
        return fail_at(m, ZQ_ERR_UNSUPPORTED, "pickle memo index too large");
    value *v = NULL;
    ZQ_TRY(top(m, &v));
    const size_t old_cap = m->memo_cap;
    if (!grow(&m->memo, &m->memo_cap, (size_t)index + 1, sizeof *m->memo))
        return no_memory(m);
    memset(m->memo + old_cap, 0, (m->memo_cap - old_cap) * sizeof *m->memo);
    if (!m->memo[index])
        m->memo_len++;
    m->memo[index] = v;
    return ZQ_OK;
}

static zq_status memo_get(vm *m, uint64_t index)
{
    if (index >= m->memo_cap || !m->memo[index])
        return fail_at(m, ZQ_ERR_FORMAT, "pickle memo entry missing");
    return push(m, m->memo[index]);
}

static zq_status op_memo(vm *m, uint8_t op)
{
    const uint8_t *b = NULL;
    switch (op) {
    case 'q': ZQ_TRY(need(m, 1, &b)); return memo_put(m, b[0]);             /* BINPUT */
    case 'r': ZQ_TRY(need(m, 4, &b)); return memo_put(m, load_le(b, 4));    /* LONG_BINPUT */
    case 'h': ZQ_TRY(need(m, 1, &b)); return memo_get(m, b[0]);             /* BINGET */
    case 'j': ZQ_TRY(need(m, 4, &b)); return memo_get(m, load_le(b, 4));    /* LONG_BINGET */
    default: return memo_put(m, m->memo_len);                                /* MEMOIZE */
    }
}

/* ---- dicts and lists -------------------------------------------------------------------- */

/* SETITEMS / APPENDS: adds the values above the mark to the container below it. */
static zq_status op_add_many(vm *m, value_kind kind)
{
    size_t from = 0;
    ZQ_TRY(pop_mark(m, &from));
    if (from == 0 || from <= mark_floor(m) || m->stack[from - 1]->kind != kind)
        return fail_at(m, ZQ_ERR_FORMAT, kind == V_DICT ? "SETITEMS without a dict"
                                                        : "APPENDS without a list");
    if (kind == V_DICT && (m->sp - from) % 2 != 0)
        return fail_at(m, ZQ_ERR_FORMAT, "SETITEMS with an odd number of values");
    value *container = m->stack[from - 1];
    for (size_t i = from; i < m->sp; i++)
        ZQ_TRY(append_item(m, container, m->stack[i]));
    m->sp = from;
    return ZQ_OK;
}

/* SETITEM / APPEND: adds the top one or two values to the container below them. */
static zq_status op_add_one(vm *m, value_kind kind)
{
    value *key = NULL, *val = NULL, *container = NULL;
    ZQ_TRY(pop(m, &val));
    if (kind == V_DICT)
        ZQ_TRY(pop(m, &key));
    ZQ_TRY(top(m, &container));
    if (container->kind != kind)
        return fail_at(m, ZQ_ERR_FORMAT, kind == V_DICT ? "SETITEM without a dict"
                                                        : "APPEND without a list");
    if (key)
        ZQ_TRY(append_item(m, container, key));
    return append_item(m, container, val);
}

/* ---- globals, persistent ids, REDUCE and BUILD ------------------------------------------ */

static const struct {
    const char *name;
    zq_hf_dtype dtype;
} storage_types[] = {
    {"FloatStorage", ZQ_HF_F32},  {"HalfStorage", ZQ_HF_F16},   {"BFloat16Storage", ZQ_HF_BF16},
    {"DoubleStorage", ZQ_HF_OTHER}, {"LongStorage", ZQ_HF_OTHER}, {"IntStorage", ZQ_HF_OTHER},
    {"ShortStorage", ZQ_HF_OTHER},  {"CharStorage", ZQ_HF_OTHER}, {"ByteStorage", ZQ_HF_OTHER},
    {"BoolStorage", ZQ_HF_OTHER},
};

/* Reads one "text\n" line of a GLOBAL opcode into buf. */
static zq_status read_line(vm *m, char *buf, size_t cap)
{
    const uint8_t *nl = memchr(m->p, '\n', (size_t)(m->end - m->p));
    if (!nl || (size_t)(nl - m->p) >= cap)
        return fail_at(m, ZQ_ERR_FORMAT, "malformed GLOBAL opcode");
    memcpy(buf, m->p, (size_t)(nl - m->p));
    buf[nl - m->p] = 0;
    m->p = nl + 1;
    return ZQ_OK;
}

static zq_status op_global(vm *m)
{
    char module[64], name[64];
    ZQ_TRY(read_line(m, module, sizeof module));
    ZQ_TRY(read_line(m, name, sizeof name));
    value *v = new_value(m, V_GLOBAL);
    if (!v)
        return no_memory(m);

    if (!strcmp(module, "collections") && !strcmp(name, "OrderedDict")) {
        v->global = G_ORDERED_DICT;
        return push(m, v);
    }
    if (!strcmp(module, "torch._utils") && !strcmp(name, "_rebuild_tensor_v2")) {
        v->global = G_REBUILD_TENSOR;
        return push(m, v);
    }
    if (!strcmp(module, "torch._utils") && !strcmp(name, "_rebuild_parameter")) {
        v->global = G_REBUILD_PARAMETER;
        return push(m, v);
    }
    for (size_t i = 0; i < sizeof storage_types / sizeof storage_types[0]; i++) {
        if (!strcmp(module, "torch") && !strcmp(name, storage_types[i].name)) {
            v->global = G_STORAGE_TYPE;
            snprintf(v->tensor.storage_type, sizeof v->tensor.storage_type, "%s",
                     storage_types[i].name);
            v->tensor.dtype = storage_types[i].dtype;
            return push(m, v);
        }
    }
    return zq_fail(ZQ_ERR_UNSUPPORTED,
                   "%s: byte %td: unsupported global %s.%s; zq reads only state dicts of "
                   "tensors and never runs code from a pickle",
                   m->path, m->p - m->start, module, name);
}

static bool is_storage_key(const char *s)
{
    if (!s[0] || strlen(s) >= sizeof((zq_torch_tensor *)0)->storage_key)
        return false;
    for (; *s; s++)
        if (!isalnum((unsigned char)*s) && *s != '_')
            return false;
    return true;
}

/* BINPERSID: ('storage', storage_type, key, location, numel) names a storage of the zip. */
static zq_status op_persistent_id(vm *m)
{
    value *pid = NULL;
    ZQ_TRY(pop(m, &pid));
    value **it = pid->items;
    if (pid->kind != V_TUPLE || pid->n != 5 || it[0]->kind != V_STR ||
        strcmp(it[0]->s, "storage") != 0 || it[1]->kind != V_GLOBAL ||
        it[1]->global != G_STORAGE_TYPE || it[2]->kind != V_STR || !is_storage_key(it[2]->s) ||
        it[4]->kind != V_INT || it[4]->i < 0)
        return fail_at(m, ZQ_ERR_FORMAT,
                       "persistent id is not ('storage', type, key, location, numel)");
    value *v = new_value(m, V_STORAGE);
    if (!v)
        return no_memory(m);
    v->tensor = it[1]->tensor;
    snprintf(v->tensor.storage_key, sizeof v->tensor.storage_key, "%s", it[2]->s);
    v->tensor.storage_numel = it[4]->i;
    return push(m, v);
}

/* Reads a tuple of ints (a size or a stride) into out. */
static bool int_tuple(const value *t, int64_t *out, int *n)
{
    if (t->kind != V_TUPLE || t->n > ZQ_HF_MAX_DIMS)
        return false;
    for (size_t i = 0; i < t->n; i++) {
        if (t->items[i]->kind != V_INT || t->items[i]->i < 0)
            return false;
        out[i] = t->items[i]->i;
    }
    *n = (int)t->n;
    return true;
}

/* _rebuild_tensor_v2(storage, offset, size, stride, requires_grad, hooks[, metadata]). */
static zq_status rebuild_tensor(vm *m, const value *args)
{
    value **a = args->items;
    int64_t shape[ZQ_HF_MAX_DIMS] = {0}, stride[ZQ_HF_MAX_DIMS] = {0};
    int ndim = 0, n_stride = -1;
    if ((args->n != 6 && args->n != 7) || a[0]->kind != V_STORAGE || a[1]->kind != V_INT ||
        a[1]->i < 0 || !int_tuple(a[2], shape, &ndim) || !int_tuple(a[3], stride, &n_stride) ||
        ndim != n_stride)
        return fail_at(m, ZQ_ERR_UNSUPPORTED,
                       "_rebuild_tensor_v2 arguments are not (storage, offset, size, stride, ...) "
                       "with at most 4 dimensions");
    value *v = new_value(m, V_TENSOR);
    if (!v)
        return no_memory(m);
    v->tensor = a[0]->tensor;
    v->tensor.offset = a[1]->i;
    v->tensor.ndim = ndim;
    memcpy(v->tensor.shape, shape, sizeof shape);
    memcpy(v->tensor.stride, stride, sizeof stride);
    return push(m, v);
}

static zq_status op_reduce(vm *m)
{
    value *args = NULL, *fn = NULL;
    ZQ_TRY(pop(m, &args));
    ZQ_TRY(pop(m, &fn));
    if (fn->kind != V_GLOBAL || args->kind != V_TUPLE)
        return fail_at(m, ZQ_ERR_FORMAT, "REDUCE needs a global and an argument tuple");
    switch (fn->global) {
    case G_ORDERED_DICT:
        if (args->n != 0)
            return fail_at(m, ZQ_ERR_UNSUPPORTED, "OrderedDict called with arguments");
        return push(m, new_value(m, V_DICT));
    case G_REBUILD_TENSOR: return rebuild_tensor(m, args);
    case G_REBUILD_PARAMETER:
        if (args->n != 3 || args->items[0]->kind != V_TENSOR)
            return fail_at(m, ZQ_ERR_UNSUPPORTED, "_rebuild_parameter without a tensor");
        return push(m, args->items[0]);
    case G_STORAGE_TYPE: break;
    }
    return fail_at(m, ZQ_ERR_UNSUPPORTED, "REDUCE of a storage type");
}

/* BUILD sets object state: an OrderedDict's _metadata or a tensor's attributes, which ZQ does
 * not need, so the state is dropped. */
static zq_status op_build(vm *m)
{
    value *state = NULL, *obj = NULL;
    ZQ_TRY(pop(m, &state));
    ZQ_TRY(top(m, &obj));
    if (obj->kind != V_DICT && obj->kind != V_TENSOR)
        return fail_at(m, ZQ_ERR_UNSUPPORTED, "BUILD on an object other than a dict or tensor");
    return ZQ_OK;
}

static zq_status op_mark(vm *m)
{
    if (m->n_marks >= MAX_STACK)
        return fail_at(m, ZQ_ERR_FORMAT, "too many pickle MARKs");
    if (!grow(&m->marks, &m->marks_cap, m->n_marks + 1, sizeof *m->marks))
        return no_memory(m);
    m->marks[m->n_marks++] = m->sp;
    return ZQ_OK;
}

static zq_status op_proto(vm *m)
{
    const uint8_t *b = NULL;
    ZQ_TRY(need(m, 1, &b));
    if (b[0] < 2 || b[0] > 5)
        return fail_at(m, ZQ_ERR_UNSUPPORTED, "pickle protocol outside 2..5");
    return ZQ_OK;
}

static zq_status op_stop(vm *m)
{
    ZQ_TRY(pop(m, &m->result));
    if (m->result->kind != V_DICT)
        return fail_at(m, ZQ_ERR_FORMAT, "the pickle does not hold a dict (a state dict)");
    return ZQ_OK;
}

/* ---- the machine ------------------------------------------------------------------------ */

static zq_status step_push(vm *m, uint8_t op)
{
    const uint8_t *b = NULL;
    switch (op) {
    case 'N': return push(m, new_value(m, V_NONE));
    case 0x88:
    case 0x89: {
        value *v = new_value(m, V_BOOL);
        if (v)
            v->i = op == 0x88;
        return push(m, v);
    }
    case 'J': ZQ_TRY(need(m, 4, &b)); return push_int(m, (int32_t)load_le(b, 4));
    case 'K': ZQ_TRY(need(m, 1, &b)); return push_int(m, b[0]);
    case 'M': ZQ_TRY(need(m, 2, &b)); return push_int(m, (int64_t)load_le(b, 2));
    case 0x8a: return op_long1(m);
    case 'G': return op_binfloat(m);
    case 'X': return op_string(m, 4);
    case 0x8c: return op_string(m, 1);
    case '}': return push(m, new_value(m, V_DICT));
    case ']': return push(m, new_value(m, V_LIST));
    case ')': return push(m, new_value(m, V_TUPLE));
    }
    return zq_fail(ZQ_ERR_UNSUPPORTED, "%s: byte %td: unsupported pickle opcode 0x%02x", m->path,
                   m->p - m->start - 1, op);
}

static zq_status step(vm *m, uint8_t op)
{
    const uint8_t *b = NULL;
    switch (op) {
    case 0x80: return op_proto(m);
    case 0x95: return need(m, 8, &b); /* FRAME: a length hint */
    case '(': return op_mark(m);
    case 't': return op_tuple(m, -1);
    case 0x85: return op_tuple(m, 1);
    case 0x86: return op_tuple(m, 2);
    case 0x87: return op_tuple(m, 3);
    case 'q':
    case 'r':
    case 'h':
    case 'j':
    case 0x94: return op_memo(m, op);
    case 's': return op_add_one(m, V_DICT);
    case 'u': return op_add_many(m, V_DICT);
    case 'a': return op_add_one(m, V_LIST);
    case 'e': return op_add_many(m, V_LIST);
    case 'c': return op_global(m);
    case 'Q': return op_persistent_id(m);
    case 'R': return op_reduce(m);
    case 'b': return op_build(m);
    case '.': return op_stop(m);
    }
    return step_push(m, op);
}

/* Copies the state dict's (name, tensor) pairs into the output list. */
static zq_status collect(vm *m, zq_torch_tensor **out, int32_t *n_out)
{
    const value *dict = m->result;
    const size_t n = dict->n / 2;
    zq_torch_tensor *list = calloc(n ? n : 1, sizeof *list);
    if (!list)
        return no_memory(m);
    for (size_t i = 0; i < n; i++) {
        const value *key = dict->items[2 * i], *val = dict->items[2 * i + 1];
        zq_status st = ZQ_OK;
        if (key->kind != V_STR)
            st = zq_fail(ZQ_ERR_FORMAT, "%s: a state dict key is not a string", m->path);
        else if (val->kind != V_TENSOR)
            st = zq_fail(ZQ_ERR_UNSUPPORTED, "%s: state dict entry '%.80s' is not a tensor",
                         m->path, key->s);
        else if (strlen(key->s) >= sizeof list[i].name)
            st = zq_fail(ZQ_ERR_UNSUPPORTED, "%s: state dict key '%.80s...' is too long",
                         m->path, key->s);
        if (st != ZQ_OK) {
            free(list);
            return st;
        }
        list[i] = val->tensor;
        snprintf(list[i].name, sizeof list[i].name, "%s", key->s);
    }
    *out = list;
    *n_out = (int32_t)n;
    return ZQ_OK;
}

static void vm_free(vm *m)
{
    for (size_t i = 0; i < m->n_all; i++) {
        free(m->all[i]->s);
        free(m->all[i]->items);
        free(m->all[i]);
    }
    free(m->all);
    free(m->stack);
    free(m->marks);
    free(m->memo);
}

zq_status zq_pickle_read_state_dict(const char *path, const uint8_t *data, size_t n,
                                    zq_torch_tensor **out, int32_t *n_out)
{
    *out = NULL;
    *n_out = 0;
    vm m = {.path = path, .start = data, .p = data, .end = data + n};
    zq_status st = ZQ_OK;
    while (st == ZQ_OK && !m.result) {
        if (m.p >= m.end) {
            st = fail_at(&m, ZQ_ERR_FORMAT, "the pickle ends without STOP");
            break;
        }
        st = step(&m, *m.p++);
    }
    if (st == ZQ_OK)
        st = collect(&m, out, n_out);
    vm_free(&m);
    return st;
}
