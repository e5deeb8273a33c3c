"""JSON extraction: natural-language text -> a JSON object that matches a JSON Schema.

150 cases (easy, medium, hard, domain) over seven schema families; see README.md
for the metrics and exactly how values are compared.
"""

from pytest_llmeval import dataset, scorers


@dataset("cases.jsonl", prompt="prompt.md", max_tokens=256, main_score="field_accuracy")
def test_extraction(case, completion):
    with scorers.soft():  # record every score, fail once at the end with all messages
        data = scorers.json_valid(completion.text)  # the parsed object, or None
        scorers.matches_schema(data, case["schema"])
        scorers.type_correctness(data, case["schema"])
        scorers.field_accuracy(data, case["expected"], at_least=1.0)  # all fields correct = pass


@dataset("unseen_cases.jsonl", prompt="prompt.md", max_tokens=256, main_score="field_accuracy")
def test_unseen_schemas(case, completion):
    """100 cases over 10 schema families that no train row uses (schema_families.UNSEEN_FAMILIES)."""
    with scorers.soft():
        data = scorers.json_valid(completion.text)
        scorers.matches_schema(data, case["schema"])
        scorers.type_correctness(data, case["schema"])
        scorers.field_accuracy(data, case["expected"], at_least=1.0)
