"""The plugin core through pytester: ids, selection, errors, scorers, summary, xdist."""

from __future__ import annotations

import json

import pytest

CASES = [
    {"id": "easy-001", "tags": ["easy"], "prompt": "hello", "expected": "hello"},
    {"id": "easy-002", "tags": ["easy"], "prompt": "world", "expected": "world"},
    {"id": "hard-001", "tags": ["hard"], "prompt": "wrong", "expected": "right"},
]


def test_ids_and_parametrization(eval_project):
    p = eval_project(CASES, names=("a", "b"))
    result = p.runpytest("--model", "a,b", "--collect-only", "-q")
    result.stdout.fnmatch_lines(
        [
            "test_eval.py::test_echo[[]a-easy-001[]]",
            "test_eval.py::test_echo[[]a-easy-002[]]",
            "test_eval.py::test_echo[[]a-hard-001[]]",
            "test_eval.py::test_echo[[]b-easy-001[]]",
            "*6 tests collected*",
        ]
    )


def test_repeated_model_option_and_tag_selection(eval_project):
    p = eval_project(CASES, names=("a", "b"))
    result = p.runpytest("--model", "a", "--model", "b", "-k", "easy", "-p", "no:randomly")
    result.assert_outcomes(passed=4)
    result = p.runpytest("--model", "a", "-m", "hard")
    result.assert_outcomes(failed=1)


def test_unknown_model_is_a_usage_error(eval_project):
    p = eval_project(CASES, names=("a", "b"))
    result = p.runpytest("--model", "nope")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*unknown model 'nope'*available: smollm2, smollm2-vllm, gpt-4o-mini, a, b"])


def test_model_that_cannot_run_fails_fast_once(eval_project, monkeypatch):
    monkeypatch.delenv("MY_KEY", raising=False)
    p = eval_project(CASES, api_key_env="MY_KEY")
    result = p.runpytest("--model", "fake")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*model 'fake' cannot run here: needs MY_KEY*"])
    assert result.stderr.str().count("cannot run here") == 1


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("models: [1, 2]\n", "*models.yaml: 'models' must be a non-empty mapping*"),
        ("models:\n  m:\n    type: hf\n", "*models.yaml: model 'm': missing required key 'path'*"),
        ("models:\n  m: {type: openai, model: x, colour: red}\n", "*model 'm': unknown key 'colour'*"),
        ("models:\n  m: {type: gpu, model: x}\n", "*model 'm': key 'type' must be one of*"),
        (
            "models:\n  m: {type: openai, model: x, timeout: fast}\n",
            "*model 'm': key 'timeout' must be a non-negative number*",
        ),
        ("models:\n  m: {type: openai\n", "*models.yaml:*invalid YAML*"),
    ],
)
def test_malformed_models_yaml_names_file_and_key(eval_project, text, expected):
    p = eval_project(CASES)
    p.path.joinpath("models.yaml").write_text(text)
    result = p.runpytest("--model", "m")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([expected])


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ('{"id": "x", "prompt": "a"', "*cases.jsonl:2: invalid JSON*"),
        (
            '{"id": "easy-001", "prompt": "a"}',
            "*cases.jsonl:2: duplicate id 'easy-001' (first at *cases.jsonl:1)*",
        ),
        ('{"id": ["x"], "prompt": "a"}', "*cases.jsonl:2: 'id' must be a string or integer*"),
        ("[1, 2]", "*cases.jsonl:2: a case must be an object*"),
        ('{"id": "z", "tags": "bad tag!"}', "*cases.jsonl:2: tag 'bad tag!' must be an identifier*"),
    ],
)
def test_malformed_jsonl_names_file_and_line(eval_project, line, expected):
    p = eval_project(CASES[:1])
    with p.path.joinpath("cases.jsonl").open("a") as f:
        f.write(line + "\n")
    result = p.runpytest("--model", "fake")
    result.stdout.fnmatch_lines([expected])
    assert result.ret == pytest.ExitCode.INTERRUPTED  # a collection error stops the run
    assert "Traceback" not in result.stdout.str()


def test_byte_order_mark_and_line_number_ids(eval_project):
    p = eval_project([])
    p.path.joinpath("cases.jsonl").write_bytes(
        b'\xef\xbb\xbf{"prompt": "hi", "expected": "hi"}\n\n{"prompt": "yo", "expected": "yo"}\n'
    )
    result = p.runpytest("--model", "fake", "-v")
    result.stdout.fnmatch_lines(["*test_echo[[]fake-line1[]] PASSED*", "*test_echo[[]fake-line3[]] PASSED*"])


def test_missing_template_field_is_an_item_error_naming_template_field_and_case(eval_project):
    p = eval_project(CASES[:2])
    p.path.joinpath("prompt.md").write_text(
        "--- system ---\nBe brief.\n--- user ---\n{{ prompt }} {{ missing_field }}\n"
    )
    p.makepyfile(
        test_eval=(
            "from pytest_llmeval import dataset, scorers\n\n"
            "@dataset('cases.jsonl', prompt='prompt.md')\n"
            "def test_t(case, completion):\n"
            "    pass\n"
        )
    )
    result = p.runpytest("--model", "fake")
    result.assert_outcomes(errors=2)
    result.stdout.fnmatch_lines(["*prompt.md: placeholder {{ missing_field }}*case 'easy-001'*"])


