"""CLI subcommands. Each module defines COMMAND, HELP, add_arguments(parser) and run(args) -> int.

`dexndm.cli` discovers the modules in this package, so a new subcommand is a new file here.
"""
