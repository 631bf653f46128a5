// NF4 (bitsandbytes) on NVIDIA GPUs. The weights stay in VRAM exactly as the file
// stores them: two 4-bit codes per byte, one 8-bit absmax code per block, one f32 per
// 256 blocks (double quantization) or one f32 per block (plain). Every weight is
// decoded in registers where it is used; `cuda.rs` says which kernel runs when.
//
// build.rs compiles this file to PTX (feature `cuda`). `nf4_check.cu` includes it
// and runs the same per-lane arithmetic on the host against a plain reference
// (scripts/build-cuda), since no GPU is at hand where we build.
//
// Only built-in CUDA types are used (no cuda_bf16.h), so the PTX builds with the
// compiler's own headers.

#include <stdint.h>
#include <string.h>

#ifdef __CUDACC__
#define NF4_HD __host__ __device__ __forceinline__
#else
#define NF4_HD inline
#endif

// A matrix [rows, cols] as the kernels see it. Blocks of 2^block_log2 weights run
// over the flattened matrix, across row boundaries (bitsandbytes' layout).
struct Nf4Matrix {
  const uint8_t* packed;  // element 2i in the high nibble of byte i
  const uint8_t* codes;   // 8-bit absmax codes; null: `nested` holds plain scales
  const float* nested;    // one f32 per 2^nested_log2 blocks (plain: one per block)
  const float* map;       // the 256-entry dynamic map of the codes
  const float* levels;    // the 16 NF4 levels
  float offset;           // the mean added back to every decoded absmax
  int block_log2;
  int nested_log2;
  int rows;
  int cols;
};

// The scale of block `b`: map[code] * nested + offset, rounded as the CPU computes it
// (a product, then a sum: no fused multiply-add, which would round once).
NF4_HD float nf4_scale(const Nf4Matrix& w, uint64_t b) {
  if (w.codes == nullptr) return w.nested[b];
#ifdef __CUDA_ARCH__
  return __fadd_rn(__fmul_rn(w.map[w.codes[b]], w.nested[b >> w.nested_log2]), w.offset);
#else
  volatile float p = w.map[w.codes[b]] * w.nested[b >> w.nested_log2];
  return p + w.offset;
#endif
}

// Flat element `i` of the matrix, dequantized (levels from `lv`: shared memory on
// the device).
NF4_HD float nf4_weight(const Nf4Matrix& w, const float* lv, uint64_t i) {
  const uint8_t byte = w.packed[i >> 1];
  const int code = (i & 1) ? (byte & 15) : (byte >> 4);
  return lv[code] * nf4_scale(w, i >> w.block_log2);
}

// Whether the vector kernel takes the matrix: rows of whole 32-weight chunks (16
// aligned bytes) in blocks of at least 32, so that a chunk lies in one block. Every
// bitsandbytes default (blocks of 64) and every Gemma dimension qualifies.
NF4_HD bool nf4_chunked(const Nf4Matrix& w) {
  return (w.cols % 32) == 0 && w.block_log2 >= 5;
}

// Eight consecutive activations.
NF4_HD void nf4_load8(const float* p, float out[8]) {
#ifdef __CUDA_ARCH__
  const float4 a = __ldg(reinterpret_cast<const float4*>(p));
  const float4 b = __ldg(reinterpret_cast<const float4*>(p) + 1);
  out[0] = a.x; out[1] = a.y; out[2] = a.z; out[3] = a.w;
  out[4] = b.x; out[5] = b.y; out[6] = b.z; out[7] = b.w;
#else
  memcpy(out, p, 8 * sizeof(float));
#endif
}

// Sixteen packed bytes as four little-endian words.
NF4_HD void nf4_load16(const uint8_t* p, uint32_t out[4]) {
#ifdef __CUDA_ARCH__
  const uint4 v = __ldg(reinterpret_cast<const uint4*>(p));
  out[0] = v.x; out[1] = v.y; out[2] = v.z; out[3] = v.w;
#else
  memcpy(out, p, 16);
#endif
}

// One lane's share of `row · x_m` for M activation rows x [M, cols]: the chunks of 32
// weights lane, lane + 32, ... of the row (a warp reads 512 consecutive bytes per
// step). Each chunk's products are summed unscaled, then scaled once by its block.
// Needs nf4_chunked(w), and x 16-byte aligned.
template <int M>
NF4_HD void nf4_lane_dot(const Nf4Matrix& w, const float* lv, int row, const float* x,
                         int lane, float acc[M]) {
  const int k = w.cols;
  for (int m = 0; m < M; ++m) acc[m] = 0.f;
  for (int c = lane; c < (k >> 5); c += 32) {
    const uint64_t flat = (uint64_t)row * (uint64_t)k + ((uint64_t)c << 5);
    uint32_t words[4];
    nf4_load16(w.packed + (flat >> 1), words);
    const float s = nf4_scale(w, flat >> w.block_log2);
    float part[M];
    for (int m = 0; m < M; ++m) part[m] = 0.f;
#pragma unroll
    for (int q = 0; q < 4; ++q) {
      // Word q holds bytes 4q..4q+3, that is elements 8q..8q+7 of the chunk.
      float wv[8];
#pragma unroll
      for (int b = 0; b < 4; ++b) {
        const uint32_t byte = (words[q] >> (8 * b)) & 0xff;
        wv[2 * b] = lv[byte >> 4];
        wv[2 * b + 1] = lv[byte & 15];
      }
      for (int m = 0; m < M; ++m) {
        float xv[8];
        nf4_load8(x + (uint64_t)m * k + ((uint64_t)c << 5) + 8 * q, xv);
#pragma unroll
        for (int e = 0; e < 8; ++e) part[m] += wv[e] * xv[e];
      }
    }
    for (int m = 0; m < M; ++m) acc[m] += s * part[m];
  }
}

