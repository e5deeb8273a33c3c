"""Unit tests of the deterministic scorers, the ``@scorer`` decorator and ``soft()``.

Each scorer records a Score on the running item and raises ScoreFailure (an
AssertionError) below its threshold. The ``recorded`` fixture points the
scorers at a fresh list so a test can read exactly what was recorded.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Sequence

import pytest

from pytest_llmeval import scorers
from pytest_llmeval.scorers import ScoreFailure, _base

JOSE_NFC = unicodedata.normalize("NFC", "José")
JOSE_NFD = unicodedata.normalize("NFD", "José")


class Recorded(Sequence):
    """A live view of the scores recorded on the running test item."""

    def _store(self) -> list[dict]:
        return _base._current["scores"]

    def __getitem__(self, i):
        return self._store()[i]

    def __len__(self) -> int:
        return len(self._store())


@pytest.fixture
def recorded(monkeypatch: pytest.MonkeyPatch) -> Recorded:
    """The score dicts recorded during the test.

    The plugin points the scorers at a fresh per-item list when the test body
    starts; without the plugin (``-p no:llmeval``) this fixture provides one.
    """
    if _base._current["scores"] is None:
        monkeypatch.setitem(_base._current, "scores", [])
    return Recorded()


def test_nfc_and_nfd_differ_as_code_points():
    assert JOSE_NFC != JOSE_NFD  # the premise of the Unicode cases below


# -- normalisation -------------------------------------------------------------------
@pytest.mark.parametrize(
    ("a", "b"),
    [
        (JOSE_NFC, JOSE_NFD),
        ("STRASSE", "straße"),
        ("  New   York\n", "new york"),
        ("ÉCOLE", "école"),
    ],
)
def test_normalize_text_equates(a, b):
    assert scorers.normalize_text(a) == scorers.normalize_text(b)


@pytest.mark.parametrize(
    ("got", "expected", "equal"),
    [
        ("32", 32, True),  # a numeric string equals the number (type_correctness penalises the type)
        ("1,200", 1200, True),  # thousands separators
        (32.0000000001, 32, True),
        ("1,2", 12, False),  # a decimal comma is not a thousands separator
        ("thirty-two", 32, False),
        (True, 1, False),  # booleans are not numbers
        (1, True, False),
        (True, True, True),
        (None, None, True),
        (None, "", False),
        ("", None, False),
        ({"a": 1}, "a", False),
        (JOSE_NFD, JOSE_NFC, True),
        ([1, 2], [1, 2], True),
    ],
)
def test_values_equal(got, expected, equal):
    assert scorers.values_equal(got, expected) is equal


# -- json_valid ----------------------------------------------------------------------
def test_json_valid_returns_the_value_and_records_1(recorded):
    assert scorers.json_valid('{"a": [1, null]}') == {"a": [1, None]}
    assert recorded[-1]["name"] == "json_valid"
    assert recorded[-1]["value"] == 1.0


def test_json_valid_strict_rejects_a_fence_and_says_how_the_output_starts(recorded):
    with pytest.raises(ScoreFailure) as exc:
        scorers.json_valid('```json\n{"a": 1}\n```')
    assert recorded[-1]["name"] == "json_valid"
    assert recorded[-1]["value"] == 0.0
    msg = str(exc.value)
    assert "json_valid = 0.000 (needs >= 1)" in msg
    assert "not JSON" in msg and "output starts: '```json" in msg


def test_json_valid_strip_fences_is_recorded_under_its_own_name(recorded):
    assert scorers.json_valid('```json\n{"a": 1}\n```', strip_fences=True) == {"a": 1}
    assert scorers.json_valid("```\n[1, 2]\n```", strip_fences=True) == [1, 2]
    assert scorers.json_valid('{"plain": true}', strip_fences=True) == {"plain": True}
    assert [s["name"] for s in recorded] == ["json_valid_fenced"] * 3
    assert all(s["value"] == 1.0 for s in recorded)


@pytest.mark.parametrize(
    "text", ["", "   ", "{'a': 1}", '{"a": 1,}', '{"a": 1} trailing', "NaN", '{"a": Infinity}']
)
def test_json_valid_rejects_non_json(recorded, text):
    with pytest.raises(ScoreFailure), scorers.soft():
        assert scorers.json_valid(text) is None
    assert recorded[-1]["value"] == 0.0


def test_json_valid_unicode_round_trips(recorded):
    assert scorers.json_valid(f'{{"name": "{JOSE_NFD}"}}') == {"name": JOSE_NFD}


def test_json_valid_at_least_zero_only_records(recorded):
    assert scorers.json_valid("nope", at_least=0.0) is None
    assert recorded[-1]["value"] == 0.0 and recorded[-1]["passed"] is True


# -- matches_schema ------------------------------------------------------------------
SCHEMA = {
    "type": "object",
    "properties": {
        "name": {"type": "string"},
        "age": {"type": "integer"},
        "tags": {"type": "array", "items": {"type": "string"}},
        "email": {"type": ["string", "null"]},
    },
    "required": ["name", "age"],
    "additionalProperties": False,
}


def test_matches_schema_passes_valid_data(recorded):
    scorers.matches_schema({"name": "Ann", "age": 3, "tags": ["x"], "email": None}, SCHEMA)
    assert recorded[-1] == {**recorded[-1], "name": "schema_valid", "value": 1.0}


def test_matches_schema_names_the_paths_that_fail(recorded):
    with pytest.raises(ScoreFailure) as exc:
        scorers.matches_schema({"name": "Ann", "age": "3", "tags": ["x", 5], "extra": 1}, SCHEMA)
    msg = str(exc.value)
    assert "age: '3' is not of type 'integer'" in msg
    assert "tags/1: 5 is not of type 'string'" in msg
    assert "<root>: Additional properties are not allowed" in msg


def test_matches_schema_missing_required_and_no_value(recorded):
    with pytest.raises(ScoreFailure), scorers.soft():
        scorers.matches_schema({"name": "Ann"}, SCHEMA)
        scorers.matches_schema(None, SCHEMA)
    assert "'age' is a required property" in recorded[0]["explanation"]
    assert recorded[1]["explanation"] == "no JSON value to validate"


# -- field_accuracy ------------------------------------------------------------------
def test_field_accuracy_all_right_with_normalisation(recorded):
    expected = {"name": JOSE_NFC, "street": "Hauptstraße 1", "age": 32, "city": "new york"}
    got = {
        "name": JOSE_NFD,
        "street": "HAUPTSTRASSE 1",
        "age": "32",
        "city": "  New  York ",
        "extra": "ignored",
    }
    scorers.field_accuracy(got, expected)
    assert recorded[-1]["value"] == 1.0


def test_field_accuracy_shows_expected_versus_got(recorded):
    with pytest.raises(ScoreFailure) as exc:
        scorers.field_accuracy({"name": "Bob", "age": 31}, {"name": "Ann", "age": 32, "city": "Oslo"})
    assert recorded[-1]["value"] == 0.0
    msg = str(exc.value)
    assert "field_accuracy = 0.000 (needs >= 1)" in msg
    assert "name: expected 'Ann', got 'Bob'" in msg
    assert "age: expected 32, got 31" in msg
    assert "city: expected 'Oslo', got <absent>" in msg


def test_field_accuracy_null_versus_absent(recorded):
    expected = {"email": None, "phone": None}
    with pytest.raises(ScoreFailure) as exc:
        scorers.field_accuracy({"email": None}, expected)
    assert recorded[-1]["value"] == 0.5
    assert "phone: expected null, got <absent>" in str(exc.value)


def test_field_accuracy_null_is_not_an_empty_string(recorded):
    with pytest.raises(ScoreFailure) as exc:
        scorers.field_accuracy({"email": ""}, {"email": None})
    assert "email: expected null, got ''" in str(exc.value)


def test_field_accuracy_nested_objects_and_arrays_by_index(recorded):
    expected = {"order": {"items": [{"sku": "A1", "qty": 2}, {"sku": "B2", "qty": 1}], "total": 9.5}}
    got = {"order": {"items": [{"sku": "a1", "qty": 2}, {"sku": "B2", "qty": 3}], "total": "9.50"}}
    with pytest.raises(ScoreFailure) as exc:
        scorers.field_accuracy(got, expected)
    assert recorded[-1]["value"] == pytest.approx(4 / 5)
    assert "order.items[1].qty: expected 1, got 3" in str(exc.value)


def test_field_accuracy_extra_array_elements_are_misses(recorded):
    with pytest.raises(ScoreFailure) as exc:
        scorers.field_accuracy({"tags": ["a", "b", "c"]}, {"tags": ["a", "b"]})
    assert recorded[-1]["value"] == pytest.approx(2 / 3)
    assert "tags[2]: expected <absent>, got 'c'" in str(exc.value)


def test_field_accuracy_missing_array_elements_are_misses(recorded):
    with pytest.raises(ScoreFailure) as exc:
        scorers.field_accuracy({"tags": ["a"]}, {"tags": ["a", "b"]})
    assert recorded[-1]["value"] == 0.5
    assert "tags[1]: expected 'b', got <absent>" in str(exc.value)


def test_field_accuracy_nested_arrays(recorded):
    scorers.field_accuracy({"m": [[1, 2], [3]]}, {"m": [[1, 2], [3]]})
    assert recorded[-1]["value"] == 1.0
    with pytest.raises(ScoreFailure):
        scorers.field_accuracy({"m": [[1, 2], [4]]}, {"m": [[1, 2], [3]]})
    assert recorded[-1]["value"] == pytest.approx(2 / 3)


def test_field_accuracy_empty_arrays(recorded):
    scorers.field_accuracy({"tags": []}, {"tags": []})
    assert recorded[-1]["value"] == 1.0
    with pytest.raises(ScoreFailure), scorers.soft():
        scorers.field_accuracy({"tags": None}, {"tags": []})
        scorers.field_accuracy({}, {"tags": []})
        scorers.field_accuracy({"tags": ["x"]}, {"tags": []})
    assert [s["value"] for s in recorded[1:]] == [0.0, 0.0, 0.0]


def test_field_accuracy_numbers_as_strings_and_types(recorded):
    scorers.field_accuracy(
        {"n": "1,200", "f": "0.30000000000000004", "s": 7}, {"n": 1200, "f": 0.3, "s": "7"}
    )
    assert recorded[-1]["value"] == 1.0
    with pytest.raises(ScoreFailure) as exc:
        scorers.field_accuracy({"flag": "true", "n": True}, {"flag": True, "n": 1})
    assert recorded[-1]["value"] == 0.0
    assert "flag: expected true, got 'true'" in str(exc.value)


def test_field_accuracy_without_data_scores_zero_not_error(recorded):
    with pytest.raises(ScoreFailure) as exc:
        scorers.field_accuracy(None, {"a": 1, "b": "x"})
    assert recorded[-1]["value"] == 0.0
    assert "a: expected 1, got <absent>" in str(exc.value)


def test_field_accuracy_wrong_container_type(recorded):
    with pytest.raises(ScoreFailure):
        scorers.field_accuracy({"address": "Main St 1"}, {"address": {"street": "Main St 1"}})
    assert recorded[-1]["value"] == 0.0


def test_field_accuracy_truncates_long_explanations(recorded):
    expected = {f"k{i}": i for i in range(20)}
    with pytest.raises(ScoreFailure) as exc:
        scorers.field_accuracy({}, expected)
    assert "... and 8 more" in str(exc.value)


# -- type_correctness ----------------------------------------------------------------
def test_type_correctness_penalises_numbers_as_strings(recorded):
    with pytest.raises(ScoreFailure) as exc:
        scorers.type_correctness({"name": "Ann", "age": "32"}, SCHEMA)
    # checks: <root> object, name string, age integer
    assert recorded[-1]["value"] == pytest.approx(2 / 3)
    assert "age: expected integer" in str(exc.value)


def test_type_correctness_nested_arrays_nulls_and_absent_keys(recorded):
    data = {"name": "Ann", "age": 3.0, "tags": ["a", 1], "email": None}
    with pytest.raises(ScoreFailure) as exc:
        scorers.type_correctness(data, SCHEMA)
    # root, name, age (3.0 is an integer in JSON Schema), tags, tags[0], tags[1] (wrong), email (null allowed)
    assert recorded[-1]["value"] == pytest.approx(6 / 7)
    assert "tags[1]: expected string" in str(exc.value)
    scorers.type_correctness({"name": "Ann"}, SCHEMA)  # absent keys are matches_schema's business
    assert recorded[-1]["value"] == 1.0


def test_type_correctness_booleans_are_not_integers(recorded):
    with pytest.raises(ScoreFailure):
        scorers.type_correctness({"name": "Ann", "age": True}, SCHEMA)


def test_type_correctness_without_data(recorded):
    with pytest.raises(ScoreFailure):
        scorers.type_correctness(None, SCHEMA)
    assert recorded[-1]["explanation"] == "no JSON value"


# -- exact_match, contains, regex, numeric_close --------------------------------------
def test_exact_match_normalises_unicode_case_and_space(recorded):
    scorers.exact_match(f"  {JOSE_NFD} ", JOSE_NFC)
    scorers.exact_match("STRASSE", "straße")
    assert [s["value"] for s in recorded] == [1.0, 1.0]


def test_exact_match_without_normalisation(recorded):
    with pytest.raises(ScoreFailure):
        scorers.exact_match("paris", "Paris", normalize=False)


def test_exact_match_accepts_any_of_a_list_and_ignores_punctuation(recorded):
    scorers.exact_match("The Driwen River.", ["the driwen river", "Driwen"], ignore_punctuation=True)
    assert recorded[-1]["value"] == 1.0


def test_exact_match_failure_shows_expected_and_got(recorded):
    with pytest.raises(ScoreFailure) as exc:
        scorers.exact_match("Lyon", "Paris")
    assert "expected 'Paris', got 'Lyon'" in str(exc.value)


def test_exact_match_empty_answer(recorded):
    with pytest.raises(ScoreFailure) as exc:
        scorers.exact_match("", "Paris")
    assert "got ''" in str(exc.value)


def test_contains_all_any_and_missing(recorded):
    scorers.contains(f"Dear {JOSE_NFD}, welcome to the STRASSE", [JOSE_NFC, "straße"])
    assert recorded[-1]["value"] == 1.0
    with pytest.raises(ScoreFailure) as exc:
        scorers.contains("apples and pears", ["apples", "plums"])
    assert recorded[-1]["value"] == 0.5
    assert "missing: 'plums'" in str(exc.value)
    scorers.contains("apples and pears", ["plums", "pears"], mode="any")
    assert recorded[-1]["value"] == 1.0


def test_contains_case_sensitive_still_normalises_unicode(recorded):
    scorers.contains(f"Dear {JOSE_NFD}", JOSE_NFC, case_sensitive=True)
    assert recorded[-1]["value"] == 1.0
    with pytest.raises(ScoreFailure):
        scorers.contains("dear josé", "José", case_sensitive=True)


def test_contains_no_needles_is_vacuously_true(recorded):
    scorers.contains("anything", [])
    assert recorded[-1]["value"] == 1.0


def test_contains_empty_text(recorded):
    with pytest.raises(ScoreFailure):
        scorers.contains("", "x")
    assert recorded[-1]["value"] == 0.0


def test_regex_search_and_fullmatch(recorded):
    scorers.regex("Order #12345 shipped", r"#\d{5}")
    with pytest.raises(ScoreFailure) as exc:
        scorers.regex("Order #12345 shipped", r"#\d{5}", fullmatch=True)
    assert "pattern '#\\\\d{5}' not found in 'Order #12345 shipped'" in str(exc.value)


@pytest.mark.parametrize(
    ("got", "expected", "kwargs", "ok"),
    [
        (3.14159, 3.14159, {}, True),
        ("The answer is 1,200 km.", 1200, {}, True),
        ("about 66 years", 66, {}, True),
        ("-5 degrees", -5, {}, True),
        ("3.2", 3.0, {"abs_tol": 0.25}, True),
        ("3.2", 3.0, {}, False),
        ("", 0, {}, False),
        ("none", 0, {}, False),
        (True, 1, {}, False),
        ("In 2023 there were 5 cats", 5, {}, False),  # the first number counts
    ],
)
def test_numeric_close(recorded, got, expected, kwargs, ok):
    if ok:
        scorers.numeric_close(got, expected, **kwargs)
    else:
        with pytest.raises(ScoreFailure) as exc:
            scorers.numeric_close(got, expected, **kwargs)
        assert f"expected {expected}, got" in str(exc.value)
    assert recorded[-1]["value"] == (1.0 if ok else 0.0)


# -- key_facts and faithfulness -------------------------------------------------------
def test_key_facts_whole_words_after_normalisation(recorded):
    scorers.key_facts(f"It was {JOSE_NFD} in 1,871 on the STRASSE.", [JOSE_NFC, "1871", "straße"])
    assert recorded[-1]["value"] == 1.0


def test_key_facts_partial_and_missing_listed(recorded):
    with pytest.raises(ScoreFailure) as exc:
        scorers.key_facts("Tove Haldane built it.", ["Tove Haldane", "1871"])
    assert recorded[-1]["value"] == 0.5
    assert "missing: '1871'" in str(exc.value)


def test_key_facts_no_substring_matches(recorded):
    with pytest.raises(ScoreFailure), scorers.soft():
        scorers.key_facts("The Driwenshire valley", ["Driwen"])
        scorers.key_facts("It rose by 1.5 percent", ["5"])
        scorers.key_facts("It rose by 15 percent", ["1.5"])
        scorers.key_facts("In 18714", ["1871"])
    assert [s["value"] for s in recorded] == [0.0, 0.0, 0.0, 0.0]


def test_key_facts_punctuation_around_facts(recorded):
    scorers.key_facts("Rates: 3.5%. Made in the U.S. by (Ann).", ["3.5%", "U.S.", "Ann"])
    assert recorded[-1]["value"] == 1.0


def test_key_facts_empty_answer_and_empty_facts(recorded):
    with pytest.raises(ScoreFailure):
        scorers.key_facts("", ["Paris"])
    assert recorded[-1]["value"] == 0.0
    scorers.key_facts("anything", [])
    assert recorded[-1]["value"] == 1.0


CONTEXT = "Marrowby lighthouse was built in 1871 by the engineer Tove Haldane. It is 34 metres tall."


def test_faithfulness_grounded_answer(recorded):
    scorers.faithfulness("Tove Haldane built the lighthouse in 1871.", CONTEXT)
    assert recorded[-1]["value"] == 1.0


def test_faithfulness_names_unsupported_words(recorded):
    with pytest.raises(ScoreFailure) as exc:
        scorers.faithfulness("Pierre Dubois built it in 1902.", CONTEXT)
    assert "not in the context: 1902, built" not in str(exc.value)  # "built" is in the context
    assert "1902" in str(exc.value) and "dubois" in str(exc.value) and "pierre" in str(exc.value)


def test_faithfulness_extra_source_and_light_stemming(recorded):
    scorers.faithfulness("The lighthouses are tall.", CONTEXT)
    assert recorded[-1]["value"] == 1.0
    scorers.faithfulness(
        "It operated for 91 years", CONTEXT, extra="operated 1962 - 1871 = 91 years", at_least=1.0
    )
    assert recorded[-1]["value"] == 1.0


def test_faithfulness_empty_answer_scores_zero_with_a_reason(recorded):
    with pytest.raises(ScoreFailure) as exc:
        scorers.faithfulness("", CONTEXT)
    assert "no content words" in str(exc.value)


def test_faithfulness_unicode_forms(recorded):
    scorers.faithfulness(f"{JOSE_NFD} lives on the STRASSE", f"{JOSE_NFC} lives on the straße")
    assert recorded[-1]["value"] == 1.0


# -- the decorator and soft() ---------------------------------------------------------------
def test_scorer_decorator_bool_with_explanation_and_rate(recorded):
    @scorers.scorer(threshold=1.0, aggregate="rate")
    def short_enough(text, limit=10):
        return len(text) <= limit, f"{len(text)} characters, limit {limit}"

    short_enough("tiny")
    assert recorded[-1] == {
        "name": "short_enough",
        "value": 1.0,
        "threshold": 1.0,
        "passed": True,
        "explanation": "4 characters, limit 10",
        "aggregate": "rate",
    }
    with pytest.raises(ScoreFailure) as exc:
        short_enough("far too long for it")
    assert "short_enough = 0.000 (needs >= 1)" in str(exc.value)
    assert "19 characters, limit 10" in str(exc.value)
    assert short_enough.score_name == "short_enough" and short_enough.aggregate == "rate"


def test_scorer_decorator_mean_name_and_at_least_override(recorded):
    @scorers.scorer("overlap", threshold=0.8)
    def word_overlap(a, b):
        wa, wb = set(a.split()), set(b.split())
        return len(wa & wb) / len(wa | wb)

    with pytest.raises(ScoreFailure):
        word_overlap("a b c", "a b d")
    word_overlap("a b c", "a b d", at_least=0.5)
    word_overlap("a b c", "x y z", at_least=None)  # no threshold: record only
    assert [(s["name"], round(s["value"], 3), s["threshold"], s["passed"]) for s in recorded] == [
        ("overlap", 0.5, 0.8, False),
        ("overlap", 0.5, 0.5, True),
        ("overlap", 0.0, None, True),
    ]
    assert recorded[0]["aggregate"] == "mean"


def test_scorer_decorator_may_return_a_score(recorded):
    @scorers.scorer()
    def custom(x):
        return scorers.make_score("custom_named", x, 0.5, "built by hand")

    custom(0.7)
    assert recorded[-1]["name"] == "custom_named" and recorded[-1]["explanation"] == "built by hand"


def test_scorer_decorator_rejects_unknown_aggregate():
    with pytest.raises(ValueError, match="aggregate"):
        scorers.scorer(aggregate="median")


def test_soft_records_everything_then_fails_once_with_all_misses(recorded):
    with pytest.raises(ScoreFailure) as exc, scorers.soft():
        data = scorers.json_valid("not json")
        scorers.field_accuracy(data, {"a": 1})
        scorers.exact_match("x", "x")
    assert [s["name"] for s in recorded] == ["json_valid", "field_accuracy", "exact_match"]
    assert [s.name for s in exc.value.scores] == ["json_valid", "field_accuracy"]
    assert "json_valid = 0.000" in str(exc.value) and "a: expected 1, got <absent>" in str(exc.value)


def test_soft_nested_blocks_defer_to_the_outer_one(recorded):
    with pytest.raises(ScoreFailure) as exc, scorers.soft():
        with scorers.soft():
            scorers.exact_match("a", "b")
        scorers.exact_match("c", "d")
    assert len(exc.value.scores) == 2


def test_soft_without_misses_does_not_raise(recorded):
    with scorers.soft():
        scorers.exact_match("a", "a")
    assert recorded[-1]["passed"] is True


def test_score_failure_is_an_assertion_error():
    assert issubclass(ScoreFailure, AssertionError)


def test_nan_value_never_passes_and_serialises_as_null():
    s = scorers.make_score("x", float("nan"), 0.0)
    assert s.passed is False
    assert s.to_dict()["value"] is None
