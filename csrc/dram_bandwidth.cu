// DRAM bandwidth: read, write and copy with 16-byte accesses (one uint4 per thread per access),
// grid-stride loops, buffers many times the L2 (the host sizes them), UNROLL loads in flight per
// thread before the first use. Each kernel leaves a result the host checks:
//   dram_read  adds every 32-bit word into *checksum (mod 2^32): launches x sum(buffer);
//   dram_write writes word j = j ^ seed;
//   dram_copy  makes dst equal to src.
// No #include: the file compiles under NVRTC as it is.

#define UNROLL 4
#define THREADS 256

__device__ __forceinline__ unsigned int warp_sum(unsigned int v) {
#pragma unroll
    for (int offset = 16; offset > 0; offset >>= 1) v += __shfl_xor_sync(0xffffffffu, v, offset);
    return v;
}

extern "C" __global__ void __launch_bounds__(THREADS)
dram_read(const uint4* __restrict__ src, unsigned int n_vec, unsigned int* __restrict__ checksum) {
    const unsigned int stride = gridDim.x * blockDim.x;
    unsigned int i = blockIdx.x * blockDim.x + threadIdx.x;
    unsigned int acc = 0;
    for (; i + (UNROLL - 1) * stride < n_vec; i += UNROLL * stride) {
        uint4 v[UNROLL];
#pragma unroll
        for (int u = 0; u < UNROLL; ++u) v[u] = src[i + u * stride];
#pragma unroll
        for (int u = 0; u < UNROLL; ++u) acc += v[u].x + v[u].y + v[u].z + v[u].w;
    }
    for (; i < n_vec; i += stride) {
        const uint4 v = src[i];
        acc += v.x + v.y + v.z + v.w;
    }
    acc = warp_sum(acc);
    if ((threadIdx.x & 31) == 0) atomicAdd(checksum, acc);
}

__device__ __forceinline__ uint4 pattern(unsigned int i, unsigned int seed) {
    const unsigned int w = 4u * i;
    return make_uint4(w ^ seed, (w + 1u) ^ seed, (w + 2u) ^ seed, (w + 3u) ^ seed);
}

extern "C" __global__ void __launch_bounds__(THREADS)
dram_write(uint4* __restrict__ dst, unsigned int n_vec, unsigned int seed) {
    const unsigned int stride = gridDim.x * blockDim.x;
    unsigned int i = blockIdx.x * blockDim.x + threadIdx.x;
    for (; i + (UNROLL - 1) * stride < n_vec; i += UNROLL * stride) {
#pragma unroll
        for (int u = 0; u < UNROLL; ++u) dst[i + u * stride] = pattern(i + u * stride, seed);
    }
    for (; i < n_vec; i += stride) dst[i] = pattern(i, seed);
}

extern "C" __global__ void __launch_bounds__(THREADS)
dram_copy(const uint4* __restrict__ src, uint4* __restrict__ dst, unsigned int n_vec) {
    const unsigned int stride = gridDim.x * blockDim.x;
    unsigned int i = blockIdx.x * blockDim.x + threadIdx.x;
    for (; i + (UNROLL - 1) * stride < n_vec; i += UNROLL * stride) {
        uint4 v[UNROLL];
#pragma unroll
        for (int u = 0; u < UNROLL; ++u) v[u] = src[i + u * stride];
#pragma unroll
        for (int u = 0; u < UNROLL; ++u) dst[i + u * stride] = v[u];
    }
    for (; i < n_vec; i += stride) dst[i] = src[i];
}
