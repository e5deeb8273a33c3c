"""Checks on the eval datasets in evals/json_extraction and evals/qa (fast, no model).

Counts and tags, schema validity of every label, train/test disjointness (exact,
near-duplicate and by entity), reproducibility of the generators, groundedness
of the Q&A key facts, and the spread of the judge calibration scores. The
datasets are loaded with the plugin's own loader, so this also proves it
accepts them.
"""

from __future__ import annotations

import ast
import json
import operator
import re
import subprocess
import sys
import unicodedata
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from jsonschema import Draft202012Validator, FormatChecker

from pytest_llmeval import Case, load_cases, load_template, scorers

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "evals" / "json_extraction"))
import schema_families  # noqa: E402  (the generic families, from the eval's own folder)

ROOT = Path(__file__).resolve().parents[1]
JSON_DIR = ROOT / "evals" / "json_extraction"
QA_DIR = ROOT / "evals" / "qa"

LEVELS = ("easy", "medium", "hard", "domain")
LEVEL_COUNTS = {"easy": 40, "medium": 40, "hard": 35, "domain": 35}
FAMILIES = ("contact", "order", "event", "invoice", "prescription", "job_posting", "shipment")
GENERIC_FAMILIES = tuple(schema_families.TRAIN_FAMILIES)
UNSEEN_FAMILIES = tuple(schema_families.UNSEEN_FAMILIES)
ALL_FAMILIES = FAMILIES + GENERIC_FAMILIES + UNSEEN_FAMILIES
# cases.jsonl is the 150-case test set the baseline (evals/baseline.json) was recorded on: never regenerate it
# differently. The unseen-schema cases live in their own file.
CASES_SHA256 = "bec887258e03380d810319deb501af5b7ba1cb6195ea1cd3014198a026aa3cb1"
N_UNSEEN = 100
QA_KINDS = ("factual", "reasoning", "multi_hop")
N_TEST, N_TRAIN = 150, 2000
NEAR_DUP = 0.8  # character 5-gram Jaccard at or above this counts as a near-duplicate
ID_RE = re.compile(r"^[A-Za-z0-9_.:/-]+$")
TAG_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")

# The fields that identify "the same entity" in a JSON case: a test tuple must never occur in train.
KEY_FIELDS = {
    "contact": ("name", "company"),
    "order": ("order_id", "customer"),
    "event": ("title", "organizer"),
    "invoice": ("invoice_number", "vendor", "client"),
    "prescription": ("patient", "prescriber"),
    "job_posting": ("company", "title"),
    "shipment": ("tracking_number",),
}
PERSON_FIELDS = {"contact": ("name",), "order": ("customer",), "prescription": ("patient", "prescriber")}


# --------------------------------------------------------------------------- helpers


def norm(text: str) -> str:
    """NFC, casefold, collapse whitespace."""
    return " ".join(unicodedata.normalize("NFC", text).casefold().split())


def contains(haystack: str, needle: str) -> bool:
    """Whole-word occurrence after normalisation ("7" does not match "17")."""
    return re.search(rf"(?<!\w){re.escape(norm(needle))}(?!\w)", norm(haystack)) is not None


def shingles(text: str, k: int = 5) -> set[str]:
    t = norm(text)
    return {t[i : i + k] for i in range(max(1, len(t) - k + 1))}


