"""SplitBatchNorm: batch-norm statistics over S chunks of the batch, as S GPUs would compute them.

It lives in :mod:`selfsup.distributed` (the core's distributed equivalence check builds its
one-process reference with it, and the core imports no plugin); parts and bundles may import
it from either place.
"""

from __future__ import annotations

from selfsup.distributed import SplitBatchNorm, batch_norm_splits, convert_split_batchnorm

__all__ = ["SplitBatchNorm", "batch_norm_splits", "convert_split_batchnorm"]
