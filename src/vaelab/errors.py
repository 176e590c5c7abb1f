"""The toolkit's own error: one sentence a person can act on (the CLI exits 2 on it)."""


class VaelabError(Exception):
    """Bad input or a refused file: the message names the thing, the value and what was expected."""
