"""Q&A over a short context: factual lookup, reasoning over the facts, and two-hop questions.

150 cases on synthetic passages; see README.md for the metrics and rubric.md for the judge.
"""

from pytest_llmeval import JudgeSpec, dataset, scorers

# The judge is declared with the dataset, so its requests run as a pipeline stage (each item's verdict
# is requested as soon as its answer lands) and it is measured on judge_calibration.jsonl (beside the
# rubric) at the end of the run: `--fail-under judge_kappa=0.6` refuses a judge that people disagree with.
JUDGE = JudgeSpec("rubric.md", fields=("question", "context", "reference"))


@dataset("cases.jsonl", prompt="prompt.md", max_tokens=64, main_score="key_facts", judge=JUDGE)
def test_qa(case, completion, judge):
    # The question and, for computed answers, the derivation ("455 - 389 = 66") count as
    # allowed source text: restating the question or giving a correct result is not unsupported.
    allowed = f"{case['question']} {case.get('derivation', '')}"
    with scorers.soft():
        scorers.key_facts(completion.text, case["key_facts"], at_least=1.0)
        scorers.faithfulness(completion.text, case["context"], extra=allowed, at_least=0.5)
        scorers.exact_match(completion.text, case["reference"], ignore_punctuation=True, at_least=0.0)
        # The prepared verdict of the declared judge (rubric and fields above). Recorded, not a pass
        # condition: the default judge here (SmolLM2) agrees with people no better than chance (its kappa
        # is in the summary), so a threshold would fail every item. With a calibrated judge
        # (--judge gpt-4o-mini), add at_least=3.
        judge.score(completion.text, at_least=None)
