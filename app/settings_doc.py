"""The manual's settings reference and .env.example, written from the settings themselves.

``python -m app.settings_doc`` (from the repository root) writes docs/settings.md and
.env.example from each field of ``Settings``: its variable, default, choices or bounds and
description; ``--check`` only says which file differs. tests/app/test_settings_doc.py
fails while a committed file differs, so a new setting is documented by its description and
no page restates a default by hand.
"""

from __future__ import annotations

import argparse
import re
import sys
import textwrap
import typing
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from annotated_types import Ge, Gt
from pydantic.fields import FieldInfo

from app.settings import Settings

_LINK = re.compile(r"\[([^\]]+)\]\(([^)]+)\)")
# " ([this](page.md))": an aside that is a link alone, dropped from .env.example's prose
_ASIDE_LINK = re.compile(r" ?\(\[[^\]]+\]\([^)]+\)\)")

PAGE_HEAD = """\
# Settings reference

<!-- Written by `python -m app.settings_doc` from the field descriptions in app/settings.py:
edit those and run it again. tests/app/test_settings_doc.py fails while this page differs. -->

Every setting is an environment variable with the `MMR_` prefix, read once at start-up; a
`.env` file in the working directory is read too (`.env.example` lists every variable with
its default). How the settings fit together: [Configuration](configuration.md).
"""

ENV_HEAD = """\
# Copy to .env and uncomment what you change. `mmr serve` / `make run` read .env from the
# working directory; `docker compose` reads it for the ${...} values in docker-compose.yml.
# Every line shows the default. Written by `python -m app.settings_doc` from app/settings.py.
"""

ENV_TAIL = """\
# docker compose only (not read by the server):
# POSTGRES_PASSWORD=mmr
# BASE_IMAGE=python:3.11-slim
# TORCH_INDEX=https://download.pytorch.org/whl/cpu
"""


def env_name(name: str) -> str:
    """The environment variable of a field."""
    return f"MMR_{name.upper()}"


def env_default(value: Any) -> str:
    """A default as it is written in a .env file (empty for none)."""
    if value is None:
        return ""
    if isinstance(value, Path) and not value.is_absolute():
        return f"./{value}"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def default_markdown(value: Any) -> str:
    """A default as the reference page shows it."""
    text = env_default(value)
    return f"`{text}`" if text else "empty"


def values_markdown(field: FieldInfo) -> str:
    """What a field accepts, from its type and bounds."""
    annotation = field.annotation
    if typing.get_origin(annotation) is typing.Literal:
        return "one of " + ", ".join(f"`{choice}`" for choice in typing.get_args(annotation))
    optional = type(None) in typing.get_args(annotation)
    if optional:
        annotation = next(a for a in typing.get_args(annotation) if a is not type(None))
    kinds: dict[Any, str] = {int: "an integer", float: "a number", str: "text", Path: "a path"}
    text = kinds.get(annotation, str(annotation))
    for bound in field.metadata:
        if isinstance(bound, Ge):
            text += f" >= {env_default(bound.ge)}"
        elif isinstance(bound, Gt):
            text += f" > {env_default(bound.gt)}"
    return text + (", or empty" if optional else "")


def _described(name: str, field: FieldInfo) -> str:
    if not field.description:
        raise ValueError(f"{env_name(name)} has no description: give it one in app/settings.py")
    return field.description


def reference_page() -> str:
    """docs/settings.md: one section per setting, in the order app/settings.py declares them."""
    sections = [PAGE_HEAD]
    for name, field in Settings.model_fields.items():
        sections.append(
            f"## {env_name(name)}\n\n"
            f"Default: {default_markdown(field.default)} · {values_markdown(field)}\n\n"
            f"{_described(name, field)}\n"
        )
    return "\n".join(sections)


def _comment(text: str) -> str:
    """Markdown prose as wrapped comment lines: links become their text, their pages follow."""
    plain = _LINK.sub(r"\1", _ASIDE_LINK.sub("", text))
    pages = [f"docs/{target}" for _, target in _LINK.findall(text)]
    if pages:
        plain += f" See {', '.join(pages)}."
    return textwrap.fill(
        plain, width=98, initial_indent="# ", subsequent_indent="# ", break_on_hyphens=False
    )


def env_example() -> str:
    """.env.example: every setting, commented out at its default, under its description."""
    entries = [ENV_HEAD]
    for name, field in Settings.model_fields.items():
        described = _comment(_described(name, field))
        entries.append(f"{described}\n# {env_name(name)}={env_default(field.default)}\n")
    entries.append(ENV_TAIL)
    return "\n".join(entries)


@dataclass(frozen=True)
class Target:
    """A generated file: its path in the repository and what it must hold."""

    path: str
    render: Callable[[], str]


TARGETS = (Target("docs/settings.md", reference_page), Target(".env.example", env_example))


def main(argv: Sequence[str] | None = None) -> int:
    """Write the files (or, with --check, name those that differ); 0 when all are current."""
    parser = argparse.ArgumentParser(prog="python -m app.settings_doc", description=__doc__)
    parser.add_argument("--check", action="store_true", help="write nothing; exit 1 if stale")
    parser.add_argument("--root", type=Path, default=Path.cwd(), help="the repository root")
    args = parser.parse_args(argv)
    if not (args.root / "pyproject.toml").is_file():
        print(f"{args.root} is not the repository root: run from there", file=sys.stderr)
        return 2
    stale = []
    for target in TARGETS:
        path, text = args.root / target.path, target.render()
        if path.is_file() and path.read_text(encoding="utf-8") == text:
            continue
        if args.check:
            stale.append(target.path)
        else:
            path.write_text(text, encoding="utf-8")
            print(f"wrote {target.path}")
    if stale:
        print(f"out of date: {', '.join(stale)}: run `python -m app.settings_doc`", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