def test_scorer_failure_shows_expected_versus_got(eval_project):
    p = eval_project(CASES)
    result = p.runpytest("--model", "fake", "-p", "no:randomly")
    result.assert_outcomes(passed=2, failed=1)
    result.stdout.fnmatch_lines(["*exact_match = 0.000 (needs >= 1): expected 'right', got 'wrong'*"])


def test_summary_aggregates(eval_project):
    p = eval_project(CASES)
    result = p.runpytest("--model", "fake")
    result.stdout.fnmatch_lines(
        [
            "*llmeval summary*",
            "test_eval.py::test_echo [[]fake[]]: n=3 pass rate 66.7% (2 passed, 1 failed)",
            "*exact_match*mean 0.667*",
            "*latency p50 *s p95 *s | tokens * in / * out | cost $0.0000 spent*",
        ]
    )


def test_summary_is_the_same_with_xdist(eval_project):
    p = eval_project(CASES)
    result = p.runpytest("--model", "fake", "-n", "2")
    result.assert_outcomes(passed=2, failed=1)
    result.stdout.fnmatch_lines(
        ["test_eval.py::test_echo [[]fake[]]: n=3 pass rate 66.7% (2 passed, 1 failed)"]
    )


def test_model_call_failure_is_an_error_with_its_cause(eval_project, fake_openai):
    p = eval_project(CASES[:2], max_retries=1)
    # The server is up (a dead one ends the session at once: test_trust.py) but fails every call.
    fake_openai.faults, fake_openai.fail_first = ("500",), 100
    result = p.runpytest("--model", "fake")
    result.assert_outcomes(errors=2)
    result.stdout.fnmatch_lines(["*model fake: InternalServerError*500*after 1 retries; earlier: 1x *"])
    result.stdout.fnmatch_lines(["*n=2 pass rate 0.0% (0 passed, 0 failed, 2 errors)*"])
    assert "During handling of the above exception" not in result.stdout.str()  # the cause, once


def test_list_models_reports_readiness(eval_project, monkeypatch):
    monkeypatch.delenv("SOME_KEY", raising=False)
    p = eval_project(CASES)
    with p.path.joinpath("models.yaml").open("a") as f:
        f.write(
            "\n  keyed: {type: openai, model: x, api_key_env: SOME_KEY}\n"
            "  gpu: {type: hf, path: some/model, requires_gpu: true}\n"
            "  local: {type: hf, path: 'embedded:smollm2'}\n"
        )
    result = p.runpytest("--list-models")
    assert result.ret == 0
    result.stdout.fnmatch_lines(
        [
            "*fake*openai*ready*",
            "*keyed*openai*needs SOME_KEY*",
            "*gpu*hf*needs a GPU*",
            "*local*hf*ready*",
        ]
    )


def test_records_travel_in_user_properties(eval_project):
    p = eval_project(CASES[:1])
    result = p.runpytest("--model", "fake", "--junitxml=junit.xml", "-o", "junit_family=xunit1")
    result.assert_outcomes(passed=1)
    xml = p.path.joinpath("junit.xml").read_text()
    assert 'property name="llmeval"' in xml
    start = xml.index('property name="llmeval" value="') + len('property name="llmeval" value="')
    import html

    rec = json.loads(html.unescape(xml[start : xml.index('"', start)]))
    assert rec["case_id"] == "easy-001" and rec["outcome"] == "passed" and rec["output"] == "hello"
    assert rec["scores"][0]["name"] == "exact_match" and rec["scores"][0]["value"] == 1.0


def test_model_fixture_generate_for_multi_turn(eval_project):
    p = eval_project(CASES[:1])
    p.makepyfile(
        test_eval=(
            "def test_chat(model):\n"
            "    first = model.generate('ping')\n"
            "    second = model.generate([{'role': 'user', 'content': first.text + ' pong'}])\n"
            "    assert second.text == 'ping pong'\n"
            "    assert model.name == 'fake'\n"
        )
    )
    result = p.runpytest("--model", "fake")
    result.assert_outcomes(passed=1)


def test_no_model_selected_means_the_embedded_default(pytester):
    # No --model, no ini key, no models file: the built-in smollm2 (nothing is generated here).
    pytester.makepyfile(
        "def test_x(model):\n    assert model.name == 'smollm2'\n    assert model.spec.origin == 'built-in'\n"
    )
    result = pytester.runpytest("-v")
    result.stdout.fnmatch_lines(["*test_x?smollm2? PASSED*"])


def test_dotenv_supplies_a_missing_api_key(eval_project, monkeypatch):
    monkeypatch.delenv("DOTENV_KEY", raising=False)
    p = eval_project(CASES[:1], api_key_env="DOTENV_KEY")
    p.path.joinpath(".env").write_text("# keys\nexport DOTENV_KEY='sk-test-dotenv-0123456789'\n")
    result = p.runpytest("--model", "fake")
    result.assert_outcomes(passed=1)
    assert "sk-test-dotenv-0123456789" not in result.stdout.str()
