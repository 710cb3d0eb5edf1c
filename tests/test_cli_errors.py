"""Every ``learndock`` command, walked from the typer app, fails on bad input with one error
line on stderr and a non-zero exit code -- never a Python traceback (that needs ``--debug``)."""

from __future__ import annotations

from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from learndock.cli import main as cli_main

app = cli_main.full_app()
runner = CliRunner()

#: Commands that would wait for a long time on a valid home (servers, the demo build): they
#: get only inputs that must fail before any work starts.
LONG_RUNNING = {("serve",), ("worker",), ("demo",)}


def _leaves(group, path=()):  # noqa: ANN001, ANN202
    for name, cmd in sorted(group.commands.items()):
        if hasattr(cmd, "commands"):
            yield from _leaves(cmd, (*path, name))
        else:
            yield (*path, name), cmd


COMMANDS = list(_leaves(typer.main.get_command(app)))


@pytest.fixture(autouse=True)
def _private(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    monkeypatch.setenv("LEARNDOCK_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("LEARNDOCK_CONFIG", raising=False)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(cli_main.err, "width", 400)


def _bad_value(param, tmp: Path) -> str:  # noqa: ANN001
    """A value each parameter refuses: files that do not exist, ids no market holds."""
    name = param.name or ""
    if name in ("output",):
        return str(tmp / "no-such-dir" / "out.zip")
    if name.endswith("_id") or name in ("email",):
        return "0123456789abcdef" if name != "email" else "nobody@example.org"
    return str(tmp / "does-not-exist.csv")


def _argv_sets(path: tuple[str, ...], cmd, tmp: Path) -> list[list[str]]:  # noqa: ANN001
    file_home = tmp / "a-file"
    file_home.write_text("not a folder")
    opts = {o for p in cmd.params for o in getattr(p, "opts", [])}
    required = []
    for p in cmd.params:
        if p.required:
            value = _bad_value(p, tmp)
            if p.param_type_name == "argument":
                required.append(value)
            else:
                required += [p.opts[0], value]
    sets = [[*path, "--no-such-option"]]
    if path not in LONG_RUNNING and required:
        sets.append([*path, *required])
    if "--home" in opts:
        sets.append([*path, *required, "--home", str(file_home)])
    if "--url" in opts and path not in LONG_RUNNING and path != ("logout",):
        # (logging out of a dock one is not logged in to is a no-op, exit 0)
        sets.append([*path, *required, "--url", "http://127.0.0.1:9"])
    return sets


def test_every_command_is_walked() -> None:
    names = {" ".join(p) for p, _ in COMMANDS}
    for expected in ("pack", "check", "spec table", "market list", "upload", "search",
                     "download", "semantic values", "users create", "serve", "init", "reuse"):
        assert expected in names, sorted(names)


@pytest.mark.parametrize(("path", "cmd"), COMMANDS, ids=[" ".join(p) for p, _ in COMMANDS])
def test_bad_inputs_give_one_error_line(path, cmd, tmp_path: Path,  # noqa: ANN001
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    from learndock.client import client as client_mod

    monkeypatch.setattr(client_mod.Client, "_sleep", lambda *a, **k: None)  # no retry waits
    for argv in _argv_sets(path, cmd, tmp_path):
        res = runner.invoke(app, argv, input="")
        out = res.stdout + res.stderr
        assert res.exit_code != 0, f"{argv} exited 0:\n{out}"
        assert "Traceback" not in out, f"{argv}:\n{out}"
        assert res.exception is None or isinstance(res.exception, SystemExit), (
            f"{argv} raised {res.exception!r}")
        if res.exit_code == 1 and res.stderr.strip():
            lines = [ln for ln in res.stderr.splitlines() if ln.strip()
                     and not ln.startswith("warning:")]
            assert len(lines) == 1 and lines[0].startswith("error: "), f"{argv}:\n{res.stderr}"


def test_debug_shows_the_traceback(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from learndock.cli import data

    def boom(*a, **k):  # noqa: ANN002, ANN003, ANN202
        raise RuntimeError("something unexpected")

    monkeypatch.setattr(data, "read_table", boom)
    argv = ["spec", "table", "x.csv", "-o", str(tmp_path / "s.json")]
    res = runner.invoke(app, argv)
    assert res.exit_code == 1 and isinstance(res.exception, SystemExit)
    assert res.stderr.strip() == ("error: RuntimeError: something unexpected "
                                  "(learndock --debug ... shows where)")
    res = runner.invoke(app, ["--debug", *argv])
    assert isinstance(res.exception, RuntimeError)
    cli_main.DEBUG["on"] = False


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["spec", "table", "{empty}", "-o", "{tmp}/s.json"], "empty.csv is empty"),
        (["spec", "table", "{header}", "-o", "{tmp}/s.json"], "no rows (only a header)"),
        (["spec", "table", "{data}", "-o", "/missing/dir/x.json"],
         "no folder /missing/dir to write x.json into"),
        (["market", "list", "--home", "{data}"], "is a file; a market home is a folder"),
        (["check", "{tmp}/nope.zip"], "file not found: "),
        (["pack", "{tmp}/nope", "-o", "{tmp}/x.zip"], "no package folder at "),
        (["spec", "table", "{data}", "-o", "{tmp}/s.json", "--missing", "guess"],
         "--missing must be one of impute, drop, error"),
    ],
)
def test_known_failures_say_what_is_wrong(argv: list[str], message: str, tmp_path: Path) -> None:
    (tmp_path / "empty.csv").write_bytes(b"")
    (tmp_path / "header.csv").write_text("a,b\n")
    (tmp_path / "data.csv").write_text("a,b\n1,2\n3,4\n")
    subs = {"empty": tmp_path / "empty.csv", "header": tmp_path / "header.csv",
            "data": tmp_path / "data.csv", "tmp": tmp_path}
    res = runner.invoke(app, [a.format(**subs) for a in argv])
    assert res.exit_code == 1, res.output
    assert message in res.stderr and res.stderr.count("\n") == 1, res.stderr
