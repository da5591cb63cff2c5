"""The generated references: the tenant config from its pydantic models, the command line from
its argparse parsers. Written once, in the code; this file only lays them out.

    python docs/gen_reference.py [OUT_DIR]      # writes reference/config.md and reference/cli.md

`mkdocs build` / `mkdocs serve` run it as a hook (mkdocs.yml `hooks:`): `on_files` adds the two
pages to the site without writing them into docs/.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import types
import typing
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

from pydantic import BaseModel
from pydantic_core import PydanticUndefined

REPO = Path(__file__).resolve().parents[1]
# Runs from a checkout without installing, like scheduler.py.
if str(REPO / "src") not in sys.path:
    sys.path.insert(0, str(REPO / "src"))

CONFIG_PAGE = "reference/config.md"
CLI_PAGE = "reference/cli.md"


# --- the tenant config -------------------------------------------------------------------------


def _nested_model(annotation: Any) -> type[BaseModel] | None:
    """The config section a field holds (also inside `X | None`), or None for a plain value."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in typing.get_args(annotation):
        if isinstance(arg, type) and issubclass(arg, BaseModel):
            return arg
    return None


def config_fields(
    model: type[BaseModel] | None = None, prefix: str = ""
) -> Iterator[tuple[str, Any, type[BaseModel]]]:
    """Every field of the tenant config, depth first: (dotted YAML key, FieldInfo, its model)."""
    if model is None:
        from pdmflow.config import TenantConfig

        model = TenantConfig
    for name, field in model.model_fields.items():
        key = f"{prefix}{field.alias or name}"
        yield key, field, model
        nested = _nested_model(field.annotation)
        if nested is not None:
            yield from config_fields(nested, f"{key}.")


def _type_name(annotation: Any) -> str:
    if annotation is type(None):
        return "null"
    if annotation is Any:
        return "any"
    if annotation is datetime:
        return "date-time"
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is typing.Literal:
        return "one of " + ", ".join(str(arg) for arg in args)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_name(arg) for arg in args)
    if origin is not None:
        inner = ", ".join(_type_name(arg) for arg in args)
        return f"{origin.__name__}[{inner}]"
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return "section"
    return getattr(annotation, "__name__", str(annotation))


def _default(field: Any) -> str:
    if field.default is PydanticUndefined and field.default_factory is None:
        return "required"
    value = field.get_default(call_default_factory=True)
    if isinstance(value, BaseModel):
        return "(section)"
    return json.dumps(value, default=str)


def _cell(text: str, code: bool = False) -> str:
    """Text safe inside a Markdown table cell (inside backticks when `code`)."""
    text = " ".join(text.split()).replace("|", "\\|")
    return text if code else text.replace("<", "&lt;")


def config_reference() -> str:
    """The tenant-config reference page: one table per section, every key of TenantConfig."""
    from pdmflow.config import TenantConfig

    sections: dict[str, list[tuple[str, Any]]] = {"": []}
    docs: dict[str, str] = {"": TenantConfig.__doc__ or ""}
    for key, field, _ in config_fields():
        parent = key.rpartition(".")[0]
        sections.setdefault(parent, []).append((key, field))
        nested = _nested_model(field.annotation)
        if nested is not None:
            sections.setdefault(key, [])
            docs[key] = nested.__doc__ or ""
    lines = [
        "# Tenant config reference",
        "",
        "Generated from the pydantic models in `src/pdmflow/config/` (`docs/gen_reference.py`"
        " runs in every `mkdocs build`): each key's type, default and description are written "
        "once, in the code. One YAML file per tenant in `configs/`; an unknown key or a value "
        "of the wrong type is refused with one line naming the file and the key.",
        "",
    ]
    for section, fields in sections.items():
        title = f"`{section}`" if section else "Top level"
        lines += [f"## {title}", ""]
        doc = " ".join((docs.get(section) or "").split())
        if doc and section:
            lines += [doc, ""]
        lines += ["| key | type | default | description |", "|---|---|---|---|"]
        for key, field in fields:
            lines.append(
                f"| `{key}` | {_cell(_type_name(field.annotation))} | "
                f"`{_cell(_default(field), code=True)}` | {_cell(field.description or '')} |"
            )
        lines.append("")
    return "\n".join(lines)


# --- the command line --------------------------------------------------------------------------


def _scheduler_parser() -> argparse.ArgumentParser:
    spec = importlib.util.spec_from_file_location("pdmflow_scheduler_cli", REPO / "scheduler.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    parser = module._parser()
    parser.prog = "python scheduler.py"
    return parser


def cli_parsers() -> list[tuple[str, str, argparse.ArgumentParser]]:
    """(command, what it does, its parser) for `pdmflow`, each subcommand and scheduler.py."""
    from pdmflow.cli import _parser

    root = _parser()
    found = [("pdmflow", root.description or "", root)]
    for action in root._actions:
        if isinstance(action, argparse._SubParsersAction):
            helps = {choice.dest: choice.help or "" for choice in action._choices_actions}
            for name, sub in action.choices.items():
                found.append((f"pdmflow {name}", helps.get(name, ""), sub))
    scheduler = _scheduler_parser()
    found.append(("python scheduler.py", scheduler.description or "", scheduler))
    return found


def cli_options(parser: argparse.ArgumentParser) -> list[argparse.Action]:
    """A parser's own options and arguments (not -h, not the subcommand chooser)."""
    return [
        action
        for action in parser._actions
        if not isinstance(action, argparse._HelpAction | argparse._SubParsersAction)
    ]


def cli_reference() -> str:
    """The command-line reference page: every subcommand and option with its help."""
    lines = [
        "# Command-line reference",
        "",
        "Generated from the argparse parsers in `src/pdmflow/cli.py` and `scheduler.py` "
        "(`docs/gen_reference.py` runs in every `mkdocs build`). `pdmflow` is installed with "
        "the package; `python -m pdmflow.cli` is the same command, and MLproject's entry "
        "points call it.",
        "",
    ]
    for command, summary, parser in cli_parsers():
        lines += [f"## `{command}`", ""]
        if summary:
            lines += [_cell(summary), ""]
        usage = " ".join(parser.format_usage().split()).removeprefix("usage: ")
        lines += ["```", usage, "```", ""]
        options = cli_options(parser)
        if not options:
            continue
        lines += ["| option | default | help |", "|---|---|---|"]
        for action in options:
            names = ", ".join(action.option_strings) or action.dest
            if action.required:
                default = "required"
            elif action.default in (None, False, []) or action.default is argparse.SUPPRESS:
                default = "–"
            else:
                default = f"`{_cell(str(action.default), code=True)}`"
            choices = f" (one of {', '.join(map(str, action.choices))})" if action.choices else ""
            lines.append(f"| `{names}` | {default} | {_cell(action.help or '')}{choices} |")
        lines.append("")
    return "\n".join(lines)


PAGES = {CONFIG_PAGE: config_reference, CLI_PAGE: cli_reference}


# --- mkdocs hook ---------------------------------------------------------------------------


def on_files(files: Any, config: Any) -> Any:
    """mkdocs hook: add the generated pages to the site (nothing is written into docs/)."""
    from mkdocs.structure.files import File

    for page, build in PAGES.items():
        files.append(File.generated(config, page, content=build()))
    return files


def main(argv: list[str] | None = None) -> int:
    out = Path((argv if argv is not None else sys.argv[1:] or ["."])[0])
    for page, build in PAGES.items():
        path = out / page
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(build())
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
