from pytest_llmeval import dataset, scorers


@dataset("cases.jsonl", max_tokens=8)
def test_case(case, completion):
    scorers.exact_match(completion.text, case["expected"])
