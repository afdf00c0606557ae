"""CLI subcommands: thin shells that parse arguments, call the library and print."""
