"""Runs one tool's command line on many argument lists in one process.

    python tests/cli_driver.py tools.evaluate cases.json results.json

cases.json is a list of argument lists (without the program name); results.json is a
list of {"code", "stdout", "stderr"}, one per case, as the shell would see them:
`sys.exit("message")` gives code 1 and the message on stderr, an uncaught exception
its traceback and code 1. One process pays TensorFlow's import once for all cases
(seconds each); a tool's `parse_flags` and `main` are what `app.run` calls.
"""

import contextlib
import importlib
import io
import json
import os
import sys
import traceback

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def run_case(tool, args):
    stdout, stderr = io.StringIO(), io.StringIO()
    code = 0
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
        tool.FLAGS.unparse_flags()
        try:
            tool.main(tool.parse_flags([tool.PROGRAM, *args]))
        except SystemExit as done:
            code = done.code
            if isinstance(code, str):
                print(code, file=sys.stderr)
                code = 1
            code = code or 0
        except Exception:  # noqa: BLE001 -- reported as the interpreter would
            traceback.print_exc()
            code = 1
    return {"code": code, "stdout": stdout.getvalue(), "stderr": stderr.getvalue()}


def main():
    tool_name, cases, results = sys.argv[1:]
    tool = importlib.import_module(tool_name)
    with open(cases) as f:
        outcomes = [run_case(tool, args) for args in json.load(f)]
    with open(results, "w") as f:
        json.dump(outcomes, f)


if __name__ == "__main__":
    main()
