"""The one exception tree of the prompts package: every failure a caller must answer as a 400."""

from __future__ import annotations

__all__ = ["PromptError", "TemplateError"]


class PromptError(ValueError):
    """A prompt, template or batch the platform refuses; `param` names the request field at fault."""

    def __init__(self, param: str, message: str, code: str = "invalid_value") -> None:
        super().__init__(message)
        self.param = param
        self.code = code


class TemplateError(PromptError):
    """A template that does not parse, uses what the sandbox forbids, or lacks/gets unknown variables."""

    def __init__(self, param: str, message: str, code: str = "template_error") -> None:
        super().__init__(param, message, code)
