"""The `perceptsr` command line: the parser (`main.py`) and the command functions (`commands.py`)."""
