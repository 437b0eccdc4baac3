"""One error type for bad input, formatted so that a user can find and fix the problem in one look."""

from __future__ import annotations

from os import PathLike


class InputError(ValueError):
    """Bad input from a user's file or arguments: the CLI prints it as one line and exits non-zero.

    Example:
        >>> str(InputError("text is empty", file="corpus.jsonl", line=3, field="text"))
        'corpus.jsonl:3: field "text": text is empty'
    """

    def __init__(
        self,
        message: str,
        *,
        file: str | PathLike | None = None,
        line: int | None = None,
        field: str | None = None,
    ) -> None:
        self.file, self.line, self.field, self.reason = file, line, field, message
        where = ""
        if file is not None:
            where = f"{file}:{line}: " if line is not None else f"{file}: "
        elif line is not None:
            where = f"line {line}: "
        if field is not None:
            where += f'field "{field}": '
        super().__init__(where + message)
