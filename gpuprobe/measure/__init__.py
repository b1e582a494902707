"""Measurement on a GPU: one point (:mod:`.point`), the ncu target program (:mod:`.target`), the sweep of
points in child processes (:mod:`.sweep`, :mod:`.children`), the step timer (:mod:`.timing`), throughput
per batch (:mod:`.throughput`), NVML telemetry (:mod:`.telemetry`) and model replicas under MPS (:mod:`.replicas`)."""
