"""The one exception the tokenizer package raises for bad input; the CLI shows its message as one line."""

from safeio import UsageError


class TokenizerError(UsageError):
    """Bad input to a tokenizer: the message names the thing and says what is wrong."""
