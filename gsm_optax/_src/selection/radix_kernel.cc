// One pass of gsm_optax's radix select on the CPU: a histogram of key digits
// over many float32 arrays (native_radix.py next to this file builds, loads
// and calls it; it chooses the digits between the passes).
//
// The key of a non-negative score is its bit pattern read as an integer
// (the sign bit is 0), which orders like the score, NaN above +inf. A pass
// counts, per digit (key >> shift) & (2**width - 1), the keys with
// key >> high == prefix (high = 31 and prefix 0 in the first pass: every
// non-negative key), as radix.py's jax.numpy histogram does.
//
// The arrays are scores, or (with products=true) pairs of gradients and
// parameters whose scores |g * w| are computed here, in registers, and never
// written out: two passes then read the pairs twice and write nothing,
// where scores computed by XLA first would be written to a temporary and
// read back. The products are computed with the calling thread's
// floating-point control word (XLA:CPU flushes denormals to zero), so each
// is the float XLA computes for |g * w|.
//
// The work is split into chunks of the arrays' elements, claimed by the
// calling thread and by tasks on XLA's intra-op thread pool, each worker
// counting into its own histogram.

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <memory>
#include <thread>
#include <utility>
#include <vector>

#if defined(__SSE__)
#include <xmmintrin.h>
#endif

#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

namespace {

constexpr int64_t kChunk = 1 << 16;  // elements per claimed chunk

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

inline uint32_t Bits(float x) {
  uint32_t k;
  std::memcpy(&k, &x, sizeof(k));
  return k;
}

struct Inputs {
  std::vector<Leaf> leaves;
  std::vector<std::pair<int, int64_t>> chunks;  // (leaf, first element)
  ControlWord control;
};

// One pass, shared by its workers. Held by shared_ptr: a task the pool
// starts late, after the pass (or the call) ended, finds no worker slot
// left and returns without touching anything else.
struct Digit {
  uint32_t prefix;
  int high, shift;
  uint32_t mask;
};

struct Pass {
  std::shared_ptr<const Inputs> inputs;
  Digit digit;
  int64_t bins;
  std::vector<std::vector<int32_t>> hists;  // kWays per worker
  std::atomic<int64_t> next{0};
  std::atomic<int64_t> done{0};
  std::atomic<int> workers{0};
};

// Keys that fall in one bin one after another would wait on each other's
// increment; kWays copies of the histogram, taken in turn, break the chain.
constexpr int kWays = 4;
// A later pass counts the few keys of one bucket: kBlock keys are computed
// and tested at once (in vector registers), and only a block holding a
// match is counted one key at a time.
constexpr int kBlock = 16;

template <bool kProducts>
void CountChunk(const Leaf& leaf, int64_t begin, const Digit& digit,
                int32_t* hist, int64_t bins) {
  const int64_t end = std::min(leaf.size, begin + kChunk);
  const float* a = leaf.a;
  const float* b = leaf.b;
  const uint32_t prefix = digit.prefix, mask = digit.mask;
  const int high = digit.high, shift = digit.shift;
  auto key = [a, b](int64_t i) {
    return kProducts ? Bits(std::fabs(a[i] * b[i])) : Bits(a[i]);
  };
  auto count = [&](uint32_t k, int32_t* h) {
    if ((k >> high) == prefix) ++h[(k >> shift) & mask];
  };
  int64_t i = begin;
  if (high == 31 && prefix == 0) {  // the first pass: every key counts
    for (; i + kWays <= end; i += kWays) {
      for (int w = 0; w < kWays; ++w) count(key(i + w), hist + w * bins);
    }
  } else {
    for (; i + kBlock <= end; i += kBlock) {
      uint32_t keys[kBlock];
      uint32_t any = 0;
      for (int j = 0; j < kBlock; ++j) keys[j] = key(i + j);
      for (int j = 0; j < kBlock; ++j) any |= (keys[j] >> high) == prefix;
      if (any) {
        for (int j = 0; j < kBlock; ++j) count(keys[j], hist);
      }
    }
  }
  for (; i < end; ++i) count(key(i), hist);
}

void RunWorker(Pass& pass, bool in_caller) {
  const int id = pass.workers.fetch_add(1);
  if (id >= static_cast<int>(pass.hists.size())) return;
  const Inputs& inputs = *pass.inputs;
  ControlWord saved{};
  if (!in_caller) {
    saved = GetControl();
    SetControl(inputs.control);
  }
  int32_t* hist = pass.hists[id].data();
  const int64_t n = static_cast<int64_t>(inputs.chunks.size());
  for (int64_t c; (c = pass.next.fetch_add(1)) < n;) {
    const auto& [index, begin] = inputs.chunks[c];
    const Leaf& leaf = inputs.leaves[index];
    if (leaf.b != nullptr) {
      CountChunk<true>(leaf, begin, pass.digit, hist, pass.bins);
    } else {
      CountChunk<false>(leaf, begin, pass.digit, hist, pass.bins);
    }
    pass.done.fetch_add(1, std::memory_order_release);
  }
  if (!in_caller) SetControl(saved);
}

ffi::Error Impl(ffi::ThreadPool pool, ffi::BufferR0<ffi::S32> prefix_buffer,
                ffi::RemainingArgs args, int32_t high, int32_t shift,
                bool products, ffi::Result<ffi::BufferR1<ffi::S32>> hist) {
  const int64_t bins = static_cast<int64_t>(hist->element_count());
  if (high < 1 || high > 31 || shift < 0 || shift >= high ||
      bins != (int64_t{1} << (high - shift))) {
    return ffi::Error::InvalidArgument(
        "expected 0 <= shift < high <= 31 and 2**(high - shift) bins");
  }
  const size_t step = products ? 2 : 1;
  if (args.size() % step) {
    return ffi::Error::InvalidArgument(
        "with products=true the arrays come in (gradient, parameter) pairs");
  }
  auto inputs = std::make_shared<Inputs>();
  inputs->control = GetControl();
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
    const int index = static_cast<int>(inputs->leaves.size());
    const int64_t size = static_cast<int64_t>(a->element_count());
    inputs->leaves.push_back(
        {reinterpret_cast<const float*>(a->untyped_data()),
         products ? reinterpret_cast<const float*>(b->untyped_data())
                  : nullptr,
         size});
    for (int64_t begin = 0; begin < size; begin += kChunk) {
      inputs->chunks.emplace_back(index, begin);
    }
  }
  const int32_t prefix = prefix_buffer.typed_data()[0];
  const int64_t threads =
      kCanCopyControl ? std::max<int64_t>(pool.num_threads(), 0) : 0;
  const int workers = static_cast<int>(std::max<int64_t>(
      1, std::min<int64_t>(threads + 1,
                           static_cast<int64_t>(inputs->chunks.size()))));

