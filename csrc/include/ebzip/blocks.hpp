// How an array is cut into independent blocks (the stream's chunks).
//
// The array is viewed through its prediction shape (size-1 axes dropped,
// axes beyond 4 merged into the first). Blocks keep the trailing axes whole
// and split one axis, so each block is a contiguous range of the flattened
// array with its own shape of at most 4 dims. The target block size is a
// stream parameter (block_elems), so decoders never guess it.
#pragma once
#include "hostdevice.hpp"
#include "lorenzo.hpp"

namespace ebzip {

struct PredShape {
  int ndim = 0;                      // 0 only for empty or single-element arrays
  int64_t n[kMaxPredDims] = {1, 1, 1, 1};
};

struct BlockGrid {
  int ndim = 0;                      // prediction dims
  int64_t n[kMaxPredDims] = {1, 1, 1, 1};
  int split_axis = 0;                // axis that is cut; axes before it are iterated
  int64_t inner = 1;                 // elements per index of split_axis
  int64_t seg = 1;                   // split_axis indices per block
  int64_t segs_per_outer = 1;
  int64_t n_blocks = 0;
  int64_t total = 0;

  struct Block {
    int64_t start;                   // first element (flat index)
    int ndim;                        // dims of the block shape
    int64_t shape[kMaxPredDims];
    int64_t count;
  };

  EBZ_HD static BlockGrid make(const PredShape& ps, int64_t block_elems) {
    BlockGrid g;
    g.ndim = ps.ndim;
    g.total = 1;
    for (int k = 0; k < ps.ndim; ++k) { g.n[k] = ps.n[k]; g.total *= ps.n[k]; }
    if (g.total == 0) { g.n_blocks = 0; return g; }
    if (ps.ndim == 0) { g.n_blocks = 1; g.split_axis = 0; g.seg = 1; return g; }
    int k = ps.ndim - 1;
    int64_t inner = 1;
    while (k >= 0 && inner * ps.n[k] <= block_elems) { inner *= ps.n[k]; --k; }
    if (k < 0) {  // the whole array is one block
      g.split_axis = 0; g.inner = inner / ps.n[0]; g.seg = ps.n[0]; g.segs_per_outer = 1; g.n_blocks = 1;
      return g;
    }
    g.split_axis = k;
    g.inner = inner;
    g.seg = block_elems / inner > 0 ? block_elems / inner : 1;
    g.segs_per_outer = (ps.n[k] + g.seg - 1) / g.seg;
    int64_t outer = 1;
    for (int j = 0; j < k; ++j) outer *= ps.n[j];
    g.n_blocks = outer * g.segs_per_outer;
    return g;
  }

  EBZ_HD Block block(int64_t b) const {
    Block blk;
    if (ndim == 0) { blk.start = 0; blk.ndim = 0; blk.count = 1; return blk; }
    const int64_t outer = b / segs_per_outer, s = b % segs_per_outer;
    const int64_t len_k = n[split_axis];
    const int64_t first = s * seg;
    const int64_t len = (first + seg <= len_k) ? seg : len_k - first;
    blk.start = outer * len_k * inner + first * inner;
    // Block shape: (len, n[split_axis+1:]), with a leading length of 1 dropped.
    int d = 0;
    if (len > 1 || split_axis == ndim - 1) blk.shape[d++] = len;
    for (int j = split_axis + 1; j < ndim; ++j) blk.shape[d++] = n[j];
    blk.ndim = d;
    blk.count = len * inner;
    return blk;
  }
};

}  // namespace ebzip
