"""The styles' one exception tree: each names the request field it is about and a code for the envelope."""

from __future__ import annotations

from vidfactory.failures import ErrorType

__all__ = ["InvalidAdapter", "InvalidStyle", "StyleError", "StyleInUse"]


class StyleError(Exception):
    status = 400
    error_type = ErrorType.invalid_input

    def __init__(self, param: str | None, message: str, code: str = "invalid_value") -> None:
        super().__init__(message)
        self.param = param
        self.code = code


class InvalidAdapter(StyleError):
    """An uploaded adapter that is not a safetensors LoRA the base model can load: nothing is stored."""

    def __init__(self, message: str, code: str = "invalid_adapter") -> None:
        super().__init__("file", message, code)


class InvalidStyle(StyleError):
    """A style reference or setting that cannot be used (unknown name, other base model, scale)."""


class StyleInUse(StyleError):
    """Queued or running jobs use the style: it cannot be deleted until they finish or are cancelled."""

    status = 409

    def __init__(self, message: str) -> None:
        super().__init__(None, message, "style_in_use")
