"""Command-line habits shared by every `python -m tfreid.*` command: --help states defaults,
--quiet exists, progress bars write no escape codes into files, TF start-up logs are hidden."""

import argparse
import io
import os
import subprocess
import sys

import pytest

from tfreid.progress import Progress


def _parsers():
    from tfreid import evaluate, train
    from tfreid.data import check
    from tfreid.data.synthetic import __main__ as synthetic
    from tfreid.export import __main__ as export
    from tfreid.search import __main__ as search
    from tfreid.visualize import __main__ as visualize

    for name, module in [("train", train), ("evaluate", evaluate), ("export", export),
                         ("search", search), ("visualize", visualize), ("data.check", check),
                         ("data.synthetic", synthetic)]:
        parser = module.build_parser()
        subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
        if subs:
            for sub_name, sub in subs[0].choices.items():
                yield f"{name} {sub_name}", sub
        else:
            yield name, parser


@pytest.mark.parametrize("name,parser", list(_parsers()), ids=lambda v: v if isinstance(v, str) else "")
def test_every_flag_has_help_with_its_default_and_quiet_exists(name, parser):
    help_text = parser.format_help()
    assert "--quiet" in help_text, name
    for action in parser._actions:
        if not action.option_strings or action.help in (None, argparse.SUPPRESS):
            assert action.help == argparse.SUPPRESS or not action.option_strings, \
                f"{name} {action.option_strings}: no help"
            continue
        if isinstance(action, (argparse._HelpAction, argparse._StoreTrueAction,
                               argparse._StoreConstAction)) or action.required:
            continue
        text = parser.formatter_class(parser.prog)._get_help_string(action)
        assert "default" in text, f"{name} {action.option_strings[0]}: help states no default: {text!r}"


def _written(quiet=False, tty=False):
    class Stream(io.StringIO):
        def isatty(self):
            return tty

    stream = Stream()
    bar = Progress(40, "Epoch 1/2", unit="step", quiet=quiet, stream=stream)
    for step in range(1, 41):
        bar.update(step, loss=1.0 / step)
    bar.close()
    return stream.getvalue()


def test_progress_in_a_file_is_plain_lines():
    text = _written(tty=False)
    assert not {"\x1b", "\r", "\b"} & set(text)
    lines = text.splitlines()
    assert 10 <= len(lines) <= 11 and lines[-1].startswith("Epoch 1/2: 40/40 steps (100%)")
    assert "loss 0.025" in lines[-1]


def test_progress_on_a_terminal_redraws_one_line_without_escape_codes():
    text = _written(tty=True)
    assert "\x1b" not in text and "\b" not in text
    assert text.count("\r") == 40 and text.endswith("\n") and text.count("\n") == 1


def test_quiet_progress_writes_nothing():
    assert _written(quiet=True) == ""
    assert _written(quiet=True, tty=True) == ""


def test_tensorflow_startup_logs_are_hidden(tmp_path):
    """`tfreid.evaluate` imports TensorFlow before it reads the run; failing on bad input it
    prints one `error:` line: no absl/oneDNN/CPU-feature start-up lines."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("TF_CPP_MIN_LOG_LEVEL", "TFREID_DEBUG")}
    proc = subprocess.run([sys.executable, "-m", "tfreid.evaluate", "--run", str(tmp_path / "nope")],
                          capture_output=True, text=True, env=env)
    assert proc.returncode == 2
    assert proc.stderr.splitlines() == [proc.stderr.strip()] and proc.stderr.startswith("error: ")


def test_error_line_of_a_traced_function_names_the_cause(capsys):
    from tfreid.cli import error

    traced = ('in user code:\n\n    File "x.py", line 3, in call  *\n        y = f(x)\n\n'
              "    ValueError: Exception encountered when calling Pool.call().\n\n"
              "    \x1b[1mNegative dimension size caused by subtracting 17 from 16\x1b[0m\n\n"
              "    Arguments received by Pool.call():\n")
    assert error(ValueError(traced)) == 2
    assert capsys.readouterr().err == ("error: Exception encountered when calling Pool.call(). "
                                       "Negative dimension size caused by subtracting 17 from 16\n")
    assert error(ValueError("first line\nsecond")) == 2
    assert capsys.readouterr().err == "error: first line\n"
