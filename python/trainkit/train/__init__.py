"""The trainer: schedule, checkpoints, progress, memory fit and the step loop.

Importing this package stays light (no torch, no ray): `loop.py` and `launch.py` import them.
Read `loop.py` top to bottom for what one worker does.
"""
