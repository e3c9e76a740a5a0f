// gsm_optax's radix select on the CPU (native_radix.py next to this file
// builds, loads and calls it). GsmKeyHistogram is one pass: a histogram of
// keys over many float32 arrays, what each pass counts chosen by the
// caller. GsmRadixSelect is the whole plain select (digits of 11, 10 and 10
// bits) in one call, for arrays that are not split over devices: the same
// passes, the digits chosen here as radix.take chooses them.
//
// The key of a non-negative score is its bit pattern read as an integer
// (the sign bit is 0), which orders like the score, NaN above +inf. A pass
// counts the keys k in the range [lo, lo + bins * 2**shift) per bin
// (k - lo) >> shift, and the keys above the range, and returns rank counts:
// entry b the keys at or above bin b (those in bins b, b + 1, ... and those
// above the range), entry `bins` those above the range; counts that add up
// over devices and need no prefix sum afterwards. A radix pass is such a
// range: the keys whose higher digits equal a prefix, binned by the next
// digit; the window pass of the sampled route is a range of keys around
// where a sample puts the answer, binned one key a bin. With sample_stride > 0 only a sample is counted: one block of
// kBlock elements in every sample_stride blocks, at a place within them
// that a hash of its number chooses (so the sample follows no dimension of
// the array).
//
// The arrays are scores, or (with products=true) pairs of gradients and
// parameters whose scores |g * w| are computed here, in registers, and never
// written out. The products are computed with the calling thread's
// floating-point control word (XLA:CPU flushes denormals to zero), so each
// is the float XLA computes for |g * w|.
//
// The work is split into chunks of the arrays' elements, claimed by the
// calling thread and by tasks on XLA's intra-op thread pool, each worker
// counting on its own. A range that holds every key (the first radix pass)
// is counted kStage keys at a time: their bins first, into a buffer (a loop
// that the compiler vectorizes), then one increment each into kWays copies
// of a histogram. Any other range
// is tested a block of keys at a time in vector registers, and the bins of
// the few keys inside it are listed, then added to the output after the
// pass (a list grown past kListUpTo goes into a histogram of the worker's
// own first, so the memory stays bounded whatever the keys).

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <thread>
#include <vector>

#if defined(__AVX512F__) || defined(__AVX2__)
#include <immintrin.h>
#elif defined(__SSE__)
#include <xmmintrin.h>
#endif

#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

