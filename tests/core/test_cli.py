import subprocess
import sys

from selfsup.cli import main


def test_plugins_list_shows_moco_parts_with_provider(capsys):
    assert main(["plugins", "list"]) == 0
    out = capsys.readouterr().out
    for name in ("moco", "momentum_queue", "infonce", "dot", "small_conv", "digits", "two_view"):
        assert f"  {name} " in out, name
    moco_line = next(line for line in out.splitlines() if line.strip().startswith("moco "))
    assert "[selfsup 0.1.0]" in moco_line


def test_plugins_list_filters_by_kind_and_pattern(capsys):
    assert main(["plugins", "list", "sampler", "momentum*"]) == 0
    out = capsys.readouterr().out
    assert "momentum_queue" in out and "in_batch" not in out and "objective" not in out


def test_plugins_show_prints_parameters(capsys):
    assert main(["plugins", "show", "sampler", "momentum_queue"]) == 0
    out = capsys.readouterr().out
    assert "size: int = 4096" in out and "FIFO queue" in out


def test_unknown_component_in_show_is_a_clear_error(capsys):
    assert main(["plugins", "show", "critic", "cosin"]) == 2
    assert "Did you mean 'cosine'" in capsys.readouterr().err


def test_console_script_help():
    out = subprocess.run([sys.executable, "-m", "selfsup.cli", "--help"], capture_output=True, text=True, check=True)
    for command in ("train", "eval", "plugins", "config"):
        assert command in out.stdout
