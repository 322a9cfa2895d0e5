"""Safe file I/O and one-line errors for command-line tools: what makemore and tokenizer share.

- `files`: atomic writes, the one rule for outputs (`check_output`), whole-file and streamed
  UTF-8 input with clear errors, `shown` (a value cut for a message).
- `cli`: `clean_errors` (a UsageError becomes one red line and exit code 2), the stderr console,
  `print_json`, output that survives a terminal without the characters.
It knows nothing of tokenizers or models.
"""

import functools


class UsageError(ValueError):
    """Bad input: the message names the thing (a file, an argument in `backquotes`) and says what is wrong."""


def raises(error: type[UsageError]):
    """Decorate a package's public function so that a UsageError from these helpers reaches its callers
    as the package's own `error` type (a subclass), with the same words."""

    def decorate(fn):
        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            try:
                return fn(*args, **kwargs)
            except UsageError as e:
                if isinstance(e, error):
                    raise
                raise error(str(e)) from None

        return wrapper

    return decorate
