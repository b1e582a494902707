"""The run layer: what each command does, end to end, above the stages it calls.

One module per command's work (the roofline in every mode, report, calibrate, predict, the study
sweep). The command line (``gpuprobe.cli``) only parses and calls into here; the stages (engine,
measure, ncu, nsys, ceilings, calibration, advise, render) never import this package.
"""
