"""`gpuprobe models`: the model registry."""
from __future__ import annotations

import argparse

from gpuprobe.jsonsafe import dumps
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
    def col(key, header, short="", legend="", numeric=True, field=None, raw_key=None):
        return Column(key, header, short, legend, fmt=fmt_text, numeric=numeric, field=field, raw_key=raw_key)

    return [Column("model", "model", fmt=fmt_text, numeric=False, name=True),
            col("family", "family", "fam", "family (layer layout)", numeric=False),
            col("params", "params", "params", "parameters, millions", raw_key="num_params"),
            col("hidden", "hidden", field="hidden_size"), col("layers", "layers", "L", "layers", field="num_layers"),
            col("heads", "heads q/kv", "q/kv", "query / KV heads"),
            col("head_dim", "head dim", "hd", "head dim"),
            col("mlp", "mlp", "mlp", "MLP intermediate size", field="intermediate_size"),
            col("vocab", "vocab", field="vocab_size"),
            col("tied", "tied", "tie", "tied embeddings", numeric=False),
            col("norm", "norm", numeric=False), col("act", "act", numeric=False),
            col("pos", "pos", numeric=False),
            col("qkv_bias", "qkv bias", "bias", "qkv bias", numeric=False),
            col("rope_theta", "rope theta", "theta", "rope theta", raw_key="rope_theta_value", field="rope_theta"),
            col("max_pos", "max pos", "maxpos", "max_position_embeddings", field="max_position_embeddings")]


def _row(s) -> dict:
    return {"model": s.name, "family": s.family, "params": f"{s.num_params() / 1e6:,.1f} M", "num_params": s.num_params(),
            "rope_theta_value": s.rope_theta,
            "hidden": s.hidden_size, "layers": s.num_layers, "heads": f"{s.num_heads}/{s.num_kv_heads}",
            "head_dim": s.head_dim, "mlp": s.intermediate_size, "vocab": s.vocab_size,
            "tied": "yes" if s.tie_word_embeddings else "no", "norm": s.norm, "act": s.activation,
            "pos": s.positional, "qkv_bias": "yes" if s.qkv_bias else "no",
            "rope_theta": f"{s.rope_theta:,.0f}" if s.rope_theta else None, "max_pos": s.max_position_embeddings}


def run(args: argparse.Namespace) -> int:
    specs = [load_model_spec(args.name)] if args.name else list_models()
    if args.json:
        print(dumps([dict(s.to_dict(), num_params=s.num_params()) for s in specs], indent=2))
        return 0
    emit(_columns(), [_row(s) for s in specs], args.format,
         title="gpuprobe models (values from each model's published config.json)")
    return 0
