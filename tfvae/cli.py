"""What every command line of tfvae shares: one line for bad input, one for Ctrl-C.

Bad input ends with the line 'program: error: ...' and status 1 (`fail`): arguments a
tool does not take (`start_tool`), a bad flag or flagfile (`flags_parser`, absl's own
words on one line), a bad count (`count_flag`, the words of `checks.check_count`).
Ctrl-C ends with 'program: interrupted; <what was kept>' and status 130, running out
of memory with 'program: error: out of memory (...); <what to lower>; <what was kept>'
and status 1 (`interruptible`). A tool's `main` is

    @cli.interruptible(PROGRAM, "nothing was written.")
    def main(argv):
        cli.start_tool(PROGRAM, argv)
        ...

    if __name__ == "__main__":
        app.run(main, flags_parser=cli.flags_parser(PROGRAM))

Needs only absl and numpy (through `checks`), so that the LiteRT path of
`tools.sample` runs where TensorFlow is not installed.
"""

import functools
import re
import signal
import sys

from absl import flags, logging

from tfvae import checks

# absl's help flags (`app.define_help_flags`), which exit with status 1 after the help.
HELP_FLAGS = ("help", "helpshort", "helpfull", "helpxml", "?", "h")


def start_tool(program, argv, arguments=0, usage=None):
    """The opening every tool's `main` shares. `argv` (the program, then its positional
    arguments) must hold `arguments` of them, a count or a (fewest, most) pair, else one
    line (`usage` when given, the unexpected arguments otherwise) and status 1. absl
    logs at WARNING unless --verbosity was given: a tool prints its results, not
    TensorFlow's INFO lines."""
    fewest, most = (arguments, arguments) if isinstance(arguments, int) else arguments
    if not fewest <= len(argv) - 1 <= most:
        fail(program, f"usage: {usage}" if usage
             else f"unexpected arguments: {' '.join(argv[1 + most:])}")
    if not flags.FLAGS["verbosity"].present:
        logging.set_verbosity(logging.WARNING)


def fail(program, message):
    """Exits with status 1 and the line 'program: error: message'."""
    sys.exit(f"{program}: error: {message}")


def flag_error(error):
    """absl's message for a bad flag or flagfile, in one line."""
    return str(error).splitlines()[0].removeprefix("ERROR:: ")


def flags_parser(program, flag_values=None):
    """An absl `flags_parser` for `app.run` that parses into `flag_values` (absl's FLAGS
    when None), reports a bad flag in one line and exits with status 0 after the help
    that was asked for."""

    def parse(argv):
        try:
            return (flags.FLAGS if flag_values is None else flag_values)(argv)
        except flags.Error as error:
            fail(program, flag_error(error))
        except SystemExit as done:
            asked = any(arg.split("=")[0].lstrip("-") in HELP_FLAGS for arg in argv[1:])
            sys.exit(0 if asked and done.code == 1 else done.code)

    return parse


def count_flag(name, default, help_text, maximum=None):
    """An absl integer flag checked by `checks.check_count` at parse time."""
    flags.DEFINE_integer(name, default, help_text)
    flags.register_validator(name, lambda v: _is_count(v, maximum),
                             message=f"{checks.count_message('--' + name, maximum)}.")


def _is_count(value, maximum):
    try:
        checks.check_count(value, maximum=maximum)
    except checks.InputError:
        return False
    return True


def interruptible(program, kept, smaller="free memory or use a machine with more"):
    """Decorates a tool's `main`: Ctrl-C (SIGINT) ends it with status 130 (128 +
    SIGINT, as shells report it) and the line 'program: interrupted; <kept>', where
    `kept` says what was written, not a traceback; running out of memory ends it with
    status 1 and one line that says so, what to lower (`smaller`: the tool's flags
    that set how much it holds at once) and `kept`.

    Whatever a SIGINT ends in counts: TensorFlow can turn the KeyboardInterrupt raised
    inside its Python code into another error (seen: a ValueError from a tf.function
    call whose argument list the interrupt cut short).
    """

    def decorate(main):
        @functools.wraps(main)
        def run(argv):
            interrupted = []

            def on_sigint(signum, frame):
                interrupted.append(signum)
                raise KeyboardInterrupt

            ours = signal.getsignal(signal.SIGINT) is signal.default_int_handler
            if ours:  # not where SIGINT is ignored (nohup, `&`) or handled already
                signal.signal(signal.SIGINT, on_sigint)
            try:
                return main(argv)
            except BaseException as error:
                if not (interrupted or isinstance(error, KeyboardInterrupt)):
                    if is_out_of_memory(error):
                        fail(program, f"{out_of_memory_line(error)}; {smaller}; {kept}")
                    raise
                print(f"{program}: interrupted; {kept}", file=sys.stderr, flush=True)
                sys.exit(130)
            finally:
                if ours:
                    signal.signal(signal.SIGINT, signal.default_int_handler)

        return run

    return decorate


def is_out_of_memory(error):
    """Python's MemoryError or TensorFlow's ResourceExhaustedError (known by its name:
    this module does not import TensorFlow)."""
    return isinstance(error, MemoryError) or any(
        kind.__name__ == "ResourceExhaustedError" for kind in type(error).__mro__)


def out_of_memory_line(error):
    """'out of memory (what could not be allocated)', from TensorFlow's many lines."""
    found = re.search(r"OOM when allocating tensor with shape\[[^\]]*\]", str(error))
    what = found.group(0) if found else (str(error).splitlines() or [""])[0][:200]
    return f"out of memory ({what})" if what else "out of memory"