def max_jaccard(test_texts: list[str], train_texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """For each test text: the highest 5-gram Jaccard with any train text, and which train text.

    Exact for all pairs, vectorised: an index from shingle to the test texts that
    contain it (a 0/1 row per shingle of the test vocabulary; a train shingle
    outside it cannot add to an intersection), so each train text costs one
    gather-and-sum over its own shingles.
    """
    test_sh = [shingles(t) for t in test_texts]
    vocab: dict[str, int] = {}
    for s in test_sh:
        for g in s:
            vocab.setdefault(g, len(vocab))
    index = np.zeros((len(vocab), len(test_sh)), dtype=np.int32)
    for i, s in enumerate(test_sh):
        index[[vocab[g] for g in s], i] = 1
    tsize = index.sum(axis=0)
    best = np.zeros(len(test_sh))
    arg = np.full(len(test_sh), -1)
    for j, text in enumerate(train_texts):
        sh = shingles(text)
        idx = [vocab[g] for g in sh if g in vocab]
        if not idx:
            continue
        inter = index[idx].sum(axis=0)
        jac = inter / (tsize + len(sh) - inter)
        better = jac > best
        best[better] = jac[better]
        arg[better] = j
    return best, arg


def walk_objects(schema: dict[str, Any]):
    """Every object schema inside a schema (the root, nested properties, array items)."""
    types = schema.get("type")
    types = types if isinstance(types, list) else [types]
    if "object" in types:
        yield schema
        for sub in schema.get("properties", {}).values():
            yield from walk_objects(sub)
    if "array" in types:
        yield from walk_objects(schema["items"])


def all_strings(value: Any):
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for k, v in value.items():
            yield k
            yield from all_strings(v)
    elif isinstance(value, list):
        for v in value:
            yield from all_strings(v)


_OPS = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul}


def eval_arith(expr: str) -> int:
    """Evaluate +, -, * over integer literals only."""

    def ev(node: ast.AST) -> int:
        if isinstance(node, ast.BinOp) and type(node.op) in _OPS:
            return _OPS[type(node.op)](ev(node.left), ev(node.right))
        if isinstance(node, ast.Constant) and isinstance(node.value, int):
            return node.value
        raise ValueError(f"unsupported expression {expr!r}")

    return ev(ast.parse(expr, mode="eval").body)


def level_of(case: Case) -> str:
    found = [t for t in case.tags if t in LEVELS]
    assert len(found) == 1, f"{case.id}: expected exactly one of {LEVELS}, tags are {case.tags}"
    return found[0]


def family_of(case: Case) -> str:
    found = [t for t in case.tags if t in ALL_FAMILIES]
    assert len(found) == 1, f"{case.id}: expected exactly one family tag, tags are {case.tags}"
    return found[0]


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def json_test() -> list[Case]:
    return load_cases(JSON_DIR / "cases.jsonl")


@pytest.fixture(scope="module")
def json_train() -> list[Case]:
    return load_cases(JSON_DIR / "train.jsonl")


@pytest.fixture(scope="module")
def json_unseen() -> list[Case]:
    return load_cases(JSON_DIR / "unseen_cases.jsonl")


@pytest.fixture(scope="module")
def qa_test() -> list[Case]:
    return load_cases(QA_DIR / "cases.jsonl")


@pytest.fixture(scope="module")
def qa_train() -> list[Case]:
    return load_cases(QA_DIR / "train.jsonl")


@pytest.fixture(scope="module")
def family_schemas() -> dict[str, dict[str, Any]]:
    return {f: json.loads((JSON_DIR / "schemas" / f"{f}.json").read_text(encoding="utf-8")) for f in FAMILIES}


# --------------------------------------------------------------------------- both tasks


@pytest.mark.parametrize("task", ["json", "qa"])
def test_counts_ids_and_tags(task: str, request: pytest.FixtureRequest) -> None:
    test = request.getfixturevalue(f"{task}_test")
    train = request.getfixturevalue(f"{task}_train")
    assert len(test) == N_TEST
    assert len(train) == N_TRAIN
    for c in test + train:
        assert ID_RE.match(c.id), c.id
        assert all(TAG_RE.match(t) for t in c.tags), c.tags
    test_ids = {c.id for c in test}
    assert len(test_ids) == N_TEST
    assert len({c.id for c in train}) == N_TRAIN
    assert not test_ids & {c.id for c in train}
    assert all(c.id.startswith("train-") for c in train)


