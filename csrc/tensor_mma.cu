// Tensor-core peak through warp-level mma.sync.aligned.m16n8k16 (FP16 or BF16 inputs, FP32
// accumulate): each warp loads one 16x16 A tile (row-major) and one 16x8 B tile (stored as
// B^T, 8x16 row-major) into the standard fragments, then issues ACC independent MMAs per loop
// trip into ACC accumulators. Each warp writes the sum of its accumulators as a 16x8 row-major
// tile: ACC * iters * (A @ B), exact in fp32 for small-integer inputs (the host keeps it below
// 2^24) and checked element by element by the host. On Hopper this is the HMMA path, not the
// faster wgmma/HGMMA path cuBLAS takes: the host reports cuBLAS beside it.
// No #include: the file compiles under NVRTC as it is.

#define THREADS 256
#define ACC 8

template <bool BF16>
__device__ __forceinline__ void mma_16816(float (&d)[4], const unsigned int (&a)[4], const unsigned int (&b)[2]) {
    if (BF16) {
        asm("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 "
            "{%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, {%0, %1, %2, %3};"
            : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
            : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
    } else {
        asm("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 "
            "{%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, {%0, %1, %2, %3};"
            : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
            : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
    }
}

// a_words: A as 16 rows x 8 words (two 16-bit elements per word, lower column in the low half);
// bt_words: B^T as 8 rows x 8 words, likewise. out: one 16x8 fp32 tile per warp.
template <bool BF16>
__device__ __forceinline__ void mma_peak(const unsigned int* __restrict__ a_words,
                                         const unsigned int* __restrict__ bt_words,
                                         unsigned int iters, float* __restrict__ out) {
    const unsigned int lane = threadIdx.x & 31u;
    const unsigned int group = lane >> 2;  // row of A and D, column of B
    const unsigned int tig = lane & 3u;    // pair of columns of A and D, pair of rows of B
    const unsigned int a[4] = {a_words[group * 8 + tig], a_words[(group + 8) * 8 + tig],
                               a_words[group * 8 + tig + 4], a_words[(group + 8) * 8 + tig + 4]};
    const unsigned int b[2] = {bt_words[group * 8 + tig], bt_words[group * 8 + tig + 4]};

    float d[ACC][4];
#pragma unroll
    for (int k = 0; k < ACC; ++k) d[k][0] = d[k][1] = d[k][2] = d[k][3] = 0.0f;
    for (unsigned int it = 0; it < iters; ++it) {
#pragma unroll
        for (int k = 0; k < ACC; ++k) mma_16816<BF16>(d[k], a, b);
    }
    float s[4] = {0.0f, 0.0f, 0.0f, 0.0f};
#pragma unroll
    for (int k = 0; k < ACC; ++k) {
#pragma unroll
        for (int e = 0; e < 4; ++e) s[e] += d[k][e];
    }
    const unsigned int warp = (blockIdx.x * blockDim.x + threadIdx.x) >> 5;
    float* tile = out + warp * 128u;
    tile[group * 8 + 2 * tig] = s[0];
    tile[group * 8 + 2 * tig + 1] = s[1];
    tile[(group + 8) * 8 + 2 * tig] = s[2];
    tile[(group + 8) * 8 + 2 * tig + 1] = s[3];
}

extern "C" __global__ void __launch_bounds__(THREADS)
mma_bf16(const unsigned int* __restrict__ a_words, const unsigned int* __restrict__ bt_words,
         unsigned int iters, float* __restrict__ out) {
    mma_peak<true>(a_words, bt_words, iters, out);
}

extern "C" __global__ void __launch_bounds__(THREADS)
mma_fp16(const unsigned int* __restrict__ a_words, const unsigned int* __restrict__ bt_words,
         unsigned int iters, float* __restrict__ out) {
    mma_peak<false>(a_words, bt_words, iters, out);
}
