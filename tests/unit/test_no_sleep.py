"""No fixed sleep decides a test's outcome (issue 17).

A test waits for a condition (``tests.waiting.wait_for`` / ``wait_until``), moves a
``FakeClock``, or uses a short TTL and polls for its effect. This test reads every Python file
under tests/ and fails on any ``sleep(`` that is not listed below with the reason it may stay.
``sleep(0)`` is always allowed: it yields one turn of the event loop and lets no time pass.
"""

from __future__ import annotations

import re
from pathlib import Path

TESTS = Path(__file__).resolve().parent.parent
SLEEP = re.compile(r"\bsleep\(")
YIELD_ONLY = re.compile(r"\bsleep\(0\)")

# (file under tests/, the line as written, stripped) -> why that sleep decides nothing.
# Identical lines of one file share an entry.
ALLOWED: dict[tuple[str, str], str] = {
    ("waiting.py", "await asyncio.sleep(interval)"): "the poll step of wait_for",
    ("waiting.py", "time.sleep(interval)"): "the poll step of wait_until",
    ("integration/test_server_limits.py", "await asyncio.sleep(pause)"): (
        "pacing, so each part of a request leaves as its own TCP segment"
    ),
    ("e2e/test_edge_input.py", "time.sleep(0.02)"): (
        "pacing, so each part of a request leaves as its own TCP segment"
    ),
    ("e2e/test_faults.py", "time.sleep(0.05)"): (
        "paces the load sent during the broker outage; the outcome is every event arriving, "
        "waited for with a deadline"
    ),
    ("e2e/test_faults.py", "time.sleep(0.1)"): (
        "paces the load sent during the database outage; the outcome is each answer's status"
    ),
    # The cluster tests (not part of the README's test command's usual run: they start their
    # own RabbitMQ nodes and PostgreSQL pair) keep their own loops.
    ("cluster/test_cluster.py", "await asyncio.sleep(0.05)"): (
        "the load generator backs off while nothing listens; load, not an outcome"
    ),
    ("cluster/test_cluster.py", "await asyncio.sleep(0.2)"): (
        "the poll step of _until, a loop with a deadline"
    ),
    ("cluster/test_cluster.py", "await asyncio.sleep(3)"): (
        "how long one fault phase lasts while the load runs; the outcome is the answers recorded"
    ),
    ("cluster/test_cluster.py", "await asyncio.sleep(2)"): (
        "how long one fault phase lasts while the load runs; the outcome is the answers recorded"
    ),
    ("cluster/postgres.py", "await asyncio.sleep(0.2)"): (
        "the poll step of a loop with a deadline (the standby becoming synchronous)"
    ),
    ("cluster/stack.py", "time.sleep(0.2)"): (
        "the poll step of a loop with a deadline that also watches the replica's process"
    ),
    ("cluster/rabbit.py", "time.sleep(0.2)"): (
        "the poll step of a loop with a deadline that also watches the node's process"
    ),
    ("cluster/rabbit.py", "time.sleep(0.05)"): (
        "the poll step of a loop with a deadline (the killed node's port closing)"
    ),
}


def sleeps() -> list[tuple[str, int, str]]:
    """Every ``sleep(`` under tests/ but ``sleep(0)``: (file, line number, line stripped)."""
    found = []
    for path in sorted(TESTS.rglob("*.py")):
        if path == Path(__file__).resolve():
            continue  # this file names sleep( in its allow-list
        relative = path.relative_to(TESTS).as_posix()
        for number, line in enumerate(path.read_text().splitlines(), start=1):
            code = line.split("#", 1)[0]
            if SLEEP.search(code) and not YIELD_ONLY.search(code):
                found.append((relative, number, code.strip()))
    return found


def test_no_sleep_outside_the_allow_list() -> None:
    unexplained = [
        f"tests/{file}:{number}: {line}"
        for file, number, line in sleeps()
        if (file, line) not in ALLOWED
    ]
    assert not unexplained, (
        "a fixed sleep in a test: wait for the condition instead (tests/waiting.py), or add "
        "it to ALLOWED with the reason it decides nothing:\n" + "\n".join(unexplained)
    )


def test_every_allow_list_entry_is_still_needed() -> None:
    present = {(file, line) for file, _, line in sleeps()}
    stale = [entry for entry in ALLOWED if entry not in present]
    assert not stale, f"allowed sleeps no longer in the tests, remove them: {stale}"


def test_the_search_finds_sleeps_and_skips_yields() -> None:
    assert SLEEP.search("time.sleep(1)") and SLEEP.search("await asyncio.sleep(delay)")
    assert YIELD_ONLY.search("await asyncio.sleep(0)")
    assert not YIELD_ONLY.search("await asyncio.sleep(0.5)")
    assert not SLEEP.search("asleep(1)")
