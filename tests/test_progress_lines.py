"""Runs that outlive a terminal: with stdout not a terminal, long steps
print plain progress lines at intervals (done of total, rate, time left), and the CLI's
output carries no library deprecation warnings."""

from __future__ import annotations

import io
import re
import subprocess
import sys
import time

from rich.console import Console
from rich.progress import TextColumn

from autointerp.progress import Progress
from tests.support.cli import cli_env, run_cli
from tests.support.data import make_planted

LINE = re.compile(r"^work: (\d+)/10 \((\d+)%\)")


def lines_of(console_file: io.StringIO) -> list[str]:
    return [line for line in console_file.getvalue().splitlines() if line.strip()]


def test_plain_lines_at_intervals_when_not_a_terminal():
    out = io.StringIO()
    with Progress(console=Console(file=out, force_terminal=False), interval_s=0.05) as bar:
        task = bar.add_task("work", total=10)
        for _ in range(10):
            time.sleep(0.02)
            bar.advance(task)
    lines = lines_of(out)
    done = [int(LINE.match(line).group(1)) for line in lines]
    assert done[0] == 0 and done[-1] == 10 and 3 <= len(lines) <= 8
    assert done == sorted(done)
    middle = lines[1:-1]
    assert middle and all(re.search(r"[\d.]+/s, 0:0\d left, elapsed 0:00", line) for line in middle)
    assert "100%" in lines[-1] and "[" not in out.getvalue()  # no bar drawing, no markup


def test_long_interval_gives_start_and_end_only_and_terminals_get_the_bar():
    out = io.StringIO()
    with Progress(console=Console(file=out, force_terminal=False), interval_s=3600) as bar:
        task = bar.add_task("work", total=10)
        for _ in range(10):
            bar.advance(task)
    assert [LINE.match(line).group(1) for line in lines_of(out)] == ["0", "10"]
    tty = io.StringIO()
    with Progress(console=Console(file=tty, force_terminal=True), interval_s=0) as bar:
        bar.advance(bar.add_task("work", total=10), 10)
    assert not bar.plain and not LINE.search(tty.getvalue())


def test_score_piped_prints_progress_lines_and_no_warnings(tmp_path):
    store, dict_path, _ = make_planted(tmp_path)
    result = run_cli(["score", "--dict", str(dict_path), "--acts", str(store), "--db",
                      str(tmp_path / "r.db"), "--explainer", "lexical", "--scoring-backend", "lexical",
                      "--n-sampled", "5"], env=cli_env(AUTOINTERP_PROGRESS_INTERVAL="0"))
    assert result.returncode == 0, result.stderr
    lines = [line for line in result.stdout.splitlines() if re.match(r"^planted \(lexical\): ", line)]
    done = [int(re.match(r"^planted \(lexical\): (\d+)/(\d+)", line).group(1)) for line in lines]
    assert len(done) >= 3 and done[0] == 0 and done[-1] == 5
    assert any("left" in line and "/s" in line for line in lines)
    assert re.search(r"fragments \(2 passes\): [\d,]+/[\d,]+ \(100%\)", result.stdout)
    assert not re.search(r"\w+Warning\b|deprecat", result.stdout + result.stderr)


def test_cli_hides_library_deprecations_but_not_other_warnings():
    script = ("import sys, warnings\n"
              "from autointerp.cli import quiet_library_warnings\n"
              "quiet_library_warnings()\n"
              "warnings.warn('old api', DeprecationWarning)\n"
              "warnings.warn('changes soon', FutureWarning)\n"
              "warnings.warn('check your data', UserWarning)\n")
    result = subprocess.run([sys.executable, "-W", "default", "-c", script], env=cli_env(),
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0
    assert "check your data" in result.stderr
    assert "old api" not in result.stderr and "changes soon" not in result.stderr


def test_causal_runs_print_forward_passes_between_points():
    from autointerp.causal.bar import PassBar, pass_progress

    assert isinstance(pass_progress(), Progress)  # the plain-line kind, not rich's own
    out, passes = io.StringIO(), [0]
    with Progress(TextColumn("{task.description}"), TextColumn("{task.fields[stats]}"),
                  console=Console(file=out, force_terminal=False), interval_s=0) as bar:
        with PassBar(bar).task("pca: greedy", 2, lambda: passes[0]) as tick:
            for _ in range(3):  # one long threshold: passes, but no point done yet
                passes[0] += 1
                tick(0)
    lines = lines_of(out)
    assert any(line.startswith("pca: greedy: 0/2") and "3 forward passes" in line
               for line in lines), lines
    assert lines[-1].startswith("pca: greedy: 2/2 (100%)")
