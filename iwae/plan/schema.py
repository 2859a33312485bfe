"""The schema of the `protocol:` and `evaluation:` config sections, generated from the
config classes (`iwae.plan.config`) so that their documentation has one source:

    python -m iwae.plan.schema            # rewrites workflow/schemas/options.schema.yaml

The workflow's schema (workflow/schemas/config.schema.yaml) refers to it; a test checks that
the committed file is what this module generates. Values are checked again, with their
ranges, by the config classes.
"""

from __future__ import annotations

import dataclasses
import sys
import typing
from pathlib import Path

import yaml

from iwae.plan.config import EvalConfig, TrainConfig

PATH = Path(__file__).resolve().parents[2] / "workflow" / "schemas" / "options.schema.yaml"
HEADER = "# Generated from iwae/plan/config.py by `python -m iwae.plan.schema`: edit the help texts there.\n"

_TYPES = {int: "integer", float: "number", bool: "boolean", str: "string"}


def _type(hint) -> dict:
    args = typing.get_args(hint)
    if typing.get_origin(hint) is list:
        return {"type": "array", "items": _type(args[0])}
    if type(None) in args:
        inner = _type(next(a for a in args if a is not type(None)))
        return {"type": [inner["type"], "null"]} if "type" in inner and "items" not in inner else inner
    return {"type": _TYPES[hint]}


def _section(cls, skip: tuple[str, ...] = ()) -> dict:
    hints = cls.field_types()
    properties = {}
    for f in dataclasses.fields(cls):
        if f.name in skip:
            continue
        spec = {"layers": {"type": ["string", "integer"]}}.get(f.name) or _type(hints[f.name])
        properties[f.name] = {"description": f.metadata["help"], **spec}
    return {"type": "object", "properties": properties}


def options_schema() -> dict:
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "description": "The keys of protocol: (iwae.plan.config.TrainConfig) and evaluation: (iwae.plan.config.EvalConfig).",
        "definitions": {
            "protocol": _section(TrainConfig, skip=("data",)),
            "evaluation": _section(EvalConfig),
        },
    }


def render() -> str:
    return HEADER + yaml.safe_dump(options_schema(), sort_keys=False, width=100, allow_unicode=True)


if __name__ == "__main__":
    PATH.write_text(render())
    print(f"wrote {PATH}", file=sys.stderr)