// bf16 bits of an f32, rounded to nearest even (NaN stays a quiet NaN).
NF4_HD uint16_t nf4_bf16_bits(float f) {
  uint32_t u;
  memcpy(&u, &f, 4);
  if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x40);
  u += 0x7fffu + ((u >> 16) & 1u);
  return (uint16_t)(u >> 16);
}

#ifdef __CUDACC__

// Warps per thread block in the vector kernel, one output row each.
#define NF4_ROWS_PER_BLOCK 4

// y [M, rows] = x [M, cols] · Wᵀ for a few activation rows (decode, a batch of
// decodes, a verify pass): each weight byte is read once for all M rows.
template <int M>
__device__ void nf4_gemv(const Nf4Matrix& w, const float* x, float* y) {
  __shared__ float lv[16];
  if (threadIdx.y == 0 && threadIdx.x < 16) lv[threadIdx.x] = w.levels[threadIdx.x];
  __syncthreads();
  const int row = blockIdx.x * NF4_ROWS_PER_BLOCK + threadIdx.y;
  if (row >= w.rows) return;  // the whole warp leaves together
  float acc[M];
  nf4_lane_dot<M>(w, lv, row, x, threadIdx.x, acc);
  for (int m = 0; m < M; ++m) {
    float v = acc[m];
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    if (threadIdx.x == 0) y[(uint64_t)m * w.rows + row] = v;
  }
}

#define NF4_MATRIX_PARAMS                                                              \
  const uint8_t *packed, const uint8_t *codes, const float *nested, const float *map, \
      const float *levels, float offset, int block_log2, int nested_log2, int rows, int cols
#define NF4_MATRIX \
  Nf4Matrix { packed, codes, nested, map, levels, offset, block_log2, nested_log2, rows, cols }

#define NF4_GEMV(M)                                                                      \
  extern "C" __global__ void nf4_gemv_##M(NF4_MATRIX_PARAMS, const float* x, float* y) { \
    nf4_gemv<M>(NF4_MATRIX, x, y);                                                     \
  }
NF4_GEMV(1)
NF4_GEMV(2)
NF4_GEMV(3)
NF4_GEMV(4)
NF4_GEMV(5)
NF4_GEMV(6)
NF4_GEMV(7)
NF4_GEMV(8)

// out [n, cols] = rows ids[0..n] of W, dequantized (embeddings), or with null ids the
// whole matrix (for a prefill's tensor-core product). Any layout. Ids are checked by
// the caller; one out of range gives a row of zeros, never a read outside the matrix.
NF4_HD void nf4_store(float* o, float v) { *o = v; }
NF4_HD void nf4_store(uint16_t* o, float v) { *o = nf4_bf16_bits(v); }

template <typename Out>
__device__ void nf4_rows(const Nf4Matrix& w, const uint32_t* ids, uint64_t n, Out* out) {
  __shared__ float lv[16];
  if (threadIdx.x < 16) lv[threadIdx.x] = w.levels[threadIdx.x];
  __syncthreads();
  const uint64_t total = n * (uint64_t)w.cols;
  for (uint64_t i = blockIdx.x * (uint64_t)blockDim.x + threadIdx.x; i < total;
       i += (uint64_t)gridDim.x * blockDim.x) {
    const uint64_t r = i / w.cols, c = i % w.cols;
    const uint32_t id = ids ? ids[r] : (uint32_t)r;
    const float v = id < (uint32_t)w.rows ? nf4_weight(w, lv, (uint64_t)id * w.cols + c) : 0.f;
    nf4_store(out + i, v);
  }
}

extern "C" __global__ void nf4_rows_f32(NF4_MATRIX_PARAMS, const uint32_t* ids, uint64_t n,
                                        float* out) {
  nf4_rows(NF4_MATRIX, ids, n, out);
}

extern "C" __global__ void nf4_rows_bf16(NF4_MATRIX_PARAMS, const uint32_t* ids, uint64_t n,
                                         uint16_t* out) {
  nf4_rows(NF4_MATRIX, ids, n, out);
}

#endif  // __CUDACC__
