"""Templates: a named form (industry, style, keywords, camera, mood, duration, size, an optional
reference image) whose body renders to a prompt through a sandboxed Jinja2 environment.

The sandbox is narrower than Jinja's own: a prompt needs substitution and conditions, not a program.
No loops, macros, includes, calls or arithmetic that multiplies (each is a way to make one request burn
CPU or memory), no globals, and only filters whose output is no longer than their input. A variable
the body uses but nobody gave is an error (StrictUndefined), and so is a variable given that the body
never uses (a misspelt name would otherwise be silently dropped).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import jinja2
from jinja2 import meta, nodes
from jinja2.sandbox import ImmutableSandboxedEnvironment

from vidfactory.prompts.errors import TemplateError

__all__ = [
    "Rendered",
    "Template",
    "TemplateImage",
    "body_chars_max",
    "check_template",
    "declared_variables",
    "name_pattern",
    "render",
    "variable_chars_max",
    "variable_name_pattern",
    "variables_max",
]

body_chars_max = 4000
variable_chars_max = 500
variables_max = 32
name_pattern = re.compile(r"[a-z0-9][a-z0-9_-]{0,63}")
variable_name_pattern = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,39}")

# Node types a prompt body may not contain: loops and recursion (CPU), calls (methods such as
# str.ljust(10**9) allocate at will), inheritance and includes (no loader), and the operators that
# multiply sizes or numbers ("x" * n, n ** m, "%99999999s" % x).
forbidden_nodes: dict[type[nodes.Node], str] = {
    nodes.For: "loops", nodes.Macro: "macros", nodes.CallBlock: "call blocks", nodes.Call: "calls",
    nodes.FilterBlock: "filter blocks", nodes.Include: "includes", nodes.Import: "imports",
    nodes.FromImport: "imports", nodes.Extends: "extends", nodes.Block: "blocks",
    nodes.Mul: "'*'", nodes.Pow: "'**'", nodes.Mod: "'%'", nodes.FloorDiv: "'//'", nodes.Div: "'/'",
}
# Filters whose output is never longer than their input (join, replace, center, format can grow it).
allowed_filters = ("capitalize", "d", "default", "first", "last", "length", "lower", "title", "trim",
                   "truncate", "upper", "wordcount")


@dataclass(frozen=True)
class TemplateImage:
    """A template's stored reference image (image-to-video): each job made from the template gets a copy."""

    key: str  # in storage; names the bytes' SHA-256, so a replaced image is a new file
    sha256: str
    width: int
    height: int
    content_type: str


@dataclass(frozen=True)
class Template:
    """A named form. `body` is Jinja2 source; form fields are variables it may use, and a request's
    variables may override them. `seconds` and `size` are defaults for the video."""

    name: str
    body: str
    language: str = "en"
    description: str = ""
    industry: str = ""
    style: str = ""
    keywords: tuple[str, ...] = ()
    camera: str = ""
    mood: str = ""
    seconds: int | None = None
    size: str | None = None
    reference_image: str | None = None  # an http(s) URL saved before images were stored: never fetched
    reference: TemplateImage | None = None  # the stored image, for models that accept one
    defaults: dict[str, str] = field(default_factory=dict)
    default_style: str | None = None  # the tenant's style (its id) the template's videos get by default
    default_style_scale: float | None = None  # None: that style's own default scale

    def form(self) -> dict[str, str]:
        """The form fields that are filled in: an empty one is undefined to the body, so `|default`
        applies and a body that needs it says so."""
        separator = "、" if self.language == "zh" else ", "
        values = {"industry": self.industry, "style": self.style, "keywords": separator.join(self.keywords),
                  "camera": self.camera, "mood": self.mood}
        return {name: value for name, value in values.items() if value}


@dataclass(frozen=True)
class Rendered:
    prompt: str
    variables: dict[str, str]  # what the request gave (after defaults), as recorded on the job
    seconds: int | None
    size: str | None
    reference_image: str | None


def _environment() -> ImmutableSandboxedEnvironment:
    env = ImmutableSandboxedEnvironment(undefined=jinja2.StrictUndefined, autoescape=False,
                                        keep_trailing_newline=False)
    env.globals.clear()
    env.filters = {name: env.filters[name] for name in allowed_filters}
    return env


