"""Expand `--8<--` includes exactly as the site build does (pymdownx.snippets, configured
from mkdocs.yml). Used by the doc tests (docs/conftest.py) and the skill bundle (skill.py)."""

from __future__ import annotations

import os
from functools import cache
from pathlib import Path

import markdown
import yaml
from pymdownx.snippets import SnippetExtension

ROOT = Path(__file__).resolve().parents[2]


class _IgnoreTags(yaml.SafeLoader):
    """mkdocs.yml holds !!python/name tags; read it without importing anything."""


_IgnoreTags.add_multi_constructor("tag:yaml.org,2002:python/", lambda *_args: None)


def _env(loader: yaml.SafeLoader, node: yaml.Node) -> object:
    """`!ENV VAR` or `!ENV [VAR, ..., default]`, as MkDocs resolves it (pyyaml_env_tag)."""
    if isinstance(node, yaml.ScalarNode):
        return os.environ.get(loader.construct_scalar(node))
    items = loader.construct_sequence(node)
    names, default = (items[:-1], items[-1]) if len(items) > 1 else (items, None)
    return next((os.environ[n] for n in names if n in os.environ), default)


_IgnoreTags.add_constructor("!ENV", _env)


def mkdocs_config() -> dict:
    return yaml.load((ROOT / "mkdocs.yml").read_text(), Loader=_IgnoreTags)


def snippet_options() -> dict:
    for ext in mkdocs_config()["markdown_extensions"]:
        if isinstance(ext, dict) and "pymdownx.snippets" in ext:
            options = dict(ext["pymdownx.snippets"])
            options["base_path"] = [str(ROOT / p) for p in options["base_path"]]
            return options
    raise LookupError("pymdownx.snippets is not configured in mkdocs.yml")


@cache
def _preprocessor():
    md = markdown.Markdown(extensions=[SnippetExtension(**snippet_options())])
    return md.preprocessors["snippet"]


def expand_lines(lines: list[str]) -> list[str]:
    """The lines with every include replaced by the included text."""
    return _preprocessor().run(list(lines))


def expand(text: str) -> str:
    return "\n".join(expand_lines(text.splitlines())) + "\n"