@pytest.mark.parametrize("task", ["json", "qa"])
def test_train_test_disjoint(task: str, request: pytest.FixtureRequest) -> None:
    """No exact (normalised) duplicates, within test or across splits, and no near-duplicates across."""
    test = request.getfixturevalue(f"{task}_test")
    train = request.getfixturevalue(f"{task}_train")

    def text(c: Case) -> str:
        return c["text"] if task == "json" else f"{c['context']}\n{c['question']}"

    test_texts = [text(c) for c in test]
    train_texts = [text(c) for c in train]
    assert len({norm(t) for t in test_texts}) == len(test_texts), "duplicate texts in the test set"
    assert not {norm(t) for t in test_texts} & {norm(t) for t in train_texts}
    best, arg = max_jaccard(test_texts, train_texts)
    worst = int(best.argmax())
    assert best.max() < NEAR_DUP, (
        f"{test[worst].id} and {train[arg[worst]].id} are near-duplicates (Jaccard {best.max():.2f})"
    )


@pytest.mark.parametrize("task_dir", [JSON_DIR, QA_DIR], ids=["json", "qa"])
def test_generator_reproduces_committed_files(task_dir: Path, tmp_path: Path) -> None:
    subprocess.run([sys.executable, str(task_dir / "generate.py"), "--out", str(tmp_path)], check=True)
    produced = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*") if p.is_file())
    assert produced, "the generator wrote nothing"
    for rel in produced:
        committed = task_dir / rel
        assert committed.is_file(), f"{rel} is generated but not committed"
        assert (tmp_path / rel).read_bytes() == committed.read_bytes(), (
            f"{rel} differs from a fresh generation"
        )


@pytest.mark.parametrize("task_dir", [JSON_DIR, QA_DIR], ids=["json", "qa"])
def test_prompt_renders_for_every_case(task_dir: Path) -> None:
    template = load_template(task_dir / "prompt.md")
    roles = [role for role, _ in template.parts]
    assert roles == ["system", "user"]
    extra = [task_dir / "unseen_cases.jsonl"] if task_dir == JSON_DIR else []
    for case in [c for f in [task_dir / "cases.jsonl", *extra] for c in load_cases(f)]:
        messages = template.render(case, case.id)
        assert "{{" not in messages[1]["content"]


# --------------------------------------------------------------------------- JSON extraction


def test_json_tag_distribution(json_test: list[Case], json_train: list[Case]) -> None:
    levels = Counter(level_of(c) for c in json_test)
    assert levels == LEVEL_COUNTS
    fams = Counter(family_of(c) for c in json_test)
    assert set(fams) == set(FAMILIES)
    assert min(fams.values()) >= 10
    # train follows the test distribution of levels and covers the same schema families
    train_levels = Counter(level_of(c) for c in json_train)
    for level in LEVELS:
        assert abs(train_levels[level] / N_TRAIN - LEVEL_COUNTS[level] / N_TEST) < 0.02, level
    train_families = {family_of(c) for c in json_train}
    assert train_families == set(FAMILIES) | set(GENERIC_FAMILIES)
    assert len(GENERIC_FAMILIES) >= 40
    handwritten = [c for c in json_test if "handwritten" in c.tags]
    assert handwritten and all(level_of(c) == "hard" for c in handwritten)


def test_json_schema_files_are_strict(family_schemas: dict[str, dict[str, Any]]) -> None:
    for fam, schema in family_schemas.items():
        Draft202012Validator.check_schema(schema)
        objects = list(walk_objects(schema))
        assert objects, fam
        for o in objects:
            assert o["additionalProperties"] is False, fam
            assert o["required"] == list(o["properties"]), f"{fam}: every property must be a required key"
        assert 3 <= len(schema["properties"]) <= 8, fam


@pytest.mark.parametrize("split", ["json_test", "json_train", "json_unseen"])
def test_json_expected_matches_its_schema(
    split: str, request: pytest.FixtureRequest, family_schemas: dict[str, dict[str, Any]]
) -> None:
    schemas = dict(family_schemas)  # the generic families' schemas are inline only: one per family
    validators = {}
    for case in request.getfixturevalue(split):
        fam = family_of(case)
        schema = schemas.setdefault(fam, case["schema"])
        assert case["schema"] == schema, f"{case.id}: inline schema differs from the family's ({fam})"
        if fam not in validators:
            Draft202012Validator.check_schema(schema)
            assert all(o["additionalProperties"] is False for o in walk_objects(schema)), fam
            validators[fam] = Draft202012Validator(schema, format_checker=FormatChecker())
        errors = [e.message for e in validators[fam].iter_errors(case["expected"])]
        assert schema["required"] == list(case["expected"]), case.id
        assert not errors, f"{case.id}: {errors}"
        for s in all_strings(case["expected"]):
            assert s == unicodedata.normalize("NFC", s), f"{case.id}: {s!r} is not NFC"
            assert s == " ".join(s.split()), f"{case.id}: {s!r} has untidy whitespace"
        assert case["text"] == unicodedata.normalize("NFC", case["text"])


