"""Selftest checks, one module per capability; each registers with ``gpuprobe.tools.selftest.check``."""