def _parse(env: ImmutableSandboxedEnvironment, body: str) -> tuple[nodes.Template, set[str]]:
    """The checked syntax tree and the names the body uses (form fields included)."""
    if not body.strip():
        raise TemplateError("body", "template body is empty")
    if len(body) > body_chars_max:
        raise TemplateError("body", f"template body is over {body_chars_max} characters")
    try:
        tree = env.parse(body)
        _check_nodes(tree)
        return tree, set(meta.find_undeclared_variables(tree))
    except jinja2.TemplateSyntaxError as exc:
        raise TemplateError("body", f"template syntax error on line {exc.lineno}: {exc.message}") from exc
    except RecursionError as exc:  # the parser and visitors recurse once per nesting level
        raise TemplateError("body", "template is nested too deeply") from exc


def _check_nodes(tree: nodes.Template) -> None:
    for node_type, what in forbidden_nodes.items():
        if tree.find(node_type) is not None:
            raise TemplateError("body", f"templates may not use {what}")
    for node in tree.find_all(nodes.Filter):
        if node.name not in allowed_filters:
            raise TemplateError("body", f"filter {node.name!r} is not allowed; allowed: {', '.join(allowed_filters)}")


def declared_variables(body: str) -> set[str]:
    """The names a body uses (form fields included)."""
    return _parse(_environment(), body)[1]


def check_template(template: Template) -> set[str]:
    """Refuse a template that could never render; returns the variables a request may give (those the
    body uses that neither the filled-in form nor the template's defaults supply)."""
    if name_pattern.fullmatch(template.name) is None:
        raise TemplateError("name", "template names are 1–64 lowercase letters, digits, '-' or '_'")
    declared = declared_variables(template.body)
    for name in template.defaults:
        if name not in declared:
            raise TemplateError("defaults", f"default for {name!r}, which the body never uses")
    return declared - set(template.form()) - set(template.defaults)


def _check_values(variables: dict[str, Any]) -> dict[str, str]:
    if len(variables) > variables_max:
        raise TemplateError("variables", f"at most {variables_max} variables")
    for name, value in variables.items():
        if not isinstance(name, str) or variable_name_pattern.fullmatch(name) is None:
            raise TemplateError("variables", f"variable name {name!r} is not an identifier")
        if not isinstance(value, str):
            raise TemplateError(f"variables.{name}", f"variable {name!r} must be a string")
        if len(value) > variable_chars_max:
            raise TemplateError(f"variables.{name}", f"variable {name!r} is over {variable_chars_max} characters")
    return dict(variables)


def render(template: Template, variables: dict[str, Any], chars_max: int) -> Rendered:
    """Render to a prompt of at most `chars_max` characters. Raises TemplateError naming every missing
    or unknown variable."""
    assert chars_max > 0
    given = _check_values(variables)
    env = _environment()
    tree, declared = _parse(env, template.body)
    unknown = sorted(set(given) - declared)
    if unknown:
        raise TemplateError("variables", f"template {template.name!r} has no variable(s) {', '.join(unknown)}; "
                                         f"it uses: {', '.join(sorted(declared)) or 'none'}")
    context = {**template.form(), **template.defaults, **given}
    try:
        text = env.from_string(tree).render(context)
    except jinja2.UndefinedError as exc:
        missing = sorted(declared - set(context))
        raise TemplateError("variables", f"template {template.name!r} is missing a variable: {exc.message} "
                                         f"(it uses, and nobody gave: {', '.join(missing)})") from exc
    except (jinja2.TemplateError, TypeError, ValueError, ArithmeticError, RecursionError) as exc:
        raise TemplateError("variables", f"template {template.name!r} could not render: {exc}") from exc
    prompt = " ".join(text.split())
    if not prompt:
        raise TemplateError("variables", f"template {template.name!r} rendered an empty prompt")
    if len(prompt) > chars_max:
        raise TemplateError("variables", f"template {template.name!r} rendered {len(prompt)} characters; "
                                         f"prompts hold at most {chars_max}")
    return Rendered(prompt=prompt, variables={**template.defaults, **given}, seconds=template.seconds,
                    size=template.size, reference_image=template.reference_image)
