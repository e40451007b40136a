"""Image, video and FID metrics to compare cached against uncached generations (independent of the caches).

PSNR, SSIM and MSE (scikit-image) compare pairs: two image files, two directories paired by relative path,
two arrays, or two videos frame by frame. FID (pytorch-fid) compares two sets. Every `compute_*` returns
`(mean value, number of pairs)`; see `cache_dit.metrics.pairwise` for the conventions (identical pairs:
PSNR inf, left out of the mean). Torch is imported only when FID is used. CLI: `cache-dit-metrics-cli`.
"""

from .fid import FrechetInceptionDistance, MissingInceptionWeightsError
from .pairwise import (
    PairwiseMetric,
    PairwiseResult,
    compute_mse,
    compute_psnr,
    compute_ssim,
    compute_video_mse,
    compute_video_psnr,
    compute_video_ssim,
    measure_images,
    measure_videos,
)

__all__ = [
    "FrechetInceptionDistance",
    "MissingInceptionWeightsError",
    "PairwiseMetric",
    "PairwiseResult",
    "compute_mse",
    "compute_psnr",
    "compute_ssim",
    "compute_video_mse",
    "compute_video_psnr",
    "compute_video_ssim",
    "measure_images",
    "measure_videos",
]