namespace {

constexpr int64_t kChunk = 1 << 16;  // elements per claimed chunk
constexpr int kBlock = 16;           // keys computed and tested at once
constexpr int kStage = 512;          // keys binned at once (every_key)
// Keys that fall in one bin one after another would wait on each other's
// increment; kWays copies of the histogram, taken in turn, break the chain
// (for ranges of at most kWaysUpTo bins, which every key falls in).
constexpr int kWays = 4;
constexpr int64_t kWaysUpTo = int64_t{1} << 16;
static_assert((kWays & (kWays - 1)) == 0, "kWays is a power of two");
// Elements ahead of the one computed that are asked for from memory: the
// hardware's prefetcher stops at each 4 KiB page, which is one here.
constexpr int64_t kAhead = 1024;
// Likewise for a sample: its blocks this many on.
constexpr int64_t kSampleAhead = 8;
// A worker keeps the bins of the keys inside a range that not every key
// falls in as a list, up to this many (then it adds them to a histogram of
// its own: the memory stays bounded whatever the keys).
constexpr size_t kListUpTo = size_t{1} << 18;

// The floating-point control word, copied from the caller to the workers.
#if defined(__SSE__)
using ControlWord = unsigned int;
inline ControlWord GetControl() { return _mm_getcsr(); }
inline void SetControl(ControlWord c) { _mm_setcsr(c); }
constexpr bool kCanCopyControl = true;
#elif defined(__aarch64__)
using ControlWord = uint64_t;
inline ControlWord GetControl() {
  uint64_t c;
  asm volatile("mrs %0, fpcr" : "=r"(c));
  return c;
}
inline void SetControl(ControlWord c) { asm volatile("msr fpcr, %0" ::"r"(c)); }
constexpr bool kCanCopyControl = true;
#else
using ControlWord = int;
inline ControlWord GetControl() { return 0; }
inline void SetControl(ControlWord) {}
constexpr bool kCanCopyControl = false;  // count in the caller's thread only
#endif

struct Leaf {
  const float* a;  // the scores, or the gradients
  const float* b;  // the parameters (products), else nullptr
  int64_t size;
};

// What a pass counts: keys k with (k - lo) mod 2**32 < span go to bin
// (k - lo) >> shift; keys k >= lo + span to the bin after the last.
struct Range {
  uint32_t lo;
  uint32_t span;  // bins << shift, at most 2**31
  int shift;
  int64_t bins;
  bool every_key;  // lo == 0 and span == 2**31: every key is in the range
};

// A chunk: kChunk consecutive elements of a leaf, or with a sample the
// blocks first_block .. first_block + kChunk / kBlock - 1 of a leaf.
struct Chunk {
  int leaf;
  int64_t first;
};

struct Inputs {
  std::vector<Leaf> leaves;
  std::vector<Chunk> chunks;
  int64_t stride;  // 0: every element; else one block in `stride`
  ControlWord control;
};

struct Free {
  void operator()(int32_t* p) const { std::free(p); }
};
using Counts = std::unique_ptr<int32_t[], Free>;


// The start of sample block j of a leaf: the j-th run of `stride` blocks,
// at the block of it that a hash of j chooses (the last block if that
// would run past the end).
inline int64_t SampleStart(int64_t j, int64_t stride, int64_t size) {
  uint64_t h = static_cast<uint64_t>(j) + 0x9e3779b97f4a7c15ull;
  h = (h ^ (h >> 30)) * 0xbf58476d1ce4e5b9ull;
  h = (h ^ (h >> 27)) * 0x94d049bb133111ebull;
  h ^= h >> 31;
  const int64_t start =
      (j * stride + static_cast<int64_t>(h % static_cast<uint64_t>(stride))) *
      kBlock;
  return std::max<int64_t>(0, std::min(start, size - kBlock));
}

// The key of element i of a (with b: of the product |a[i] * b[i]|): the
// bit pattern with the sign bit cleared is that of the absolute value.
template <bool kProducts>
inline uint32_t Key(const float* a, const float* b, int64_t i) {
  const float x = kProducts ? a[i] * b[i] : a[i];
  uint32_t u;
  std::memcpy(&u, &x, sizeof(u));
  return kProducts ? (u & 0x7fffffffu) : u;
}

// The keys of kBlock elements from a (and b), computed together.
template <bool kProducts>
inline void Keys(const float* __restrict a, const float* __restrict b,
                 uint32_t* __restrict k) {
  for (int j = 0; j < kBlock; ++j) k[j] = Key<kProducts>(a, b, j);
}

// The keys of kBlock elements as Keys computes them, and of those a bit
// mask of the ones in [lo, lo + span) (bit j for key j) and how many are
// at or above top (as int32: keys with the sign bit set are not). In vector
// registers where the machine has them (a compiler leaves these reductions
// scalar: 16 extractions a block).
template <bool kProducts>
inline void TestKeys(const float* __restrict a, const float* __restrict b,
                     uint32_t lo, uint32_t span, int32_t top,
                     uint32_t* __restrict k, uint32_t& inside, int& over) {
#if defined(__AVX512F__)
  __m512 x = _mm512_loadu_ps(a);
  if (kProducts) x = _mm512_mul_ps(x, _mm512_loadu_ps(b));
  __m512i key = _mm512_castps_si512(x);
  if (kProducts) key = _mm512_and_si512(key, _mm512_set1_epi32(0x7fffffff));
  _mm512_store_si512(reinterpret_cast<__m512i*>(k), key);
  inside = _mm512_cmplt_epu32_mask(
      _mm512_sub_epi32(key, _mm512_set1_epi32(static_cast<int32_t>(lo))),
      _mm512_set1_epi32(static_cast<int32_t>(span)));
  over = __builtin_popcount(static_cast<unsigned>(
      _mm512_cmpge_epi32_mask(key, _mm512_set1_epi32(top))));
#elif defined(__AVX2__)
  const __m256i sign = _mm256_set1_epi32(INT32_MIN);
  const __m256i vlo = _mm256_set1_epi32(static_cast<int32_t>(lo));
  const __m256i vspan =
      _mm256_xor_si256(_mm256_set1_epi32(static_cast<int32_t>(span)), sign);
  const __m256i vtop = _mm256_set1_epi32(top);
  inside = 0;
  over = 0;
  for (int h = 0; h < kBlock; h += 8) {
    __m256 x = _mm256_loadu_ps(a + h);
    if (kProducts) x = _mm256_mul_ps(x, _mm256_loadu_ps(b + h));
    __m256i key = _mm256_castps_si256(x);
    if (kProducts) {
      key = _mm256_and_si256(key, _mm256_set1_epi32(0x7fffffff));
    }
    _mm256_store_si256(reinterpret_cast<__m256i*>(k + h), key);
    // Unsigned (key - lo) < span, as a signed comparison of both less 2**31.
    const __m256i in = _mm256_cmpgt_epi32(
        vspan, _mm256_xor_si256(_mm256_sub_epi32(key, vlo), sign));
    const __m256i below = _mm256_cmpgt_epi32(vtop, key);
    inside |= static_cast<uint32_t>(
                  _mm256_movemask_ps(_mm256_castsi256_ps(in))) << h;
    over += 8 - __builtin_popcount(static_cast<unsigned>(
                    _mm256_movemask_ps(_mm256_castsi256_ps(below))));
  }
#else
  Keys<kProducts>(a, b, k);
  inside = 0;
  over = 0;
  for (int j = 0; j < kBlock; ++j) {
    inside |= static_cast<uint32_t>(k[j] - lo < span) << j;
    over += static_cast<int32_t>(k[j]) >= top;
  }
#endif
}

template <bool kProducts>
inline void Prefetch(const float* a, const float* b) {
  __builtin_prefetch(a + kAhead);
  if (kProducts) __builtin_prefetch(b + kAhead);
}

// Where a worker counts: a histogram of ways * (bins + 1) (allocated zeroed
// by the system when first needed: pages that no key touches are never
// written), and for a range that not every key falls in, a list of bins
// first.
struct Tally {
  int64_t bins = 0;
  int ways = 1;
  Counts hist;
  std::vector<uint32_t> list;
  bool failed = false;