@pytest.mark.parametrize("split", ["json_test", "json_train", "json_unseen"])
def test_json_labels_score_perfectly(split: str, request: pytest.FixtureRequest) -> None:
    """The expected object, as a completion, gets full marks from the eval's own scorers."""
    for case in request.getfixturevalue(split):
        data = scorers.json_valid(json.dumps(case["expected"], ensure_ascii=False))
        assert scorers.matches_schema(data, case["schema"]).value == 1.0, case.id
        assert scorers.type_correctness(data, case["schema"]).value == 1.0, case.id
        assert scorers.field_accuracy(data, case["expected"], at_least=1.0).value == 1.0, case.id


def test_json_entities_disjoint(json_test: list[Case], json_train: list[Case]) -> None:
    def key(c: Case) -> tuple[Any, ...]:
        fam = family_of(c)
        return (fam, *(c["expected"][f] for f in KEY_FIELDS[fam]))

    def people(cases: list[Case]) -> set[str]:
        out = set()
        for c in cases:
            for f in PERSON_FIELDS.get(family_of(c), ()):
                out.add(norm(c["expected"][f]))
        return out

    json_train = [c for c in json_train if family_of(c) in FAMILIES]
    train_keys = {key(c) for c in json_train}
    clashes = [c.id for c in json_test if key(c) in train_keys]
    assert not clashes, f"test cases whose key entities also occur in train: {clashes}"
    assert not people(json_test) & people(json_train)
    ids = {"order": "order_id", "invoice": "invoice_number", "shipment": "tracking_number"}
    for fam, field in ids.items():
        test_ids = {c["expected"][field] for c in json_test if family_of(c) == fam}
        assert not test_ids & {c["expected"][field] for c in json_train if family_of(c) == fam}, fam


def test_cases_file_is_unchanged() -> None:
    """The 150 in-distribution cases stay byte-identical: the committed baseline was recorded on them."""
    import hashlib

    assert hashlib.sha256((JSON_DIR / "cases.jsonl").read_bytes()).hexdigest() == CASES_SHA256


def test_unseen_families_never_appear_in_training(json_unseen: list[Case], json_train: list[Case]) -> None:
    """No train row uses a held-out family, by tag, by schema or by the set of keys it asks for."""
    assert len(json_unseen) == N_UNSEEN
    assert all("unseen" in c.tags and level_of(c) for c in json_unseen)
    unseen = {family_of(c) for c in json_unseen}
    assert unseen == set(UNSEEN_FAMILIES) and len(unseen) >= 10
    assert not unseen & (set(FAMILIES) | set(GENERIC_FAMILIES))
    train_tags = {t for c in json_train for t in c.tags}
    assert not unseen & train_tags
    train_schemas = {json.dumps(c["schema"], sort_keys=True) for c in json_train}
    train_keysets = {frozenset(c["schema"]["properties"]) for c in json_train}
    for c in json_unseen:
        assert json.dumps(c["schema"], sort_keys=True) not in train_schemas, c.id
        assert frozenset(c["schema"]["properties"]) not in train_keysets, c.id
    assert not {norm(c["text"]) for c in json_unseen} & {norm(c["text"]) for c in json_train}
    assert len({c.id for c in json_unseen}) == N_UNSEEN


def test_json_texts_are_short(json_test: list[Case]) -> None:
    """The embedded model is tiny: keep prompts small (about 400 tokens with the schema)."""
    for c in json_test:
        limit = 320 if level_of(c) == "easy" else 800
        assert len(c["text"]) <= limit, f"{c.id}: {len(c['text'])} characters"


