/* graph.cu — CUDA graphs of the calling thread's stream.
 *
 * A decode step of a small model is hundreds of kernels of a few
 * microseconds each; launched one by one, the launch latency is most of the
 * step. The core captures the step's ops once, with the position-dependent
 * ops reading the position from device memory (the _dev ops), and replays
 * the same executable every token as one launch. A caller whose arguments
 * change captures again, and lmc_graph_end updates the executable in place
 * (cudaGraphExecUpdate, as llama.cpp does).
 *
 * Every error path leaves the stream out of capture mode and clears CUDA's
 * last error, so the caller can run the same ops uncaptured right after. */
#include "common.cuh"

/* ends whatever capture the stream is in (active or invalidated) and drops
 * the graph; the error that ended it, if any, is not sticky: cleared */
static cudaError_t end_and_drop(void) {
    cudaStreamCaptureStatus st = cudaStreamCaptureStatusNone;
    cudaError_t e = cudaStreamIsCapturing(LMC_STREAM, &st);
    if (e == cudaSuccess && st != cudaStreamCaptureStatusNone) {
        cudaGraph_t g = NULL;
        cudaStreamEndCapture(LMC_STREAM, &g);   /* fails for an invalidated capture; it ends it all the same */
        if (g) cudaGraphDestroy(g);
        e = cudaStreamIsCapturing(LMC_STREAM, &st);
        if (e == cudaSuccess && st != cudaStreamCaptureStatusNone) e = cudaErrorStreamCaptureUnmatched;
    }
    cudaGetLastError();
    return e;
}

LMC_API int lmc_graph_begin(void) {
    const char *fn = "lmc_graph_begin";
    cudaStreamCaptureStatus st = cudaStreamCaptureStatusNone;
    LMC_CUDA(fn, cudaStreamIsCapturing(LMC_STREAM, &st));
    if (st != cudaStreamCaptureStatusNone)
        return lmc_fail(LMC_ERR_ARG,
                        "%s: this thread's stream is already capturing (lmc_graph_end or "
                        "lmc_graph_abort first)",
                        fn);
    /* ThreadLocal: a call of this thread that cannot be captured (a blocking
     * copy, an allocation) fails and invalidates the capture, rather than
     * running out of order; other threads' CUDA calls are not affected */
    const cudaError_t e = cudaStreamBeginCapture(LMC_STREAM, cudaStreamCaptureModeThreadLocal);
    if (e != cudaSuccess) {
        end_and_drop();
        return lmc_fail(LMC_ERR_CUDA, "%s: cudaStreamBeginCapture: %s", fn, cudaGetErrorString(e));
    }
    return LMC_OK;
}

/* the executable of g: *exec updated in place when CUDA accepts the update,
 * else replaced by a fresh instantiation (NULL if that fails too) */
static int instantiate_or_update(cudaGraphExec_t *exec, cudaGraph_t g, const char *fn) {
    if (*exec) {
#if CUDART_VERSION >= 12000
        cudaGraphExecUpdateResultInfo info;
        const cudaError_t e = cudaGraphExecUpdate(*exec, g, &info);
#else
        cudaGraphNode_t bad = NULL;
        cudaGraphExecUpdateResult info;
        const cudaError_t e = cudaGraphExecUpdate(*exec, g, &bad, &info);
#endif
        if (e == cudaSuccess) return LMC_OK;
        /* refused (another topology, a kernel that changed): not an error
         * for the caller, but CUDA's last error must not leak into its next
         * launch check */
        cudaGetLastError();
        cudaGraphExecDestroy(*exec);
        *exec = NULL;
    }
    cudaGraphExec_t x = NULL;
    const cudaError_t e = cudaGraphInstantiateWithFlags(&x, g, 0);
    if (e != cudaSuccess) {
        cudaGetLastError();
        return lmc_fail(e == cudaErrorMemoryAllocation ? LMC_ERR_NOMEM : LMC_ERR_CUDA,
                        "%s: cudaGraphInstantiateWithFlags: %s", fn, cudaGetErrorString(e));
    }
    *exec = x;
    return LMC_OK;
}

LMC_API int lmc_graph_end(void **graph_exec) {
    const char *fn = "lmc_graph_end";
    if (!graph_exec) {
        end_and_drop();   /* the capture ends on every path */
        return lmc_fail(LMC_ERR_ARG, "%s: NULL graph_exec (the capture was dropped)", fn);
    }
    cudaStreamCaptureStatus st = cudaStreamCaptureStatusNone;
    LMC_CUDA(fn, cudaStreamIsCapturing(LMC_STREAM, &st));
    if (st == cudaStreamCaptureStatusNone)
        return lmc_fail(LMC_ERR_ARG, "%s: this thread's stream is not capturing (lmc_graph_begin)", fn);
    cudaGraph_t g = NULL;
    const cudaError_t e = cudaStreamEndCapture(LMC_STREAM, &g);
    if (e != cudaSuccess || !g) {
        /* an op in the capture was not capturable (it invalidated it) */
        if (g) cudaGraphDestroy(g);
        end_and_drop();
        return lmc_fail(LMC_ERR_CUDA, "%s: the capture failed: cudaStreamEndCapture: %s", fn,
                        cudaGetErrorString(e != cudaSuccess ? e : cudaErrorStreamCaptureInvalidated));
    }
    const int rc = instantiate_or_update((cudaGraphExec_t *)graph_exec, g, fn);
    cudaGraphDestroy(g);   /* the executable does not need it */
    return rc;
}

LMC_API int lmc_graph_launch(void *graph_exec) {
    const char *fn = "lmc_graph_launch";
    if (!graph_exec) return lmc_fail(LMC_ERR_ARG, "%s: NULL graph_exec", fn);
    LMC_CUDA(fn, cudaGraphLaunch((cudaGraphExec_t)graph_exec, LMC_STREAM));
    return LMC_OK;
}

LMC_API int lmc_graph_abort(void) {
    const cudaError_t e = end_and_drop();
    if (e != cudaSuccess)
        return lmc_fail(LMC_ERR_CUDA, "lmc_graph_abort: the stream is still capturing: %s", cudaGetErrorString(e));
    return LMC_OK;
}

LMC_API int lmc_graph_free(void *graph_exec) {
    if (!graph_exec) return LMC_OK;
    LMC_CUDA("lmc_graph_free", cudaGraphExecDestroy((cudaGraphExec_t)graph_exec));
    return LMC_OK;
}
