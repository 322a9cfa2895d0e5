"""The one exception makemore raises for bad input; the CLI turns it into one red line and exit code 2."""


class MakemoreError(ValueError):
    """Bad input: the message names the thing (a file, an option) and says what is wrong."""
