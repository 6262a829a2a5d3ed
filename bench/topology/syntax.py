"""Plain wording for PyYAML's syntax errors: what was expected, what was found, and where.

PyYAML reports parser states ("expected <block end>, but found '<block
mapping start>'"); a reader needs to hear "this line is indented wrongly" or
"the '{' opened here is never closed", pointed at the place to fix.
"""

from __future__ import annotations

import yaml

#: PyYAML token names -> what a reader sees in the file.
_TOKENS = {
    "'<block mapping start>'": "a 'key:'",
    "'<block sequence start>'": "a '- ' item",
    "'<block entry>'": "a '- ' item",
    "'<block end>'": "the end of the block",
    "'<scalar>'": "a value",
    "'<stream end>'": "the end of the file",
    "<block end>": "the end of the indented block",
}


def _plain(text: str) -> str:
    for token, words in _TOKENS.items():
        text = text.replace(token, words)
    return text.replace("found unexpected end of stream", "found the end of the file")


def _at(mark: yaml.Mark | None) -> str:
    return f"line {mark.line + 1}, column {mark.column + 1}" if mark else "the end"


def describe_yaml_error(err: yaml.MarkedYAMLError) -> tuple[yaml.Mark | None, str]:
    """Where to point and what to say for a PyYAML syntax error."""
    problem = err.problem or "invalid YAML"
    context = err.context or ""
    mark = err.problem_mark or err.context_mark
    if context.startswith("while parsing a flow") and err.context_mark is not None:
        opener = "{" if "mapping" in context else "["
        return err.context_mark, (
            f"YAML syntax error: the '{opener}' opened here is not closed properly: "
            f"{_plain(problem)} at {_at(err.problem_mark)}"
        )
    if context.startswith("while scanning a quoted") and err.context_mark is not None:
        return err.context_mark, (
            "YAML syntax error: the quoted string opened here is not closed: "
            f"expected a closing quote, {_plain(problem)} at {_at(err.problem_mark)}"
        )
    if problem == "mapping values are not allowed here":
        return mark, (
            "YAML syntax error: unexpected ':' here; expected a plain value, got a 'key:' "
            "(check this line's indentation against the line above, or quote the value)"
        )
    if problem.startswith("expected <block end>") and mark is not None:
        found = _plain(problem.split(", ", 1)[1])
        return mark, (
            "YAML syntax error: bad indentation: expected this line to be indented like the "
            f"lines above it, {found} at column {mark.column + 1} (inside the block that "
            f"starts at {_at(err.context_mark)})"
        )
    if "'\\t'" in problem:
        return mark, "YAML syntax error: expected spaces for indentation, found a tab character"
    if context.startswith("expected"):  # e.g. "expected a single document in the stream"
        return mark, f"YAML syntax error: {context}, {_plain(problem)}"
    context = f" {context}" if context else ""
    return mark, f"YAML syntax error: {_plain(problem)}{context}"


def describe_reader_error(err: yaml.reader.ReaderError) -> str:
    """A character YAML refuses (a NUL, a control character): usually a binary file."""
    char = err.character
    code = ord(char) if isinstance(char, str) else char
    return f"not a text file: expected printable YAML text, got the control character U+{code:04X}"
