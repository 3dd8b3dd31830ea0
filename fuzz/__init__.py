"""Coverage-guided fuzzing of the parsers that read untrusted bytes (atheris).

``python3 -m fuzz run [--seconds N] [TARGET...]`` fuzzes each target in its own process;
``fuzz/targets/`` holds one module per parser, ``fuzz/corpus/<target>/`` the committed seed
inputs and ``fuzz/regressions/<target>/`` every reproducer found so far, which
``tests/unit/test_fuzz_regressions.py`` replays without atheris.

This package imports no project code at import time: the fuzzing worker must import the
parsers inside atheris' instrumentation hook for coverage to be recorded.
"""
