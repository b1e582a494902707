"""Selftest checks, one module per capability; each registers with ``gpuprobe.selftest.check``."""
