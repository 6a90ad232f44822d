"""SPEC.md Consistency rule 4 as properties of merge3 (issue 19): changes that do not overlap
never conflict, typed text is never lost, the result is deterministic, and parties rebasing
onto one committed sequence converge."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass

from hypothesis import given, settings
from hypothesis import strategies as st

from lsp_dbcode.text.edits import Edit, apply_edits
from lsp_dbcode.text.merge import merge3
from tests.text.test_merge import SENTINELS, small

SETTINGS = settings(max_examples=int(os.environ.get("DBCODE_TEXT_EXAMPLES", 200)), deadline=None)

# Each party inserts only its own characters (absent from bases), so every one can be counted.
ALPHABETS = ("XYZ", "PQR", "KLM")


@st.composite
def side_edits(draw: st.DrawFn, base: str, chars: str) -> list[Edit]:
    """Random insertions, deletions and replacements on base by one side."""
    cuts = sorted(draw(st.lists(st.integers(0, len(base)), max_size=6)))  # repeats: insertions
    edits = []
    for k in range(0, len(cuts) - 1, 2):
        start, end = cuts[k], cuts[k + 1]
        text = draw(st.text(chars + "\n ", min_size=1 if start == end else 0, max_size=5))
        if not edits or start > edits[-1].end:  # one side's edits neither overlap nor touch
            edits.append(Edit(start, end, text))
    return edits


@st.composite
def touching_edits(draw: st.DrawFn) -> tuple[str, list[Edit], list[Edit]]:
    """A base of random segments joined by unique sentinel characters. In each segment: no
    edit, one side's edit, two edits (one per side) that touch, or two insertions at one point.
    Inserted text is foreign to base. No two edits of different sides overlap."""
    count = draw(st.integers(1, len(SENTINELS) + 1))
    base = ""
    ours: list[Edit] = []
    theirs: list[Edit] = []
    for n in range(count):
        segment = draw(small)
        at = len(base)
        kind = draw(st.sampled_from(["none", "one", "touch", "point"]))
        c0 = draw(st.integers(0, len(segment)))
        c1 = draw(st.integers(c0, len(segment)))
        c2 = draw(st.integers(c1, len(segment)))
        o_text = draw(st.text("XYZ", min_size=1, max_size=4))
        t_text = draw(st.text("PQR", min_size=1, max_size=4))
        first_ours = draw(st.booleans())
        if kind == "one":
            if first_ours:
                ours.append(Edit(at + c0, at + c2, o_text))
            else:
                theirs.append(Edit(at + c0, at + c2, t_text))
        elif kind == "touch" and c0 < c1 < c2:
            first, second = Edit(at + c0, at + c1, o_text), Edit(at + c1, at + c2, t_text)
            if not first_ours:
                first = Edit(first.start, first.end, t_text)
                second = Edit(second.start, second.end, o_text)
            (ours if first_ours else theirs).append(first)
            (theirs if first_ours else ours).append(second)
        elif kind == "point":
            ours.append(Edit(at + c1, at + c1, o_text))
            theirs.append(Edit(at + c1, at + c1, t_text))
        base += segment + (SENTINELS[n] if n < count - 1 else "")
    return base, ours, theirs


def _counts(text: str, chars: str) -> dict[str, int]:
    return {c: text.count(c) for c in chars}


@SETTINGS
@given(touching_edits(), st.booleans())
def test_changes_that_do_not_overlap_never_conflict(
    case: tuple[str, list[Edit], list[Edit]], blocks: bool
) -> None:
    base, ours_edits, theirs_edits = case
    ours = apply_edits(base, ours_edits)
    theirs = apply_edits(base, theirs_edits)
    result = merge3(base, ours, theirs, blocks=blocks)
    assert result.conflicts == ()
    assert _counts(result.text, "XYZ") == _counts(ours, "XYZ")
    assert _counts(result.text, "PQR") == _counts(theirs, "PQR")

    # Both sides' changes: what base text is left is the same as applying both (the diff may
    # read a change in repeated text at another, equivalent place, hence no exact compare).
    def strip(text: str) -> str:
        return text.translate({ord(c): None for c in "XYZPQR"})

    assert strip(result.text).replace("\n", "") == strip(
        apply_edits(base, theirs_edits + ours_edits)
    ).replace("\n", "")


def test_same_point_and_touching_examples_are_exact() -> None:
    assert merge3("ab§cd", "aXb§cd", "aPb§cYd").text == "aPXb§cYd"
    assert merge3("ab§cd", "aXb§cd", "aPPb§cd").text == "aPPXb§cd"
    assert merge3("abc\n", "aXc\n", "abPc\n").text == "aXPc\n"  # replaced b, then P at its end
    assert merge3("a\n", "a\nX", "a\nP").text == "a\nP\nX"  # two new last lines


@SETTINGS
@given(small, st.data(), st.booleans())
def test_every_inserted_character_is_kept(base: str, data: st.DataObject, blocks: bool) -> None:
    """Stronger than the rule needs ("unless the other side deleted the text around it"): an
    insertion inside text the other side deleted is a conflict (blocks) or kept (live)."""
    ours = apply_edits(base, data.draw(side_edits(base, "XYZ")))
    theirs = apply_edits(base, data.draw(side_edits(base, "PQR")))
    result = merge3(base, ours, theirs, blocks=blocks)
    assert _counts(result.text, "XYZ") == _counts(ours, "XYZ")
    assert _counts(result.text, "PQR") == _counts(theirs, "PQR")
    if not blocks:
        assert result.clean
    assert merge3(base, ours, theirs, blocks=blocks) == result  # deterministic in-process


_DETERMINISM_SCRIPT = """
import json, random, sys
from lsp_dbcode.text.merge import merge3
rng = random.Random(7)
pieces = ["a", "b", " ", "\\n", "x = 1\\n", "def f():\\n", "    pass\\n", "é"]
out = []
for _ in range(300):
    base = "".join(rng.choice(pieces) for _ in range(rng.randint(0, 30)))
    sides = []
    for chars in ("XYZ", "PQR"):
        text = base
        for _ in range(rng.randint(0, 4)):
            at = rng.randint(0, len(text))
            end = min(len(text), at + rng.choice([0, 0, 1, 3]))
            text = text[:at] + "".join(rng.choice(chars + "\\n ") for _ in range(3)) + text[end:]
        sides.append(text)
    for blocks in (True, False):
        r = merge3(base, sides[0], sides[1], blocks=blocks)
        out.append([r.text, [[c.start, c.end] for c in r.conflicts]])
