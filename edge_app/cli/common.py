"""Helpers shared by the subcommands: loading the model with a readable error."""

from __future__ import annotations

import argparse
import sys

from ..runtime import DEFAULT_MODEL, Classifier, ModelError


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default=str(DEFAULT_MODEL), help="path to the .tflite (its .json manifest beside it)")
    parser.add_argument("--threads", type=int, default=2, help="interpreter threads (default 2)")


def load_classifier(args: argparse.Namespace) -> Classifier | None:
    """The verified classifier, or None after printing why it cannot be used."""
    try:
        return Classifier(args.model, num_threads=args.threads)
    except ModelError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return None


def add_data_dir_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data-dir", dest="data_dir", metavar="DIR",
                        help="records + images (default: EDGE_APP_DATA_DIR, the config file, $XDG_DATA_HOME/edge-app)")
    parser.add_argument("--config", metavar="FILE", help="TOML config file to read data_dir from (also EDGE_APP_CONFIG)")
