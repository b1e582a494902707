// Shared-memory bandwidth: each block stages a TILE_VEC x 16-byte tile from global memory, then
// reads the whole tile `reps` times with 16-byte loads (ld.shared.v4). A warp reads 32
// consecutive uint4 (512 bytes), which is free of bank conflicts. The loads are volatile asm so
// the compiler cannot hoist them out of the rep loop. Every 32-bit word read is added into
// *checksum (mod 2^32): the host expects launches x blocks x reps x sum(tile).
// No #include: the file compiles under NVRTC as it is.

#define THREADS 256
#define TILE_VEC 2048 /* 32 KiB of static shared memory per block */
#define PASS (TILE_VEC / THREADS)

__device__ __forceinline__ unsigned int warp_sum(unsigned int v) {
#pragma unroll
    for (int offset = 16; offset > 0; offset >>= 1) v += __shfl_xor_sync(0xffffffffu, v, offset);
    return v;
}

__device__ __forceinline__ uint4 load_shared(unsigned int addr) {
    uint4 v;
    asm volatile("ld.shared.v4.u32 {%0, %1, %2, %3}, [%4];"
                 : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w)
                 : "r"(addr));
    return v;
}

extern "C" __global__ void __launch_bounds__(THREADS)
smem_read(const uint4* __restrict__ src, unsigned int reps, unsigned int* __restrict__ checksum) {
    __shared__ uint4 tile[TILE_VEC];
    for (unsigned int i = threadIdx.x; i < TILE_VEC; i += blockDim.x) tile[i] = src[i];
    __syncthreads();

    const unsigned int base = (unsigned int)__cvta_generic_to_shared(tile);
    unsigned int acc = 0;
    for (unsigned int r = 0; r < reps; ++r) {
        // Start each pass at a different warp-aligned offset; one pass reads every element once.
        const unsigned int start = (r * 32u) & (TILE_VEC - 1);
#pragma unroll
        for (int u = 0; u < PASS; ++u) {
            const unsigned int idx = (start + threadIdx.x + u * THREADS) & (TILE_VEC - 1);
            const uint4 v = load_shared(base + idx * 16u);
            acc += v.x + v.y + v.z + v.w;
        }
    }
    acc = warp_sum(acc);
    if ((threadIdx.x & 31) == 0) atomicAdd(checksum, acc);
}