json.dump(out, sys.stdout)
"""


def test_merge_is_deterministic_across_processes_and_hash_seeds() -> None:
    results = []
    for seed in ("1", "2"):
        proc = subprocess.run(
            [sys.executable, "-c", _DETERMINISM_SCRIPT],
            capture_output=True,
            text=True,
            timeout=120,
            env={**os.environ, "PYTHONHASHSEED": seed},
            check=True,
        )
        results.append(json.loads(proc.stdout))
    assert results[0] == results[1]
    assert len(results[0]) == 600


# --- three parties rebasing onto one committed sequence ------------------------------------


@dataclass
class Party:
    """A buffer as the server keeps it: the revision it is based on, and the buffer's text."""

    base_rev: int
    base_text: str
    buffer: str


def _deliver(party: Party, revisions: list[str], blocks: bool) -> None:
    """The newest revision reaches the buffer: its unsaved edits are rebased onto it."""
    head = len(revisions) - 1
    if party.base_rev == head:
        return
    merged = merge3(party.base_text, party.buffer, revisions[head], blocks=blocks)
    assert merged.clean
    party.base_rev, party.base_text, party.buffer = head, revisions[head], merged.text


def _commit(party: Party, revisions: list[str], blocks: bool) -> None:
    """Compare-and-swap on the party's base; a stale base is rebased first (the server does)."""
    if party.buffer == party.base_text:
        return
    _deliver(party, revisions, blocks)
    revisions.append(party.buffer)
    party.base_rev, party.base_text = len(revisions) - 1, party.buffer


@st.composite
def three_parties(draw: st.DrawFn, inserts_only: bool) -> tuple[str, list[list[Edit]]]:
    base = draw(small)
    sides = []
    for chars in ALPHABETS:
        edits = draw(side_edits(base, chars))
        if inserts_only:
            edits = [Edit(e.start, e.start, e.text) for e in edits if e.text]
        sides.append(edits)
    return base, sides


def _run(
    base: str,
    sides: list[list[Edit]],
    schedule: list[tuple[str, int, int]],
    blocks: bool,
    order: tuple[int, ...] = (0, 1, 2),
) -> tuple[list[str], list[Party], list[dict[str, int]]]:
    """Each party starts with its edits typed; then the schedule: ``type`` inserts one more
    of its characters at a place of its buffer, ``commit`` and ``deliver`` as the server
    does. Returns the revisions, the parties, and how many of each character each typed."""
    revisions = [base]
    parties = []
    typed = []
    for chars, edits in zip(ALPHABETS, sides, strict=True):
        buffer = apply_edits(base, edits)
        parties.append(Party(0, base, buffer))
        typed.append(_counts(buffer, chars))
    for action, who, where in schedule:
        party = parties[who]
        if action == "type":
            char = ALPHABETS[who][where % 3]
            at = where % (len(party.buffer) + 1)
            party.buffer = party.buffer[:at] + char + party.buffer[at:]
            typed[who][char] += 1
        elif action == "commit":
            _commit(party, revisions, blocks)
        else:
            _deliver(party, revisions, blocks)
    # Typing stops: every party commits (in ``order``), then hears of every commit.
    for who in order:
        _commit(parties[who], revisions, blocks)
    for party in parties:
        _deliver(party, revisions, blocks)
    return revisions, parties, typed


schedules = st.lists(
    st.tuples(
        st.sampled_from(["type", "commit", "deliver"]), st.integers(0, 2), st.integers(0, 99)
    ),
    max_size=25,
)


@SETTINGS
@given(three_parties(inserts_only=False), schedules)
def test_three_live_parties_converge_and_keep_all_typing(
    case: tuple[str, list[list[Edit]]], schedule: list[tuple[str, int, int]]
) -> None:
    base, sides = case
    revisions, parties, typed = _run(base, sides, schedule, blocks=False)
    final = revisions[-1]
    assert all(p.buffer == final for p in parties)
    for chars, counts in zip(ALPHABETS, typed, strict=True):
        assert _counts(final, chars) == counts


@SETTINGS
@given(three_parties(inserts_only=True), schedules, st.permutations([0, 1, 2]))
def test_three_parties_inserting_converge_in_any_order_without_conflicts(
    case: tuple[str, list[list[Edit]]],
    schedule: list[tuple[str, int, int]],
    order: list[int],
) -> None:
    """Insertions only (never an overlap): with conflict blocks enabled (save mode) too, every
    schedule and every order of the parties' last commits converges, cleanly, keeping every
    insertion."""
    base, sides = case
    revisions, parties, typed = _run(base, sides, schedule, blocks=True, order=tuple(order))
    final = revisions[-1]
    assert all(p.buffer == final for p in parties)
    for chars, counts in zip(ALPHABETS, typed, strict=True):
        assert _counts(final, chars) == counts
