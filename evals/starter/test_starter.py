"""A small starter eval: name and age extraction (4 cases)."""

from pytest_llmeval import dataset, scorers

SCHEMA = {
    "type": "object",
    "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
    "required": ["name", "age"],
}


@dataset("cases.jsonl", prompt="prompt.md", max_tokens=48, main_score="field_accuracy")
def test_name_age(case, completion):
    with scorers.soft():
        data = scorers.json_valid(completion.text)
        scorers.matches_schema(data, SCHEMA)
        scorers.field_accuracy(data, case["expected"], at_least=1.0)
