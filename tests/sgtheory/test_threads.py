"""The default thread count is the CPU affinity mask's size, not the machine's core count."""

import os

import pytest

from sgtheory.backends.threads import default_threads, usable_cores


def test_default_threads_follow_the_affinity_mask(monkeypatch):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {3, 5, 7})
    monkeypatch.setattr(os, "cpu_count", lambda: 64)
    assert usable_cores() == 3
    assert default_threads() == default_threads(None) == 3
    assert default_threads(2) == 2


def test_real_affinity_mask_is_used():
    assert default_threads() == len(os.sched_getaffinity(0))


@pytest.mark.parametrize("bad", [0, -1, 1.5, True])
def test_bad_thread_setting_is_refused_with_its_value(bad):
    with pytest.raises(ValueError, match=f"threads={bad!r} is not valid"):
        default_threads(bad)
