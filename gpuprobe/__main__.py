"""``python -m gpuprobe``: the command line."""
from gpuprobe.cli import main

raise SystemExit(main())
