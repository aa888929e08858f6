/*
 * tensor.h - a weight matrix as the kernels see it.
 */
#ifndef ZQ_TENSOR_H
#define ZQ_TENSOR_H

#include "zq.h"

#include <stdint.h>

/* A weight matrix W [rows][cols] used as y = x · W^T: rows are output features, cols are input
 * features (Hugging Face Conv1D weights [in, out] are transposed at quantization time). */
typedef struct {
    zq_type type;
    int32_t rows;
    int32_t cols;
    int32_t group;       /* ZQ_TYPE_Q8: scale group length along cols; 0 = one scale per row */
    const void *data;    /* [rows][cols] float, uint16_t (f16) or int8_t; 64-byte aligned */
    const float *scales; /* ZQ_TYPE_Q8: [rows][cols / group] or [rows]; NULL otherwise */
} zq_weight;

#endif /* ZQ_TENSOR_H */
