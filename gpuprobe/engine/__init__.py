"""Decode engine: decoders with a paged KV cache, NVTX ranges per op, CUDA-graph replay."""
