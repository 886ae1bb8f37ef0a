"""The `perceptsr` command line: every parser (`parser.py`), the entry point and its one-line errors (`main.py`,
`messages.py`), and the command functions, which take typed arguments (`commands.py`, `measure.py`)."""