# --------------------------------------------------------------------------- Q&A


def test_qa_tag_distribution(qa_test: list[Case], qa_train: list[Case]) -> None:
    for c in qa_test + qa_train:
        kinds = [t for t in c.tags if t in QA_KINDS]
        assert len(kinds) == 1, f"{c.id}: tags {c.tags}"
    assert Counter(next(t for t in c.tags if t in QA_KINDS) for c in qa_test) == dict.fromkeys(QA_KINDS, 50)
    train_kinds = Counter(next(t for t in c.tags if t in QA_KINDS) for c in qa_train)
    assert all(abs(train_kinds[k] - N_TRAIN / 3) <= 1 for k in QA_KINDS)


@pytest.mark.parametrize("split", ["qa_test", "qa_train"])
def test_qa_key_facts_are_grounded(split: str, request: pytest.FixtureRequest) -> None:
    for c in request.getfixturevalue(split):
        facts = c["key_facts"]
        assert 1 <= len(facts) <= 3, c.id
        assert all(isinstance(f, str) and f.strip() and len(f.split()) <= 5 for f in facts), c.id
        assert 2 <= len(re.findall(r"[.!?](?:\s|$)", c["context"])) <= 6, f"{c.id}: 2-6 sentences"
        for f in facts:
            assert contains(c["reference"], f), f"{c.id}: key fact {f!r} missing from the reference"
        if "derivation" in c:
            assert "reasoning" in c.tags, c.id
            lhs, rhs = (s.strip() for s in c["derivation"].split("="))
            assert eval_arith(lhs) == int(rhs), f"{c.id}: wrong derivation {c['derivation']!r}"
            assert facts == [rhs], f"{c.id}: key fact is not the derived value"
            for operand in re.findall(r"\d+", lhs):
                assert contains(c["context"], operand), f"{c.id}: operand {operand} is not in the context"
        else:
            for f in facts:
                assert contains(c["context"], f), f"{c.id}: key fact {f!r} is not in the context"


@pytest.mark.parametrize("split", ["qa_test", "qa_train"])
def test_qa_reference_passes_the_scorers(split: str, request: pytest.FixtureRequest) -> None:
    """The reference answer, as a completion, passes key_facts and faithfulness as test_qa.py calls them."""
    for c in request.getfixturevalue(split):
        allowed = f"{c['question']} {c.get('derivation', '')}"
        assert scorers.key_facts(c["reference"], c["key_facts"], at_least=1.0).value == 1.0, c.id
        scorers.faithfulness(c["reference"], c["context"], extra=allowed, at_least=0.5)


def test_qa_entities_disjoint(qa_test: list[Case], qa_train: list[Case]) -> None:
    train_words = set()
    for c in qa_train:
        train_words.update(re.findall(r"\w+", f"{c['context']} {c['question']}"))
    for c in qa_test:
        assert c["entities"], c.id
        for e in c["entities"]:
            assert contains(c["context"] + " " + c["question"], e), f"{c.id}: entity {e!r} not in the text"
            assert e not in train_words, f"{c.id}: entity {e!r} also occurs in train"


def test_judge_calibration() -> None:
    rows = load_cases(QA_DIR / "judge_calibration.jsonl")
    assert len(rows) >= 35
    scores = Counter()
    for r in rows:
        for field in ("context", "question", "reference", "answer", "note"):
            assert isinstance(r[field], str) and r[field].strip(), f"{r.id}: {field}"
        assert r["human_score"] in (1, 2, 3, 4, 5), r.id
        scores[r["human_score"]] += 1
    assert all(scores[s] >= 4 for s in range(1, 6)), scores
    injected = [r for r in rows if re.search(r"score|rubric|grader|evaluator", r["answer"], re.I)]
    assert len(injected) >= 3
    assert all(r["human_score"] <= 2 for r in injected), (
        "the rubric caps answers that instruct the grader at 2"
    )
    assert any(r["human_score"] == 1 for r in injected), "an injected wrong answer must score 1"
