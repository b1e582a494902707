"""`gpuprobe models`: the model registry."""
from __future__ import annotations

import argparse
import json

from gpuprobe.specs.models import list_models, load_model_spec
from gpuprobe.render.tables import FORMATS, Column, emit, fmt_text

NAME = "models"
HELP = "list the built-in model architectures (or show one, or a local config.json)"
ORDER = 80


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("name", nargs="?", help="a registry name or a folder holding config.json")
    p.add_argument("--json", action="store_true", help="print JSON (every field, with the parameter count)")
    p.add_argument("--format", choices=FORMATS, default=None,
                   help="table (default on a terminal), tsv (default when piped: `gpuprobe models | grep llama`), "
                        "csv, json")


def _columns():
    def col(key, header, short="", legend="", numeric=True):
        return Column(key, header, short, legend, fmt=fmt_text, numeric=numeric)

    return [Column("model", "model", fmt=fmt_text, numeric=False, name=True),
            col("family", "family", "fam", "family (layer layout)", numeric=False),
            col("params", "params", "params", "parameters, millions"),
            col("hidden", "hidden"), col("layers", "layers", "L", "layers"),
            col("heads", "heads q/kv", "q/kv", "query / KV heads"),
            col("head_dim", "head dim", "hd", "head dim"),
            col("mlp", "mlp", "mlp", "MLP intermediate size"), col("vocab", "vocab"),
            col("tied", "tied", "tie", "tied embeddings", numeric=False),
            col("norm", "norm", numeric=False), col("act", "act", numeric=False),
            col("pos", "pos", numeric=False),
            col("qkv_bias", "qkv bias", "bias", "qkv bias", numeric=False),
            col("rope_theta", "rope theta", "theta", "rope theta"),
            col("max_pos", "max pos", "maxpos", "max_position_embeddings")]


def _row(s) -> dict:
    return {"model": s.name, "family": s.family, "params": f"{s.num_params() / 1e6:,.1f} M",
            "hidden": s.hidden_size, "layers": s.num_layers, "heads": f"{s.num_heads}/{s.num_kv_heads}",
            "head_dim": s.head_dim, "mlp": s.intermediate_size, "vocab": s.vocab_size,
            "tied": "yes" if s.tie_word_embeddings else "no", "norm": s.norm, "act": s.activation,
            "pos": s.positional, "qkv_bias": "yes" if s.qkv_bias else "no",
            "rope_theta": f"{s.rope_theta:,.0f}" if s.rope_theta else None, "max_pos": s.max_position_embeddings}


def run(args: argparse.Namespace) -> int:
    specs = [load_model_spec(args.name)] if args.name else list_models()
    if args.json:
        print(json.dumps([dict(s.to_dict(), num_params=s.num_params()) for s in specs], indent=2, allow_nan=False))
        return 0
    emit(_columns(), [_row(s) for s in specs], args.format,
         title="gpuprobe models (values from each model's published config.json)")
    return 0
