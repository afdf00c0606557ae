"""Benchmarks run by `trainkit bench TARGET`: each prints figures and ratios against named peers
measured in the same run. One module per target, exposing `add_arguments(parser)` and `run(args)`."""
