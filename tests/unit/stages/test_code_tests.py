"""`code-tests`: the code a completion gives, how tests become plans judged in the stage, the scores, and the spec."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from pydantic import ValidationError

from sil_stages.core.errors import StageInputError
from sil_stages.core.settings import Scorer as ScorerSettings
from sil_stages.select.code_sandbox import pool
from sil_stages.select.code_sandbox.plans import Values, decode, passed, plan_record, results_by_index
from sil_stages.select.code_sandbox.pool import Limits, SandboxPool, missing_protections
from sil_stages.select.scorers import PromptSamples, ScorerContext, make_scorer
from sil_stages.select.scorers.code_tests import CodeTestsScorer, extract_code

ADD_TESTS = ["assert add(1, 2) == 3", "assert add(-1, 1) == 0", "assert add(2, 2) != 5"]


@pytest.mark.parametrize(
    ("completion", "code"),
    [
        ("def f():\n    return 1\n", "def f():\n    return 1\n"),
        ("Here:\n```python\ndef f():\n    return 1\n```\nDone.", "def f():\n    return 1\n"),
        ("```py\nx = 1\n```", "x = 1\n"),
        ("```python\nfirst = 1\n```\n```python\nsecond = 2\n```", "first = 1\n"),
        ("```\nplain = 1\n```", "```\nplain = 1\n```"),
        ("```python\nunclosed = 1\n", "```python\nunclosed = 1\n"),
    ],
)
def test_the_code_is_the_first_python_block_else_the_whole_completion(completion: str, code: str) -> None:
    assert extract_code(completion) == code


def _values(candidate: dict[int, Any], reference: dict[int, Any] | None = None) -> Values:
    return Values(candidate, reference or {})


def test_an_equality_assert_sends_only_its_expression_and_keeps_the_expected_value() -> None:
    plan = plan_record({"tests": ["assert add(1, 2) == 3"]}, where="r")
    assert plan.candidate == ("add(1, 2)",)
    assert plan.reference == ()
    assert passed(plan.tests[0], _values({0: 3}))
    assert not passed(plan.tests[0], _values({0: 4}))
    assert not passed(plan.tests[0], _values({}))


def test_a_computed_expected_value_is_a_reference_expression_run_without_the_completion() -> None:
    plan = plan_record(
        {"tests": "import math\nassert area(1) == math.pi * 1 ** 2\nassert f(2) == sorted([2, 1])"}, where="r"
    )
    assert plan.setup == ("import math",)
    assert plan.candidate == ("area(1)", "f(2)")
    assert plan.reference == ("math.pi * 1 ** 2", "sorted([2, 1])")
    assert passed(plan.tests[1], _values({1: [1, 2]}, {1: [1, 2]}))
    assert not passed(plan.tests[1], _values({1: [1, 2]}, {}))


@pytest.mark.parametrize(
    ("test", "value", "verdict"),
    [
        ("assert is_prime(7)", True, True),
        ("assert is_prime(7)", 0, False),
        ("assert not is_prime(8)", False, True),
        ("assert not is_prime(8)", [1], False),
        ("assert f(1) < 3", 2, True),
        ("assert 0 <= f(1) < 3", 3, False),
        ("assert f(1) in [1, 2]", 2, True),
        ("assert f(1) not in (1, 2)", 2, False),
        ("assert f(1) is None", None, True),
        ("assert f(1) is not None", None, False),
        ("assert f(1) is None or f(1) > 0", None, True),
        ("assert f(1) == (1, 2)", [1, 2], False),
        ("assert f(1) == [1, 2]", [1, 2], True),
        ("assert f(1) == {'a': 1}", {"a": 1}, True),
        ("assert f(1) == 1.0", 1, True),
        ("assert f(1) < 'a'", 1, False),
        ("assert f(1) == 3, 'message ignored'", 3, True),
    ],
)
def test_operators_and_truthiness_are_applied_in_the_stage(test: str, value: Any, verdict: bool) -> None:
    plan = plan_record({"tests": [test]}, where="r")
    assert {source for source in plan.candidate} <= {"is_prime(7)", "is_prime(8)", "f(1)"}
    assert passed(plan.tests[0], _values(dict.fromkeys(range(len(plan.candidate)), value))) is verdict


def test_a_failing_leaf_fails_only_where_the_test_reaches_it() -> None:
    plan = plan_record({"tests": ["assert f(1) is None or g(1) == 2"]}, where="r")
    assert passed(plan.tests[0], _values({0: None}))  # g(1) never needed
    assert not passed(plan.tests[0], _values({0: 1}))  # g(1) needed and unknown


def test_input_output_pairs_call_the_entry_point_and_compare_as_json() -> None:
    record = {
        "tests": [{"input": [[3, 1, 2]], "output": [1, 2, 3]}, {"input": [[]], "output": []}],
        "entryPoint": "srt",
    }
    plan = plan_record(record, where="r")
    assert plan.candidate == ("srt(*[[3, 1, 2]])", "srt(*[[]])")
    assert passed(plan.tests[0], _values({0: (1, 2, 3)}))
    assert not passed(plan.tests[1], _values({1: [0]}))


def test_values_come_back_only_as_exact_plain_data() -> None:
    assert decode({"$tuple": [1, {"$set": [2]}]}) == (1, {2})
    assert decode({"$dict": [[{"$tuple": [1]}, "x"]]}) == {(1,): "x"}
    lines = [
        json.dumps({"i": 0, "value": {"$object": "Anything"}}),
        json.dumps({"i": 1, "error": "ValueError"}),
        "not json",
        json.dumps({"i": 2, "value": 5}),
        json.dumps({"i": 2, "value": 6}),
        json.dumps({"i": 9, "value": 1}),
        json.dumps({"i": 3, "value": {"$set": [[1]]}}),
    ]
    assert results_by_index(lines, 4) == {2: 5}


@pytest.mark.parametrize(
    ("record", "message"),
    [
        ({"prompt": "p"}, "code-tests needs `tests` in every record"),
        ({"tests": "assert add(1, 2) ==="}, "a test is not valid Python"),
        ({"tests": "expected = 3\nassert add(1, 2) == expected"}, "only assert and import statements"),
        ({"tests": "import math"}, "no assert statement"),
        ({"tests": "assert 1 == 1"}, "uses nothing the solution defines"),
        ({"tests": [{"input": [1], "output": 1}]}, "need the record's `entryPoint`"),
        ({"tests": [{"input": 1, "output": 1}], "entryPoint": "f"}, 'must be {"input": \\[arguments\\]'),
    ],
)
def test_malformed_tests_are_input_errors_naming_the_record(record: dict[str, Any], message: str) -> None:
    with pytest.raises(StageInputError, match=message):
        plan_record(record, where="select.scorer (the record of prompt 'p')")


@pytest.mark.parametrize(
    ("settings", "field"),
    [
        ({"timeoutS": 0}, "timeoutS"),
        ({"memoryMb": 1}, "memoryMb"),
        ({"maxProcesses": 0}, "maxProcesses"),
        ({"concurrency": 0}, "concurrency"),
        ({"acceptMissingProtections": ["network"]}, "acceptMissingProtections"),
        ({"timeout": 3}, "timeout"),
    ],
)
def test_bad_sandbox_settings_are_rejected_naming_the_field(settings: dict[str, Any], field: str) -> None:
    with pytest.raises(ValidationError, match=field):
        ScorerSettings.model_validate({"type": "code-tests", "codeTests": settings})


def test_a_missing_required_protection_is_named_unless_accepted() -> None:
    found = {"seccomp": True, "landlock": "the kernel has no Landlock"}
    assert missing_protections(found, frozenset()) == {"landlock": "the kernel has no Landlock"}
    assert missing_protections(found, frozenset({"landlock"})) == {}


LIMITS = Limits(timeout_s=2.0, memory_bytes=256 << 20, max_processes=8, max_file_bytes=1 << 20, max_output_bytes=4096)


def test_the_sandbox_refuses_to_start_without_seccomp_and_says_why(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pool, "_seccomp_path", lambda: None)  # the worker then cannot load pyseccomp
    with pytest.raises(
        StageInputError,
        match=r"select\.scorer\.codeTests\.acceptMissingProtections: .*seccomp is "
        r"missing \(pyseccomp or libseccomp\.so\.2 cannot be loaded",
    ):
        SandboxPool(LIMITS, 1, frozenset(), field="select.scorer.codeTests")


def test_an_accepted_missing_protection_runs_with_the_weaker_isolation(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pool, "_seccomp_path", lambda: None)
    sandbox = SandboxPool(LIMITS, 1, frozenset({"seccomp"}), field="select.scorer.codeTests")
    try:
        assert sandbox.protections["seccomp"] is not True
        assert sandbox.protections["landlock"] is True
    finally:
        sandbox.close()


@pytest.fixture(scope="module")
def scorer() -> Iterator[CodeTestsScorer]:
    settings = ScorerSettings.model_validate({"type": "code-tests", "codeTests": {"timeoutS": 2.0, "concurrency": 2}})
    built = make_scorer(ScorerContext(settings=settings))
    assert isinstance(built, CodeTestsScorer)
    yield built
    built.close()


def test_the_score_is_the_share_of_tests_passed(scorer: CodeTestsScorer) -> None:
    group = PromptSamples(
        "Write add(a, b).",
        (
            "```python\ndef add(a, b):\n    return a + b\n```",
            "def add(a, b):\n    return a - b\n",
            "def add(a, b):\n    return 3\n",
            "I cannot write code.",
        ),
        {"prompt": "Write add(a, b).", "tests": ADD_TESTS},
    )
    scores = scorer.score([group])[0]
    assert [score.value for score in scores] == [1.0, 1 / 3, 2 / 3, 0.0]
    assert scores[0].details == {"passed": 3, "tests": 3, "run": "ok"}
    assert scorer.report()["code_tests_pass_rate"] == pytest.approx(6 / 12)


def test_reference_expressions_and_input_output_pairs_score_end_to_end(scorer: CodeTestsScorer) -> None:
    groups = [
        PromptSamples(
            "Sort a list.",
            ("def srt(xs):\n    return tuple(sorted(xs))\n", "def srt(xs):\n    return xs\n"),
            {
                "tests": [{"input": [[3, 1, 2]], "output": [1, 2, 3]}, {"input": [[1]], "output": [1]}],
                "entryPoint": "srt",
            },
        ),
        PromptSamples(
            "Area of a circle.",
            ("import math\ndef area(r):\n    return math.pi * r * r\n", "def area(r):\n    return 3.14 * r * r\n"),
            {"tests": "import math\nassert abs(area(2) - math.pi * 4) < 1e-9\nassert area(0) == 0"},
        ),
    ]
    assert [[score.value for score in group] for group in scorer.score(groups)] == [[1.0, 0.5], [1.0, 0.5]]


def test_grpo_reward_and_select_get_the_same_scorer_from_the_registry() -> None:
    from sil_stages.optimize.methods.rewards import reward_function

    settings = ScorerSettings.model_validate({"type": "code-tests", "codeTests": {"timeoutS": 2.0, "concurrency": 1}})
    reward = reward_function(settings)
    record = json.dumps({"prompt": "add", "tests": ADD_TESTS})
    rewards = reward(
        prompts=["add", "add"],
        completions=["def add(a, b):\n    return a + b", "def add(a, b):\n    return 0"],
        record=[record, record],
    )
    assert rewards == [1.0, 2 / 3]  # return 0 passes add(-1, 1) == 0 and add(2, 2) != 5
    assert reward.__name__ == "code_tests"


def test_the_reward_hacking_guard_judges_held_out_answers_with_the_same_scorer(scorer: CodeTestsScorer) -> None:
    from sil_stages.evaluate.scoring import Proxy

    proxy = Proxy(scorer, min_score=1.0)
    answers = [["def add(a, b):\n    return a + b", "def add(a, b):\n    return 3"]]
    assert proxy.verdicts(["add"], answers, [{"prompt": "add", "tests": ADD_TESTS}]) == [1.0, 0.0]