  int32_t* Hist() {
    if (!hist && !failed) {
      hist.reset(static_cast<int32_t*>(std::calloc(
          static_cast<size_t>(ways * (bins + 1)), sizeof(int32_t))));
      failed = !hist;
    }
    return hist.get();
  }
  void List(uint32_t bin) {
    list.push_back(bin);
    if (list.size() >= kListUpTo) Flush();
  }
  void Flush() {
    int32_t* h = Hist();
    if (h != nullptr) {
      for (uint32_t bin : list) ++h[bin];
    }
    list.clear();
  }
};

// One pass, shared by its workers. Held by shared_ptr: a task the pool
// starts late, after the pass (or the call) ended, finds no worker slot
// left and returns without touching anything else.
struct Pass {
  std::shared_ptr<const Inputs> inputs;
  Range range;
  std::vector<Tally> tallies;  // per worker
  std::vector<int64_t> above;  // per worker
  std::atomic<int64_t> next{0};
  std::atomic<int64_t> done{0};
  std::atomic<int> workers{0};   // ids given out (closed: kClosed and more)
  std::atomic<int> finished{0};  // workers that have written their counts
};

constexpr int kClosed = 1 << 30;

// Counts a[begin, end) (with b: the products) into tally / above. A key
// with the sign bit set (no non-negative score's) is counted nowhere: in
// every_key mode it goes to the spare bin after the last of its way.
template <bool kProducts>
void CountSpan(const float* a, const float* b, int64_t begin, int64_t end,
               const Range& r, Tally& tally, int64_t& above) {
  const uint32_t lo = r.lo, span = r.span;
  const int shift = r.shift;
  const uint32_t spare = static_cast<uint32_t>(r.bins);
  // Keys from `top` on are above the range; there are none if it is 2**31.
  const int64_t top = int64_t{lo} + span;
  const int32_t top32 =
      static_cast<int32_t>(std::min<int64_t>(top, INT32_MAX));
  const bool none_above = top > INT32_MAX;
  alignas(64) uint32_t k[kBlock];
  int64_t i = begin;
  if (r.every_key) {
    int32_t* hist = tally.Hist();
    if (hist == nullptr) return;
    // Bins of kStage elements at a time into a buffer (a loop a compiler
    // vectorizes), then their increments; element i goes to copy i % ways.
    const uint32_t stride = static_cast<uint32_t>(r.bins + 1);
    const uint32_t way_mask = static_cast<uint32_t>(tally.ways - 1);
    alignas(64) uint32_t bin[kStage];
    for (; i + kStage <= end; i += kStage) {
      const float* __restrict sa = a + i;
      const float* __restrict sb = kProducts ? b + i : nullptr;
      for (int j = 0; j < kStage; ++j) {
        const uint32_t key = Key<kProducts>(sa, sb, j);
        bin[j] = (static_cast<uint32_t>(j) & way_mask) * stride +
                 ((key >> 31) ? spare : key >> shift);
      }
      for (int j = 0; j < kStage; ++j) ++hist[bin[j]];
    }
    for (; i < end; ++i) {  // the last elements, one at a time
      const uint32_t key = Key<kProducts>(a, b, i);
      ++hist[(key >> 31) ? spare : key >> shift];
    }
    return;
  }
  int64_t n_above = 0;
  auto count = [&](uint32_t key) {
    if (key - lo < span) {
      tally.List((key - lo) >> shift);
    }
  };
  for (; i + kBlock <= end; i += kBlock) {
    Prefetch<kProducts>(a + i, b + i);
    uint32_t inside;
    int over;
    TestKeys<kProducts>(a + i, kProducts ? b + i : nullptr, lo, span, top32,
                        k, inside, over);
    n_above += over;
    // List the keys in the range, in the order of their bits.
    for (; inside != 0; inside &= inside - 1) {
      tally.List((k[__builtin_ctz(inside)] - lo) >> shift);
    }
  }
  for (; i < end; ++i) {  // the last elements, one at a time
    const uint32_t key = Key<kProducts>(a, b, i);
    count(key);
    n_above += static_cast<int32_t>(key) >= top32;
  }
  if (!none_above) above += n_above;
}

void RunWorker(Pass& pass, bool in_caller) {
  const int id = pass.workers.fetch_add(1);
  if (id >= static_cast<int>(pass.tallies.size())) return;
  const Inputs& inputs = *pass.inputs;
  const Range& range = pass.range;
  Tally& tally = pass.tallies[id];
  ControlWord saved{};
  if (!in_caller) {
    saved = GetControl();
    SetControl(inputs.control);
  }
  int64_t above = 0;
  const int64_t n = static_cast<int64_t>(inputs.chunks.size());
  for (int64_t c; (c = pass.next.fetch_add(1)) < n;) {
    const Chunk& chunk = inputs.chunks[c];
    const Leaf& leaf = inputs.leaves[chunk.leaf];
    auto span = [&](int64_t begin, int64_t end) {
      if (leaf.b != nullptr) {
        CountSpan<true>(leaf.a, leaf.b, begin, end, range, tally, above);
      } else {
        CountSpan<false>(leaf.a, nullptr, begin, end, range, tally, above);
      }
    };
    if (inputs.stride == 0) {
      span(chunk.first, std::min(leaf.size, chunk.first + kChunk));
    } else {
      const int64_t blocks = (leaf.size + kBlock * inputs.stride - 1) /
                             (kBlock * inputs.stride);
      const int64_t last = std::min(blocks, chunk.first + kChunk / kBlock);
      for (int64_t j = chunk.first; j < last; ++j) {
        // The blocks are apart: ask for one kSampleAhead blocks on now.
        if (j + kSampleAhead < last) {
          const int64_t next =
              SampleStart(j + kSampleAhead, inputs.stride, leaf.size);
          __builtin_prefetch(leaf.a + next);
          if (leaf.b != nullptr) __builtin_prefetch(leaf.b + next);
        }
        const int64_t start = SampleStart(j, inputs.stride, leaf.size);
        span(start, std::min(leaf.size, start + kBlock));
      }
    }
    pass.done.fetch_add(1, std::memory_order_release);
  }
  pass.above[id] = above;
  if (!in_caller) SetControl(saved);
  pass.finished.fetch_add(1, std::memory_order_release);
}

// The arrays of a call as leaves, split into chunks (one block in
// `sample_stride` sampled where it is > 0).
ffi::Error ReadInputs(ffi::RemainingArgs& args, bool products,
                      int64_t sample_stride, Inputs& inputs) {
  const size_t step = products ? 2 : 1;
  if (args.size() % step) {
    return ffi::Error::InvalidArgument(
        "with products=true the arrays come in (gradient, parameter) pairs");
  }
  inputs.control = GetControl();
  inputs.stride = sample_stride;
  for (size_t i = 0; i < args.size(); i += step) {
    auto a = args.get<ffi::AnyBuffer>(i);
    auto b = products ? args.get<ffi::AnyBuffer>(i + 1) : a;
    if (!a.has_value() || !b.has_value() || a->element_type() != ffi::F32 ||
        b->element_type() != ffi::F32) {
      return ffi::Error::InvalidArgument("the arrays must be float32");
    }
    if (a->element_count() != b->element_count()) {
      return ffi::Error::InvalidArgument(
          "a gradient and its parameter differ in size");
    }
    const int index = static_cast<int>(inputs.leaves.size());
    const int64_t size = static_cast<int64_t>(a->element_count());
    inputs.leaves.push_back(
        {reinterpret_cast<const float*>(a->untyped_data()),
         products ? reinterpret_cast<const float*>(b->untyped_data())
                  : nullptr,
         size});
    if (size < kBlock && sample_stride > 0) {
      continue;  // no whole block to sample
    }
    const int64_t units =
        sample_stride == 0
            ? size
            : (size + kBlock * sample_stride - 1) / (kBlock * sample_stride);
    const int64_t per_chunk = sample_stride == 0 ? kChunk : kChunk / kBlock;
    for (int64_t first = 0; first < units; first += per_chunk) {
      inputs.chunks.push_back({index, first});
    }
  }
  return ffi::Error::Success();
}

// Counts the keys in [lo, lo + bins * 2**shift) (0 <= lo) on the calling
// thread and the pool's, and returns the pass with each worker's tally and
// count above the range.
std::shared_ptr<Pass> RunPass(ffi::ThreadPool& pool,
                              std::shared_ptr<const Inputs> inputs,
                              uint32_t lo, int shift, int64_t bins) {
  const int64_t threads =
      kCanCopyControl ? std::max<int64_t>(pool.num_threads(), 0) : 0;
  const int workers = static_cast<int>(std::max<int64_t>(
      1, std::min<int64_t>(threads + 1,
                           static_cast<int64_t>(inputs->chunks.size()))));
  auto pass = std::make_shared<Pass>();
  pass->inputs = inputs;
  const int64_t span = bins << shift;
  pass->range = {lo, static_cast<uint32_t>(span), shift, bins,
                 lo == 0 && span == (int64_t{1} << 31)};
  const int ways = pass->range.every_key && bins <= kWaysUpTo ? kWays : 1;
  pass->tallies.resize(workers);
  for (Tally& tally : pass->tallies) {
    tally.bins = bins;
    tally.ways = ways;
  }
  pass->above.assign(workers, 0);
  for (int t = 1; t < workers; ++t) {
    pool.Schedule([pass] { RunWorker(*pass, /*in_caller=*/false); });
  }
  RunWorker(*pass, /*in_caller=*/true);
  const int64_t n = static_cast<int64_t>(inputs->chunks.size());
  while (pass->done.load(std::memory_order_acquire) < n) {
    std::this_thread::yield();
  }
  // No worker starts from here on; wait for those that did to write their
  // counts (a task the pool started late finds no chunk and ends at once).
  const int started = std::min(pass->workers.exchange(kClosed), workers);
  while (pass->finished.load(std::memory_order_acquire) < started) {
    std::this_thread::yield();
  }
  return pass;
}

ffi::Error Failed(const Pass& pass) {
  for (const Tally& tally : pass.tallies) {
    if (tally.failed) {
      return ffi::Error(ffi::ErrorCode::kResourceExhausted,
                        "could not allocate a histogram");
    }
  }
  return ffi::Error::Success();
}

// Adds each worker's counts per bin (its list and its histogram's copies)
// to counts[0, bins).
void AddTallies(const Pass& pass, int64_t bins, int32_t* counts) {
  for (const Tally& tally : pass.tallies) {
    for (uint32_t bin : tally.list) ++counts[bin];
    const int32_t* h = tally.hist.get();
    for (int way = 0; h != nullptr && way < tally.ways; ++way) {
      const int32_t* part = h + way * (bins + 1);
      for (int64_t bin = 0; bin < bins; ++bin) counts[bin] += part[bin];
    }
  }
}

int64_t Above(const Pass& pass) {
  int64_t above = 0;
  for (int64_t a : pass.above) above += a;
  return above;
}

// Rank counts from counts per bin and, in counts[bins], the keys above.
void ToRankCounts(int32_t* counts, int64_t bins) {
  for (int64_t bin = bins - 1; bin >= 0; --bin) counts[bin] += counts[bin + 1];
}

ffi::Error Impl(ffi::ThreadPool pool, ffi::BufferR0<ffi::S32> lo_buffer,
                ffi::RemainingArgs args, int32_t shift, bool products,
                int64_t sample_stride,
                ffi::Result<ffi::BufferR1<ffi::S32>> out) {
  const int64_t bins = static_cast<int64_t>(out->element_count()) - 1;
  const int32_t lo = lo_buffer.typed_data()[0];
  if (shift < 0 || shift > 31 || bins < 1 || bins > (int64_t{1} << 31) ||
      (bins << shift) > (int64_t{1} << 31) ||
      (lo > 0 && lo + (bins << shift) > (int64_t{1} << 31)) ||
      sample_stride < 0) {
    return ffi::Error::InvalidArgument(
        "expected 0 <= shift <= 31, lo + bins * 2**shift <= 2**31 (the "
        "output holds the bins and one count above them) and "
        "sample_stride >= 0");
  }
  auto inputs = std::make_shared<Inputs>();
  ffi::Error error = ReadInputs(args, products, sample_stride, *inputs);
  if (error.failure()) return error;
  int32_t* counts = out->typed_data();
  std::memset(counts, 0, sizeof(int32_t) * (bins + 1));
  if (lo < 0 || inputs->chunks.empty()) {
    return ffi::Error::Success();  // a negative lo: no key is counted
  }
  auto pass = RunPass(pool, inputs, static_cast<uint32_t>(lo), shift, bins);
  error = Failed(*pass);
  if (error.failure()) return error;
  AddTallies(*pass, bins, counts);
  counts[bins] = static_cast<int32_t>(Above(*pass));
  ToRankCounts(counts, bins);
  return ffi::Error::Success();
}

// radix.take: the largest bin d whose rank count reaches q, that count and
// the count above bin d; with no such bin d = -1 and, as jax.numpy indexes,
// counts[-1] and counts[0].
struct Taken {
  int32_t d, num, above;
};
Taken Take(const int32_t* counts, int64_t bins, int32_t q) {
  int32_t reach = 0;
  for (int64_t bin = 0; bin < bins; ++bin) reach += counts[bin] >= q;
  const int32_t d = reach - 1;
  if (d < 0) return {d, counts[bins], counts[0]};
  return {d, counts[d], counts[d + 1]};
}

// The next prefix, (prefix << width) | d in int32 as jax.numpy computes it.
int32_t Extend(int32_t prefix, int width, int32_t d) {
  return static_cast<int32_t>((static_cast<uint32_t>(prefix) << width) |
                              static_cast<uint32_t>(d));
}

// The whole radix select in one call, for scores that are not split over
// devices: the answer and count of `radix.radix_select` with digits
// (11, 10, 10), the same key and count as three calls of Impl. The second
// pass lists the low 20 bits of every key in the first pass's bucket, so the
// third digit is read off that list, not off a third pass over the arrays.
ffi::Error SelectImpl(ffi::ThreadPool pool, ffi::BufferR0<ffi::S32> q_buffer,
                      ffi::RemainingArgs args, bool products,
                      ffi::Result<ffi::BufferR1<ffi::S32>> out) {
  constexpr int kHigh = 11, kLow = 10;  // the digits: 11 + 10 + 10 bits
  constexpr int64_t kHighBins = int64_t{1} << kHigh;
  constexpr int64_t kLowBins = int64_t{1} << kLow;
  constexpr int64_t kBucketKeys = int64_t{1} << (31 - kHigh);  // low 20 bits
  if (out->element_count() != 2) {
    return ffi::Error::InvalidArgument("the output is (key, count)");
  }
  const int32_t q = q_buffer.typed_data()[0];
  auto inputs = std::make_shared<Inputs>();
  ffi::Error error = ReadInputs(args, products, 0, *inputs);
  if (error.failure()) return error;
  std::vector<int32_t> counts(kHighBins + 1, 0);
  if (!inputs->chunks.empty()) {  // the top 11 bits of every key
    auto pass = RunPass(pool, inputs, 0, 31 - kHigh, kHighBins);
    error = Failed(*pass);
    if (error.failure()) return error;
    AddTallies(*pass, kHighBins, counts.data());
    ToRankCounts(counts.data(), kHighBins);
  }
  Taken t = Take(counts.data(), kHighBins, q);
  int32_t prefix = Extend(0, kHigh, t.d);
  // The keys whose top 11 bits are the prefix, each listed by its low 20
  // bits (in a worker's histogram of 2**20 bins past kListUpTo of them).
  std::vector<int32_t> low(kLowBins + 1, 0);
  std::shared_ptr<Pass> pass;
  const int32_t lo = static_cast<int32_t>(static_cast<uint32_t>(prefix)
                                          << (31 - kHigh));
  if (lo >= 0 && !inputs->chunks.empty()) {
    pass = RunPass(pool, inputs, static_cast<uint32_t>(lo), 0, kBucketKeys);
    error = Failed(*pass);
    if (error.failure()) return error;
    for (Tally& tally : pass->tallies) {
      for (uint32_t key : tally.list) ++low[key >> kLow];
      const int32_t* h = tally.hist.get();
      for (int64_t key = 0; h != nullptr && key < kBucketKeys; ++key) {
        low[key >> kLow] += h[key];
      }
    }
    low[kLowBins] = static_cast<int32_t>(Above(*pass));
    ToRankCounts(low.data(), kLowBins);
  }
  t = Take(low.data(), kLowBins, q);
  const int32_t middle = t.d;
  prefix = Extend(prefix, kLow, middle);
  std::vector<int32_t> last(kLowBins + 1, 0);
  if (static_cast<int32_t>(static_cast<uint32_t>(prefix) << kLow) >= 0 &&
      pass != nullptr) {  // the keys listed whose middle 10 bits are `middle`
    for (Tally& tally : pass->tallies) {
      for (uint32_t key : tally.list) {
        if (static_cast<int32_t>(key >> kLow) == middle) {
          ++last[key & (kLowBins - 1)];
        }
      }
      const int32_t* h = tally.hist.get();
      for (int64_t key = 0; h != nullptr && key < kLowBins; ++key) {
        last[key] += h[(int64_t{middle} << kLow) + key];
      }
    }
    last[kLowBins] = t.above;
    ToRankCounts(last.data(), kLowBins);
  }
  t = Take(last.data(), kLowBins, q);
  out->typed_data()[0] = Extend(prefix, kLow, t.d);
  out->typed_data()[1] = t.num;
  return ffi::Error::Success();
}

}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(GsmKeyHistogram, Impl,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<ffi::BufferR0<ffi::S32>>()
                                  .RemainingArgs()
                                  .Attr<int32_t>("shift")
                                  .Attr<bool>("products")
                                  .Attr<int64_t>("sample_stride")
                                  .Ret<ffi::BufferR1<ffi::S32>>());

XLA_FFI_DEFINE_HANDLER_SYMBOL(GsmRadixSelect, SelectImpl,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<ffi::BufferR0<ffi::S32>>()
                                  .RemainingArgs()
                                  .Attr<bool>("products")
                                  .Ret<ffi::BufferR1<ffi::S32>>());
