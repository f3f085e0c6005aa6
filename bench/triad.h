// STREAM-style triad bandwidth, the yardstick the benchmarks report their bandwidth against. The
// measurement lives in the library (kvcache/measure/triad.h) so `kvstream bench` reports the same
// yardstick; this header keeps the benchmarks' spelling.
#pragma once

#include "kvcache/measure/triad.h"

namespace kvcache::bench {

using kvcache::measure::triad_bandwidth;

}  // namespace kvcache::bench
