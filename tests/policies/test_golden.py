"""The bundled policies answer exactly what they answered when the golden file was recorded.

A rewrite of the Rego for speed must not move a decision, a reason, an approval or a tier:
``golden.py`` builds a few thousand seeded cases reaching every check and its edges, and this
test evaluates them through the real engine against the recorded outputs.
"""

from __future__ import annotations

from tests.policies import golden


def test_the_case_list_is_the_recorded_one() -> None:
    """A changed generator would compare the outputs of other inputs: re-record on purpose."""
    assert golden.cases_digest() == golden.read()["digest"]


def test_every_bundled_policy_answers_as_recorded() -> None:
    expected = golden.decode(golden.read())
    found = golden.outputs()
    assert len(found) == len(expected)
    cases = list(golden.cases())
    differ = [
        (cases[i][0], cases[i][2], cases[i][3], cases[i][4], expected[i], found[i])
        for i in range(len(found))
        if found[i] != expected[i]
    ]
    assert not differ, f"{len(differ)} cases differ; first: {differ[0]}"
