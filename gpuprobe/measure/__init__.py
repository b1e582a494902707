"""Measurement on a GPU: one point (:mod:`.point`), the ncu target program (:mod:`.target`), the sweep of
points in child processes (:mod:`.sweep`, through :mod:`.executors`), the step timer (:mod:`.timing`), throughput
per batch (:mod:`.throughput`) and model replicas under MPS (:mod:`.replicas`); child processes and NVML
telemetry live below every stage, in :mod:`gpuprobe.system`."""
