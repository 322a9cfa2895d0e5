"""The one exception makemore raises for bad input; the CLI turns it into one red line and exit code 2."""

from safeio import UsageError


class MakemoreError(UsageError):
    """Bad input: the message names the thing (a file, an argument in `backquotes`) and says what is wrong."""
