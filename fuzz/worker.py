"""One fuzzing process: ``python3 -m fuzz.worker TARGET [libFuzzer flags] CORPUS_DIR...``.

Started by :mod:`fuzz.runner`. The target (and through it the project's packages) is
imported inside atheris' import hook so that its bytecode reports coverage; then libFuzzer
runs with the remaining arguments. An exception escaping ``test_one_input`` is a crash:
atheris prints it and libFuzzer writes the input to ``-artifact_prefix``.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

#: Top-level packages whose code is instrumented for coverage.
INSTRUMENTED = ("ocigitops", "verifier", "publisher")


def launcher(target: str) -> str:
    """An executable that starts this worker for ``target``.

    libFuzzer re-executes its own command line (``argv[0]`` and the flags) to minimize a
    crash or to merge corpora; ``python3 -m fuzz.worker TARGET`` is not one executable, so
    ``argv[0]`` is this script, kept in ``fuzz/out`` and rewritten only when it changes.
    """
    repo = Path(__file__).resolve().parent.parent
    path = repo / "fuzz" / "out" / f".launch-{target}"
    text = (f'#!/bin/sh\nPYTHONPATH="{repo}${{PYTHONPATH:+:$PYTHONPATH}}" exec'
            f' "{sys.executable}" -m fuzz.worker {target} "$@"\n')
    if not path.exists() or path.read_text() != text:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f"{path.name}.{os.getpid()}")
        tmp.write_text(text)
        tmp.chmod(0o755)
        tmp.replace(path)
    return str(path)


def main(argv: list[str]) -> None:
    import atheris
    from atheris.function_hooks import enabled_hooks
    from atheris.import_hook import instrument_imports

    from fuzz import targets

    if len(argv) < 2 or argv[1] not in targets.TARGETS:
        sys.exit(f"usage: python3 -m fuzz.worker TARGET [libFuzzer args]"
                 f" (targets: {', '.join(targets.TARGETS)})")
    # Lets the fuzzer learn the prefixes str.startswith/endswith look for. (atheris'
    # "RegEx" hook is not used: it breaks on bytes patterns and on match(s, pos).)
    enabled_hooks.add("str")
    with instrument_imports(include=list(INSTRUMENTED)):
        test_one_input = targets.load(argv[1])
    atheris.Setup([launcher(argv[1]), *argv[2:]], test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main(sys.argv)
