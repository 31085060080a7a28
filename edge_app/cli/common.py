"""Helpers shared by the subcommands: loading the model with a readable error.

Nothing heavy is imported here: building the parser (`edge-app --help`) must not
load NumPy, OpenCV or the runtime; the subcommand's `run` imports what it needs.
"""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..runtime import Classifier


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default=None,
                        help="path to the .tflite, its .json manifest beside it "
                             "(default: the shipped models/student_fp16.tflite)")
    parser.add_argument("--threads", type=int, default=2, help="interpreter threads (default 2)")


def load_classifier(args: argparse.Namespace) -> Classifier | None:
    """The verified classifier, or None after printing why it cannot be used."""
    from ..runtime import DEFAULT_MODEL, Classifier, ModelError

    try:
        return Classifier(args.model or DEFAULT_MODEL, num_threads=args.threads)
    except ModelError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return None


def add_data_dir_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data-dir", dest="data_dir", metavar="DIR",
                        help="records + images (default: EDGE_APP_DATA_DIR, the config file, $XDG_DATA_HOME/edge-app)")
    parser.add_argument("--config", metavar="FILE", help="TOML config file to read data_dir from (also EDGE_APP_CONFIG)")