  auto pass = std::make_shared<Pass>();
  pass->inputs = inputs;
  // A negative prefix (never a non-negative key's) matches no key.
  pass->digit = {prefix < 0 ? 0xffffffffu : static_cast<uint32_t>(prefix),
                 static_cast<int>(high), static_cast<int>(shift),
                 static_cast<uint32_t>(bins - 1)};
  pass->bins = bins;
  pass->hists.assign(workers, std::vector<int32_t>(kWays * bins, 0));
  for (int t = 1; t < workers; ++t) {
    pool.Schedule([pass] { RunWorker(*pass, /*in_caller=*/false); });
  }
  RunWorker(*pass, /*in_caller=*/true);
  const int64_t n = static_cast<int64_t>(inputs->chunks.size());
  while (pass->done.load(std::memory_order_acquire) < n) {
    std::this_thread::yield();
  }
  int32_t* out = hist->typed_data();
  for (int64_t bin = 0; bin < bins; ++bin) {
    int32_t total = 0;
    for (const auto& h : pass->hists) {
      for (int w = 0; w < kWays; ++w) total += h[w * bins + bin];
    }
    out[bin] = total;
  }
  return ffi::Error::Success();
}

}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(GsmKeyHistogram, Impl,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<ffi::BufferR0<ffi::S32>>()
                                  .RemainingArgs()
                                  .Attr<int32_t>("high")
                                  .Attr<int32_t>("shift")
                                  .Attr<bool>("products")
                                  .Ret<ffi::BufferR1<ffi::S32>>());
