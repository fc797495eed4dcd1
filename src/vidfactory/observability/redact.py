"""What a tenant may read of a server-side message: the same words without the server's file paths.

Engine, tokenizer and storage errors name the files they could not use; the operator reads them whole in
the logs, a tenant reads `<path>` in their place (the layout of the server's disks is not theirs to learn).
"""

from __future__ import annotations

import re

__all__ = ["redact_paths"]

path_placeholder = "<path>"
# An absolute POSIX path (two segments or more, so "1/2" or "and/or" are left alone) or a Windows one, not
# inside a URL ("https://host/a/b": its slashes follow ':' '/' or a host character). "~/x" too.
_path = re.compile(r"(?<![\w:/.~-])(?:~|[A-Za-z]:)?(?:[/\\][^\s/\\'\"()<>,;:]+){2,}[/\\]?")


def redact_paths(message: str) -> str:
    return _path.sub(path_placeholder, message)
