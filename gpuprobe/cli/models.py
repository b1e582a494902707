"""`gpuprobe models`: the model registry."""
from __future__ import annotations

import argparse
import json

from gpuprobe.specs.models import list_models, load_model_spec

NAME = "models"
HELP = "list the built-in model architectures (or show one, or a local config.json)"
ORDER = 80


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("name", nargs="?", help="a registry name or a folder holding config.json")
    p.add_argument("--json", action="store_true", help="print JSON")


def run(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table


    specs = [load_model_spec(args.name)] if args.name else list_models()
    if args.json:
        print(json.dumps([dict(s.to_dict(), num_params=s.num_params()) for s in specs], indent=2))
        return 0
    t = Table(title="gpuprobe models (values from each model's published config.json)")
    for col in ("model", "family", "params", "hidden", "layers", "heads q/kv", "head dim", "mlp",
                "vocab", "tied", "norm", "act", "pos", "qkv bias", "rope theta", "max pos"):
        t.add_column(col, justify="right" if col not in ("model", "family", "norm", "act", "pos") else "left")
    for s in specs:
        t.add_row(s.name, s.family, f"{s.num_params() / 1e6:,.1f} M", str(s.hidden_size), str(s.num_layers),
                  f"{s.num_heads}/{s.num_kv_heads}", str(s.head_dim), str(s.intermediate_size),
                  str(s.vocab_size), "yes" if s.tie_word_embeddings else "no", s.norm, s.activation,
                  s.positional, "yes" if s.qkv_bias else "no",
                  f"{s.rope_theta:,.0f}" if s.rope_theta else "-", str(s.max_position_embeddings))
    Console().print(t)
    return 0
