// The NF4 kernels' arithmetic run on the host (nvcc compiles `nf4.cu`'s shared
// functions for both sides): each output row's 32 lane sums of `nf4_lane_dot`, as the
// vector kernel's warp adds them, and `nf4_weight`, as the dequantizing kernel reads
// them, against a plain reference in double precision that decodes bitsandbytes'
// layout in its own words. Covers double-quantized and plain scales, blocks of 32 to
// 4096 (crossing rows where they are longer than one), 1 to 8 activation rows, rows
// shorter and longer than a warp's 512-byte step, and the layouts only the
// dequantizing kernel takes (odd columns, blocks of 16).
//
//   nvcc -std=c++17 -o nf4-check nf4_check.cu && ./nf4-check   (scripts/build-cuda)
//
// The launch geometry and the warp's shuffles are what this leaves to a GPU run
// (scripts/gpu-check compares CUDA with the CPU on real shapes).

#include "nf4.cu"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <vector>

static const float NF4_TABLE[16] = {
    -1.0f, -0.6961928009986877f, -0.5250730514526367f, -0.39491748809814453f,
    -0.28444138169288635f, -0.18477343022823334f, -0.09105003625154495f, 0.0f,
    0.07958029955625534f, 0.16093020141124725f, 0.24611230194568634f, 0.33791524171829224f,
    0.44070982933044434f, 0.5626170039176941f, 0.7229568362236023f, 1.0f};

static uint64_t seed = 12345;
static uint32_t next() {
  seed = seed * 6364136223846793005ull + 1442695040888963407ull;
  return (uint32_t)(seed >> 33);
}
static float uniform() { return (next() & 0xffffff) / float(1 << 24) * 2.f - 1.f; }

struct Case {
  int rows, cols, block_log2, nested_log2, m;
  bool double_quant;
};

static int failures = 0;

static void check(const Case& t) {
  const uint64_t n = (uint64_t)t.rows * t.cols;
  const uint64_t blocks = (n + (1ull << t.block_log2) - 1) >> t.block_log2;
  std::vector<uint8_t> packed((n + 1) / 2 + 16), codes(blocks);
  for (auto& b : packed) b = next() & 0xff;
  for (auto& c : codes) c = next() & 0xff;
  std::vector<float> map(256), nested, x((size_t)t.m * t.cols + 8);
  for (auto& v : map) v = uniform();
  nested.resize(t.double_quant ? (blocks >> t.nested_log2) + 1 : blocks);
  for (auto& v : nested) v = 0.05f + fabsf(uniform());
  for (auto& v : x) v = uniform() * 3.f;
  const float offset = t.double_quant ? 0.01f + 0.1f * fabsf(uniform()) : 0.f;
  Nf4Matrix w{packed.data(), t.double_quant ? codes.data() : nullptr, nested.data(), map.data(),
              NF4_TABLE, offset, t.block_log2, t.nested_log2, t.rows, t.cols};

  // The reference: element i is code nibble (high first) of byte i / 2, times the
  // scale of block i >> block_log2.
  auto reference = [&](uint64_t i) -> double {
    const int code = (i % 2 == 0) ? packed[i / 2] >> 4 : packed[i / 2] & 15;
    const uint64_t b = i >> t.block_log2;
    float s;
    if (t.double_quant) {
      const float prod = map[codes[b]] * nested[b >> t.nested_log2];
      s = prod + offset;
    } else {
      s = nested[b];
    }
    return (double)NF4_TABLE[code] * (double)s;
  };

  for (uint64_t i = 0; i < n; ++i) {
    const double want = reference(i);
    if ((double)nf4_weight(w, NF4_TABLE, i) != (float)want) {
      fprintf(stderr, "weight %llu of %dx%d: %g, want %g\n", (unsigned long long)i, t.rows,
              t.cols, nf4_weight(w, NF4_TABLE, i), want);
      ++failures;
      return;
    }
  }
  if (!nf4_chunked(w)) return;
  for (int r = 0; r < t.rows; ++r) {
    double got[8] = {0};
    for (int lane = 0; lane < 32; ++lane) {
      float acc[8];
      switch (t.m) {
        case 1: nf4_lane_dot<1>(w, NF4_TABLE, r, x.data(), lane, acc); break;
        case 3: nf4_lane_dot<3>(w, NF4_TABLE, r, x.data(), lane, acc); break;
        case 8: nf4_lane_dot<8>(w, NF4_TABLE, r, x.data(), lane, acc); break;
        default: fprintf(stderr, "no case for m = %d\n", t.m); exit(2);
      }
      for (int j = 0; j < t.m; ++j) got[j] += acc[j];
    }
    for (int j = 0; j < t.m; ++j) {
      double want = 0, mag = 0;
      for (int c = 0; c < t.cols; ++c) {
        const double p = reference((uint64_t)r * t.cols + c) * x[(size_t)j * t.cols + c];
        want += p;
        mag += fabs(p);
      }
      if (fabs(got[j] - want) > 1e-5 * mag + 1e-6) {
        fprintf(stderr, "row %d, activation row %d of %dx%d (blocks 2^%d): %.9g, want %.9g\n", r, j,
                t.rows, t.cols, t.block_log2, got[j], want);
        ++failures;
        return;
      }
    }
  }
}

int main() {
  const Case cases[] = {
      {7, 64, 6, 8, 1, true},      {5, 2560, 6, 8, 3, true},    {3, 10240, 6, 8, 8, true},
      {9, 96, 7, 8, 3, true},      {4, 160, 5, 8, 1, false},    {2, 4096, 12, 8, 8, true},
      {6, 1152, 6, 4, 3, false},   {11, 37, 4, 8, 1, true},     {5, 48, 4, 8, 1, false},
      {3, 513, 6, 8, 1, true},
  };
  for (const Case& t : cases) check(t);
  // bf16 rounding: to nearest, ties to even, NaN kept.
  const struct { uint32_t in; uint16_t want; } bf[] = {
      {0x3f800000u, 0x3f80}, {0x3f808000u, 0x3f80}, {0x3f818000u, 0x3f82},
      {0x3f808001u, 0x3f81}, {0xbf7fffffu, 0xbf80}, {0x7fc00000u, 0x7fc0},
      {0x7f800001u, 0x7fc0}, {0x7f7fffffu, 0x7f80},
  };
  for (const auto& c : bf) {
    float f;
    memcpy(&f, &c.in, 4);
    if (nf4_bf16_bits(f) != c.want) {
      fprintf(stderr, "bf16 of %08x: %04x, want %04x\n", c.in, nf4_bf16_bits(f), c.want);
      ++failures;
    }
  }
  if (failures) {
    fprintf(stderr, "nf4 kernel host check: %d failures\n", failures);
    return 1;
  }
  printf("nf4 kernel host check: %zu layouts and bf16 rounding agree with the reference\n",
         sizeof(cases) / sizeof(cases[0]));
  return 0;
}
