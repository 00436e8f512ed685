"""Huge pages for large blocks (sgtheory.backends.allocator): when the program restarts with
glibc's tunable, when it does not, and that a restarted program runs with it once."""

import os
import subprocess
import sys

import pytest

from sgtheory.backends import allocator

TUNABLE = "glibc.malloc.hugetlb=1"


@pytest.fixture
def madvise_kernel(monkeypatch, tmp_path):
    """A Linux kernel giving transparent huge pages on request, with glibc 2.36."""
    mode = tmp_path / "enabled"
    mode.write_text("always [madvise] never\n")
    monkeypatch.setattr(allocator, "THP_MODE", mode)
    monkeypatch.setattr(allocator.sys, "platform", "linux")
    monkeypatch.setattr(allocator, "_glibc_version", lambda: (2, 36))
    return mode


def test_the_tunable_is_added_to_the_others(madvise_kernel):
    assert allocator.huge_pages_environment({})["GLIBC_TUNABLES"] == TUNABLE
    env = allocator.huge_pages_environment({"GLIBC_TUNABLES": "glibc.malloc.check=3", "A": "b"})
    assert env == {"GLIBC_TUNABLES": f"glibc.malloc.check=3:{TUNABLE}", "A": "b"}


@pytest.mark.parametrize(
    "case", ["set already", "switched off", "always", "never", "old glibc", "no glibc", "macos"]
)
def test_no_restart_where_it_would_change_nothing(madvise_kernel, monkeypatch, case):
    environ = {}
    if case == "set already":
        environ["GLIBC_TUNABLES"] = "glibc.malloc.hugetlb=0"  # the user's own choice stays
    elif case == "switched off":
        environ["SGTHEORY_HUGEPAGES"] = "0"
    elif case in ("always", "never"):  # every block has them already / none can
        madvise_kernel.write_text(
            "[always] madvise never\n" if case == "always" else "always madvise [never]\n"
        )
    elif case == "old glibc":
        monkeypatch.setattr(allocator, "_glibc_version", lambda: (2, 34))
    elif case == "no glibc":
        monkeypatch.setattr(allocator, "_glibc_version", lambda: None)
    else:
        monkeypatch.setattr(allocator.sys, "platform", "darwin")
    assert allocator.huge_pages_environment(environ) is None


def test_a_restarted_program_runs_once_with_its_arguments_and_the_tunable(tmp_path):
    if allocator.huge_pages_environment(os.environ) is None:
        pytest.skip("this machine gives no huge pages on request, or the tunable is set")
    script = tmp_path / "prog.py"
    log = tmp_path / "log"
    script.write_text(
        "import os, sys\n"
        "from sgtheory.backends.allocator import restart_with_huge_pages\n"
        f"open({str(log)!r}, 'a').write('start\\n')\n"
        "restart_with_huge_pages()\n"
        "print(os.environ.get('GLIBC_TUNABLES'), sys.argv[1:])\n"
    )
    proc = subprocess.run(
        [sys.executable, str(script), "a", "b=c"], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == f"{TUNABLE} ['a', 'b=c']"
    assert log.read_text() == "start\nstart\n"  # run twice: once to restart, then for good
