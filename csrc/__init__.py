"""CUDA microbenchmark sources, shipped as package data and compiled at run time (see gpuprobe.ceilings)."""
