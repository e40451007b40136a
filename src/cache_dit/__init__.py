"""cache-dit: training-free cache acceleration for diffusion transformers."""
