"""What every stage needs of the machine: child processes ended with their process group and their parent
(:mod:`.children`), and the NVML sampler (:mod:`.telemetry`). Below every stage; imports none."""
