// L2 bandwidth: every thread re-reads its share of a buffer that fits in L2, `reps` times, with
// 16-byte loads that bypass L1 (ld.global.cg) so each load is served by L2. The loads are
// volatile asm so the compiler cannot hoist them out of the rep loop. Every 32-bit word read is
// added into *checksum (mod 2^32): the host expects launches x reps x sum(buffer).
// No #include: the file compiles under NVRTC as it is.

#define UNROLL 4
#define THREADS 256

__device__ __forceinline__ unsigned int warp_sum(unsigned int v) {
#pragma unroll
    for (int offset = 16; offset > 0; offset >>= 1) v += __shfl_xor_sync(0xffffffffu, v, offset);
    return v;
}

__device__ __forceinline__ uint4 load_l2(const uint4* p) {
    uint4 v;
    asm volatile("ld.global.cg.v4.u32 {%0, %1, %2, %3}, [%4];"
                 : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w)
                 : "l"(p));
    return v;
}

extern "C" __global__ void __launch_bounds__(THREADS)
l2_read(const uint4* __restrict__ src, unsigned int n_vec, unsigned int reps, unsigned int* __restrict__ checksum) {
    const unsigned int stride = gridDim.x * blockDim.x;
    const unsigned int first = blockIdx.x * blockDim.x + threadIdx.x;
    unsigned int acc = 0;
    for (unsigned int r = 0; r < reps; ++r) {
        unsigned int i = first;
        for (; i + (UNROLL - 1) * stride < n_vec; i += UNROLL * stride) {
            uint4 v[UNROLL];
#pragma unroll
            for (int u = 0; u < UNROLL; ++u) v[u] = load_l2(src + i + u * stride);
#pragma unroll
            for (int u = 0; u < UNROLL; ++u) acc += v[u].x + v[u].y + v[u].z + v[u].w;
        }
        for (; i < n_vec; i += stride) {
            const uint4 v = load_l2(src + i);
            acc += v.x + v.y + v.z + v.w;
        }
    }
    acc = warp_sum(acc);
    if ((threadIdx.x & 31) == 0) atomicAdd(checksum, acc);
}
