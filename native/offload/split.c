/* split.c — offload (--gpu-layers): which layers run where, on which device.
 *
 * llama.cpp's convention: with gpu_layers = N the output head counts as one
 * layer, so the device (backend.h) runs the head and the last N - 1 blocks,
 * [n_layer - (N - 1), n_layer); the host keeps the token embedding and the
 * blocks below. N >= n_layer + 1 offloads every block. */
#include "error.h"
#include "model/model.h"
#include "offload/backend.h"

int lm_device_available(int device) {
    switch (device) {
    case LM_DEVICE_CPU_STANDIN: return 1;
    case LM_DEVICE_CUDA: return lm_cuda_usable();
    default: lm_set_error(LM_ERR_ARG, "unknown offload device %d", device); return 0;
    }
}

lm_context *lm_context_create_params(lm_model *m, const lm_context_params *params) {
    if (!m || !params) {
        lm_set_error(LM_ERR_ARG, "lm_context_create: model or parameters NULL");
        return NULL;
    }
    lm_context_params p = *params;
    if (p.gpu_layers < 0) {
        lm_set_error(LM_ERR_ARG, "gpu_layers must be >= 0, got %d", p.gpu_layers);
        return NULL;
    }
    const int32_t L = m->p.n_layer;
    if (p.gpu_layers == 0) return lm_context_create_range(m, &p, 0, L);
    const lm_backend *backend;
    switch (p.device) {
    case LM_DEVICE_CPU_STANDIN: backend = &lm_backend_cpu_standin; break;
    case LM_DEVICE_CUDA: backend = &lm_backend_cuda; break;
    default: lm_set_error(LM_ERR_ARG, "unknown offload device %d", p.device); return NULL;
    }
    const int32_t blocks = p.gpu_layers - 1 < L ? p.gpu_layers - 1 : L;   /* the head is the first layer offloaded */
    lm_context *c = lm_context_create_range(m, &p, 0, L - blocks);
    if (!c) return NULL;
    /* p now has its n_ctx_seq: the device's pool is the same as this one */
    c->dev = backend->create(m, L - blocks, &p);
    if (!c->dev) {
        lm_context_free(c);
        return NULL;
    }
    c->backend = backend;
    return c;
}

lm_context *lm_context_create_offload(lm_model *m, int32_t n_ctx, int32_t n_batch, int kv_type, int n_threads,
                                      int32_t gpu_layers, int device) {
    const lm_context_params p = { .n_ctx = n_ctx,
                                  .n_batch = n_batch,
                                  .n_seq_max = 1,
                                  .kv_type = kv_type,
                                  .n_threads = n_threads,
                                  .gpu_layers = gpu_layers,
                                  .device = device };
    return lm_context_create_params(m, &p);
}

int lm_context_offload_info(const lm_context *c, int32_t *host_layers, int *head_on_device, size_t *device_weight_bytes,
                            size_t *device_kv_bytes) {
    if (!c || !host_layers || !head_on_device || !device_weight_bytes || !device_kv_bytes)
        return lm_set_error(LM_ERR_ARG, "lm_context_offload_info: NULL argument");
    *host_layers = c->kv_il1;
    *head_on_device = c->dev != NULL;
    *device_weight_bytes = *device_kv_bytes = 0;
    if (c->dev) c->backend->usage(c->dev, device_weight_bytes, device_kv_bytes);
    return LM_OK;
}
