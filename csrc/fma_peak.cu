// FP32 FMA peak: CHAINS independent FMA chains per thread (enough to cover the FMA latency with
// several warps per scheduler), INNER x CHAINS FMAs per loop trip. The multiplier and addend are
// kernel arguments, so the compiler cannot fold the chains. With a = b = 1 each chain counts up
// exactly: out[t] = sum_k ((t + k) & 255) + CHAINS * INNER * iters, exact in fp32 while below
// 2^24 (the host keeps iters within that), and the host checks every thread's value.
// No #include: the file compiles under NVRTC as it is.

#define THREADS 256
#define CHAINS 8
#define INNER 16

extern "C" __global__ void __launch_bounds__(THREADS)
fma_fp32(float a, float b, unsigned int iters, float* __restrict__ out) {
    const unsigned int tid = blockIdx.x * blockDim.x + threadIdx.x;
    float x[CHAINS];
#pragma unroll
    for (int k = 0; k < CHAINS; ++k) x[k] = (float)((tid + k) & 255u);
    for (unsigned int it = 0; it < iters; ++it) {
#pragma unroll
        for (int j = 0; j < INNER; ++j) {
#pragma unroll
            for (int k = 0; k < CHAINS; ++k) x[k] = fmaf(x[k], a, b);
        }
    }
    float s = 0.0f;
#pragma unroll
    for (int k = 0; k < CHAINS; ++k) s += x[k];
    out[tid] = s;
}
