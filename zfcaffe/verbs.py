"""The command line's verbs, each declared next to the recipe it runs (not in one
growing cli.py). A verb names the shared option groups it takes; the CLI defines
those groups once and builds what they describe (the net, the preprocessing, the
output folder) into a Context for the verb's function.

Shared groups: "net" (prototxt, weights and the net options), "preprocess",
"keep_size", "head" (--labels, --class-output), "detect" (--threshold,
--detections: detectors, segmenters, pose nets), "engine" (where a scan runs: local
or Ray), "mode:DEFAULT" (projection or gradient modes), "output:DEFAULT" (-o). Every
verb has --quiet.
"""
from __future__ import annotations

import dataclasses
from typing import Callable


@dataclasses.dataclass
class Verb:
    name: str
    help: str
    groups: tuple[str, ...]
    arguments: Callable | None      # arguments(parser): the verb's own options
    run: Callable                   # run(ctx, args) -> the written path, or an exit status


VERBS: dict[str, Verb] = {}


def verb(name: str, help: str, groups: tuple[str, ...] = (), arguments: Callable | None = None):
    """Register `run(ctx, args)` as the verb `name`; a name is registered once."""
    def register(run: Callable) -> Callable:
        if name in VERBS:
            raise ValueError(f"verb '{name}' is registered twice ({VERBS[name].run.__module__} and {run.__module__})")
        VERBS[name] = Verb(name, help, tuple(groups), arguments, run)
        return run
    return register


def int_between(low: int, high: int | None = None):
    """An argparse type: a whole number in [low, high]."""
    import argparse

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"'{text}': expected a whole number") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"{value}: expected a number >= {low}")
        if high is not None and value > high:
            raise argparse.ArgumentTypeError(f"{value}: expected a number <= {high}")
        return value
    parse.__name__ = f"int >= {low}"
    return parse


def layer_list(args) -> list[str] | None:
    """--layers a,b,c as a list; None where the option is absent or empty (the verb's default)."""
    return [s for s in args.layers.split(",") if s] if getattr(args, "layers", None) else None


#: argparse types for counts (>= 1) and sizes where 0 means "the default" (>= 0)
positive_int = int_between(1)
non_negative_int = int_between(0)
