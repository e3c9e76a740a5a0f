// The CPU product of a CSR matrix with a transposed dense batch, for
// gsm_optax's sparse inference (gsm_optax/_src/deploy/native.py builds and loads it).
//
//   yt[i, b] = sum over the nonzeros p of row i of  data[p] * x[b, indices[p]]
//
// that is yt = A @ x.T with A (M, K) in CSR, x (B, K) row-major and yt (M, B)
// row-major. jax's BCSR product computes the same from x.T in row-major, so
// XLA first transposes the whole batch, a pass that cost about as much as
// the product itself (docs: deploy). Here the batch is transposed a tile of
// kTile rows at a time into a buffer that stays in cache (8x8 register
// transposes where AVX is available), and each row of A then accumulates
// kTile outputs at once from contiguous tile rows.

#include <algorithm>
#include <cstdint>
#include <vector>

#if defined(__AVX__)
#include <immintrin.h>
#endif

#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

namespace {

constexpr int kTile = 16;

#if defined(__AVX__)
// dst[c * ldd + r] = src[r * ld + c] for an 8x8 block.
inline void Transpose8x8(const float* src, int64_t ld, float* dst, int64_t ldd) {
  __m256 r0 = _mm256_loadu_ps(src + 0 * ld), r1 = _mm256_loadu_ps(src + 1 * ld);
  __m256 r2 = _mm256_loadu_ps(src + 2 * ld), r3 = _mm256_loadu_ps(src + 3 * ld);
  __m256 r4 = _mm256_loadu_ps(src + 4 * ld), r5 = _mm256_loadu_ps(src + 5 * ld);
  __m256 r6 = _mm256_loadu_ps(src + 6 * ld), r7 = _mm256_loadu_ps(src + 7 * ld);
  __m256 t0 = _mm256_unpacklo_ps(r0, r1), t1 = _mm256_unpackhi_ps(r0, r1);
  __m256 t2 = _mm256_unpacklo_ps(r2, r3), t3 = _mm256_unpackhi_ps(r2, r3);
  __m256 t4 = _mm256_unpacklo_ps(r4, r5), t5 = _mm256_unpackhi_ps(r4, r5);
  __m256 t6 = _mm256_unpacklo_ps(r6, r7), t7 = _mm256_unpackhi_ps(r6, r7);
  __m256 u0 = _mm256_shuffle_ps(t0, t2, _MM_SHUFFLE(1, 0, 1, 0));
  __m256 u1 = _mm256_shuffle_ps(t0, t2, _MM_SHUFFLE(3, 2, 3, 2));
  __m256 u2 = _mm256_shuffle_ps(t1, t3, _MM_SHUFFLE(1, 0, 1, 0));
  __m256 u3 = _mm256_shuffle_ps(t1, t3, _MM_SHUFFLE(3, 2, 3, 2));
  __m256 u4 = _mm256_shuffle_ps(t4, t6, _MM_SHUFFLE(1, 0, 1, 0));
  __m256 u5 = _mm256_shuffle_ps(t4, t6, _MM_SHUFFLE(3, 2, 3, 2));
  __m256 u6 = _mm256_shuffle_ps(t5, t7, _MM_SHUFFLE(1, 0, 1, 0));
  __m256 u7 = _mm256_shuffle_ps(t5, t7, _MM_SHUFFLE(3, 2, 3, 2));
  _mm256_storeu_ps(dst + 0 * ldd, _mm256_permute2f128_ps(u0, u4, 0x20));
  _mm256_storeu_ps(dst + 1 * ldd, _mm256_permute2f128_ps(u1, u5, 0x20));
  _mm256_storeu_ps(dst + 2 * ldd, _mm256_permute2f128_ps(u2, u6, 0x20));
  _mm256_storeu_ps(dst + 3 * ldd, _mm256_permute2f128_ps(u3, u7, 0x20));
  _mm256_storeu_ps(dst + 4 * ldd, _mm256_permute2f128_ps(u0, u4, 0x31));
  _mm256_storeu_ps(dst + 5 * ldd, _mm256_permute2f128_ps(u1, u5, 0x31));
  _mm256_storeu_ps(dst + 6 * ldd, _mm256_permute2f128_ps(u2, u6, 0x31));
  _mm256_storeu_ps(dst + 7 * ldd, _mm256_permute2f128_ps(u3, u7, 0x31));
}
#endif

// tile[k * kTile + l] = x[l, k] for the rows < rows of the tile, 0 after.
void LoadTile(const float* x, int64_t rows, int64_t K, float* tile) {
  int64_t k_done = 0;
#if defined(__AVX__)
  if (rows == kTile) {
    k_done = K - K % 8;
    for (int64_t l0 = 0; l0 < kTile; l0 += 8)
      for (int64_t k0 = 0; k0 < k_done; k0 += 8)
        Transpose8x8(x + l0 * K + k0, K, tile + k0 * kTile + l0, kTile);
  }
#endif
  for (int64_t l = 0; l < kTile; ++l)
    for (int64_t k = k_done; k < K; ++k)
      tile[k * kTile + l] = l < rows ? x[l * K + k] : 0.0f;
}

// out[l] = sum over the nonzeros p of one CSR row of data[p] * tile[indices[p], l]
// for all kTile columns of the tile; the constant bounds keep acc in registers.
inline void RowTimesTile(const float* __restrict data,
                         const int32_t* __restrict indices, int32_t begin,
                         int32_t end, const float* __restrict tile,
                         float* __restrict out) {
  float acc[kTile] = {0};
  for (int32_t p = begin; p < end; ++p) {
    const float v = data[p];
    const float* r = tile + static_cast<int64_t>(indices[p]) * kTile;
    for (int l = 0; l < kTile; ++l) acc[l] += v * r[l];
  }
  for (int l = 0; l < kTile; ++l) out[l] = acc[l];
}

void CsrTimesTransposed(const float* __restrict data,
                        const int32_t* __restrict indices,
                        const int32_t* __restrict indptr,
                        const float* __restrict x, float* __restrict yt,
                        int64_t M, int64_t K, int64_t B) {
  // One tile buffer per thread, kept between calls (allocating it on every
  // call cost a sixth of the product at LeNet-300's size).
  thread_local std::vector<float> buffer;
  if (buffer.size() < static_cast<size_t>(K * kTile)) buffer.resize(K * kTile);
  float* tile = buffer.data();
  float last[kTile];
  for (int64_t b0 = 0; b0 < B; b0 += kTile) {
    const int64_t rows = std::min<int64_t>(kTile, B - b0);
    LoadTile(x + b0 * K, rows, K, tile);
    for (int64_t i = 0; i < M; ++i) {
      float* out = yt + i * B + b0;
      if (rows == kTile) {
        RowTimesTile(data, indices, indptr[i], indptr[i + 1], tile, out);
      } else {  // the last, partial tile
        RowTimesTile(data, indices, indptr[i], indptr[i + 1], tile, last);
        std::copy(last, last + rows, out);
      }
    }
  }
}

using Matrix = ffi::Buffer<ffi::F32, 2>;
using MatrixResult = ffi::ResultBuffer<ffi::F32, 2>;

ffi::Error Impl(ffi::Buffer<ffi::F32> data, ffi::Buffer<ffi::S32> indices,
                ffi::Buffer<ffi::S32> indptr, Matrix x, MatrixResult yt) {
  const int64_t B = x.dimensions()[0], K = x.dimensions()[1];
  const int64_t M = static_cast<int64_t>(indptr.element_count()) - 1;
  if (M < 0 || yt->dimensions()[0] != M || yt->dimensions()[1] != B)
    return ffi::Error::InvalidArgument(
        "gsm_csr_times_transposed: the output must be (rows of the CSR "
        "matrix, rows of x)");
  CsrTimesTransposed(data.typed_data(), indices.typed_data(),
                     indptr.typed_data(), x.typed_data(), yt->typed_data(), M,
                     K, B);
  return ffi::Error::Success();
}

}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(GsmCsrTimesTransposed, Impl,
                              ffi::Ffi::Bind()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::S32>>()
                                  .Arg<ffi::Buffer<ffi::S32>>()
                                  .Arg<Matrix>()
                                  .Ret<Matrix>());
