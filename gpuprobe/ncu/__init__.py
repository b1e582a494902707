"""Nsight Compute: find and run ncu, read its reports, attribute kernels to ops."""
