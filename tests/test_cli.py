"""The `llamavid` command line: help for every command, global options, errors, doctor."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import cli


def _run(cmd: list[str], **kw) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300, **kw)


def _flat(text: str) -> str:
    return " ".join(text.split())


def test_help_lists_every_command(llamavid_cmd: list[str]) -> None:
    proc = _run([*llamavid_cmd, "--help"])
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("usage: llamavid")
    for name in cli.SUBCOMMANDS:
        assert f"    {name}" in proc.stdout, f"{name} missing from llamavid --help"
        assert "unavailable" not in proc.stdout, proc.stdout
    assert "--data-dir" in proc.stdout and "--verbose" in proc.stdout


@pytest.mark.parametrize("name", list(cli.SUBCOMMANDS))
def test_every_command_has_help(llamavid_cmd: list[str], name: str) -> None:
    proc = _run([*llamavid_cmd, name, "--help"])
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith(f"usage: llamavid {name}")
    help_line = cli.load(name).HELP
    assert "\n" not in help_line.strip(), "HELP must be one line"
    assert _flat(help_line) in _flat(proc.stdout)
    assert "--data-dir" in proc.stdout, "global options must work after the command name too"


def test_command_modules_import_fast() -> None:
    """The contract: loading every subcommand (what `llamavid --help` does) imports no third-party package.

    This is why the command modules, ``llamavid.paths`` (platformdirs) and ``llamavid.hub``
    (huggingface-hub, tqdm, filelock, gguf) import some libraries inside functions.
    """
    code = textwrap.dedent(
        """
        import sys
        import cli
        cli.build_parser()
        ours = {"llamavid", "app", "indexer", "train", "evaluation", "assets", "cli"}
        loaded = {name.split(".")[0] for name in sys.modules if not name.startswith("_")}  # _: site hooks
        print(" ".join(sorted(loaded - set(sys.stdlib_module_names) - ours)))
        """
    )
    proc = _run([sys.executable, "-c", code])
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "", f"imported at --help time: {proc.stdout.strip()}"


def test_the_import_check_sees_a_third_party_import() -> None:
    """Negative control for the test above: the same probe reports numpy once it is imported."""
    code = "import sys, numpy; print(sorted({n.split('.')[0] for n in sys.modules} - set(sys.stdlib_module_names)))"
    proc = _run([sys.executable, "-c", code])
    assert "numpy" in proc.stdout


def test_no_command_prints_help(llamavid_cmd: list[str]) -> None:
    proc = _run(llamavid_cmd)
    assert proc.returncode == 2
    assert "commands:" in proc.stdout


def test_unknown_command_is_a_usage_error(llamavid_cmd: list[str]) -> None:
    proc = _run([*llamavid_cmd, "no-such-command"])
    assert proc.returncode == 2
    assert "invalid choice" in proc.stderr


def test_bad_data_dir_is_one_line_error(llamavid_cmd: list[str], tmp_path: Path) -> None:
    f = tmp_path / "a-file"
    f.write_text("x")
    proc = _run([*llamavid_cmd, "--data-dir", str(f), "doctor"])
    assert proc.returncode == 1
    assert proc.stderr.startswith("llamavid: error: ")
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    assert proc.stdout == ""


def test_version(llamavid_cmd: list[str]) -> None:
    proc = _run([*llamavid_cmd, "--version"])
    assert proc.returncode == 0
    assert proc.stdout.startswith("llamavid 0.")


def test_global_options_before_or_after_the_command() -> None:
    parser = cli.build_parser()
    before = parser.parse_args(["--data-dir", "/a", "-v", "doctor"])
    after = parser.parse_args(["doctor", "--data-dir", "/b", "-vv"])
    neither = parser.parse_args(["doctor"])
    assert (before.data_dir, before.verbose) == ("/a", 1)
    assert (after.data_dir, after.verbose) == ("/b", 2)
    assert (neither.data_dir, neither.verbose) == (None, 0)


@pytest.fixture
def probe_command(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Register a throw-away subcommand that records what `run` receives, or raises a UserError."""
    (tmp_path / "probe_cmd.py").write_text(
        textwrap.dedent(
            """
            import json
            from llamavid.errors import UserError
            HELP = "probe"
            def add_arguments(parser):
                parser.add_argument("--fail", action="store_true")
            def run(args):
                if args.fail:
                    raise UserError("the probe failed; do something else")
                print(json.dumps({"data_dir": str(args.data_dir), "command": args.command}))
                return 7
            """
        )
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setitem(cli.SUBCOMMANDS, "probe", "probe_cmd")
    return tmp_path


def test_data_dir_precedence_through_main(
    probe_command: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("LLAMAVID_DATA_DIR", str(tmp_path / "env"))
    assert cli.main(["--data-dir", str(tmp_path / "flag"), "probe"]) == 7
    assert json.loads(capsys.readouterr().out) == {"data_dir": str(tmp_path / "flag"), "command": "probe"}
    assert cli.main(["probe"]) == 7
    assert json.loads(capsys.readouterr().out)["data_dir"] == str(tmp_path / "env")
    monkeypatch.delenv("LLAMAVID_DATA_DIR")
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    assert cli.main(["probe"]) == 7
    expected = tmp_path / "xdg" / "llamavid" if sys.platform.startswith("linux") else None
    got = Path(json.loads(capsys.readouterr().out)["data_dir"])
    assert got.is_absolute() and got.name == "llamavid"
    if expected:
        assert got == expected


def test_user_error_becomes_one_line(probe_command: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["probe", "--fail"]) == 1
    err = capsys.readouterr().err
    assert err == "llamavid: error: the probe failed; do something else\n"


def test_broken_command_does_not_break_the_others(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(cli.SUBCOMMANDS, "broken", "no_such_module_for_llamavid")
    assert cli.main(["broken"]) == 1
    assert "cannot load" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["doctor", "--help"])
    assert exit_info.value.code == 0


def test_every_registered_module_follows_the_contract() -> None:
    for name in cli.SUBCOMMANDS:
        module = cli.load(name)
        assert isinstance(module.HELP, str) and module.HELP.strip()
        parser = argparse.ArgumentParser()
        module.add_arguments(parser)  # must not raise


@pytest.mark.slow
def test_doctor_json_reports_the_installation(llamavid_cmd: list[str], data_dir: Path, make_model) -> None:
    make_model(data_dir, "llama-vid-7b-fake", size=3000)
    proc = _run([*llamavid_cmd, "--data-dir", str(data_dir), "doctor", "--json"])
    report = json.loads(proc.stdout)
    checks = {c["name"]: c for c in report["checks"]}
    assert report["data_dir"] == str(data_dir)
    missing = {n: c["detail"] for n, c in checks.items() if c["status"] == "missing"}
    assert missing == {}, f"the test environment should have everything installed: {missing}"
    assert proc.returncode == 0 and report["ok"] is True
    for name in (
        "python",
        "torch",
        "transformers",
        "llama-cpp-python",
        "av (PyAV)",
        "PySide6 (desktop app)",
        "gradio (web UI)",
        "faster-whisper (speech to text)",
        "sqlite",
        "device",
        "memory",
        "disk",
    ):
        assert name in checks, f"doctor lacks the {name} check"
    assert checks["sqlite"]["data"]["fts5"] is True
    assert checks["device"]["data"]["kind"] in ("cuda", "mps", "cpu")
    assert checks["device"]["data"]["cpu"]["cores"] >= 1
    assert checks["memory"]["data"]["total_bytes"] > 0
    assert checks["disk"]["data"]["free_bytes"] > 0
    assert checks["torch"]["detail"].startswith("2.")
    models = checks["models"]["data"]["models"]
    assert [m["name"] for m in models] == ["llama-vid-7b-fake"]
    assert checks["models"]["status"] == "ok"
    assert checks["data folder"]["data"]["folders"]["models"]["exists"] is True


def test_doctor_without_models_says_what_to_do(data_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from cli import doctor

    check = doctor.check_models(doctor.DataDir(data_dir))
    assert check.status == "warn"
    assert "YanweiLi/llama-vid-7b-full-224-video-fps-1" in check.fix
    assert str(data_dir / "models") in check.fix


def test_doctor_reports_a_broken_package_instead_of_crashing() -> None:
    from cli import doctor

    check = doctor.check_package("ghost", "no_such_module_xyz", "no-such-dist-xyz", "pip install ghost")
    assert check.status == "missing"
    assert check.detail == "not installed"
    assert check.fix == "pip install ghost"


def test_doctor_text_report_marks_each_check(capsys: pytest.CaptureFixture[str]) -> None:
    from cli.doctor import Check, _print_report

    _print_report(
        [Check("torch", "ok", "2.13.0"), Check("gradio (web UI)", "missing", "not installed", "pip install gradio")]
    )
    out = capsys.readouterr().out.splitlines()
    assert out[0].split() == ["ok", "torch", "2.13.0"]
    assert out[1].startswith("missing") and "not installed" in out[1]
    assert out[2].strip() == "-> pip install gradio"
    assert out[-1] == "missing: gradio (web UI)"


def test_doctor_reports_cuda_gpus(monkeypatch: pytest.MonkeyPatch) -> None:
    """The CUDA branch, with torch.cuda faked (the test machines have no GPU)."""
    from types import SimpleNamespace

    torch = pytest.importorskip("torch")
    from cli import doctor

    props = SimpleNamespace(name="Fake H100", total_memory=80_000_000_000)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda i: props)
    check = doctor.check_device()
    assert check.status == "ok"
    assert check.detail == "CUDA: Fake H100 (80.0 GB)"
    assert check.data["gpus"] == [{"name": "Fake H100", "memory_bytes": 80_000_000_000}]
