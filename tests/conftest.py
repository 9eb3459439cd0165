"""Shared fixtures: the real models (loaded once per session), llama.cpp as the oracle, and the
test prompts the project ships (tests/data/questions.jsonl, in Spec-Bench's schema) rendered with
the model's chat template (or, for Gemma 3 270M, which has none, as plain completion prompts)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from kangaroo_edge import KangarooLM
from kangaroo_edge.bench import questions as bench_questions
from kangaroo_edge.models import default_model_path, gemma3_270m_path, qwen_coder_path

# 2 = the CI machine's cores; KE_TEST_THREADS=1 keeps a shared development machine responsive
TEST_THREADS = int(os.environ.get("KE_TEST_THREADS", "2"))
TEST_N_CTX = 2048
REPO = Path(__file__).resolve().parents[1]
QUESTIONS = Path(__file__).resolve().parent / "data" / "questions.jsonl"  # the project's own test prompts


def pytest_sessionstart(session):
    """llama.cpp is the oracle: on an AMX build of it, it runs without its repacked weights (see
    LlamaCpp), while our engine keeps them, and their logits differ by more than the tests allow."""
    from kangaroo_edge.llamacpp import cpu_extra_buffer_types

    if "AMX" in cpu_extra_buffer_types():
        pytest.exit("llama-cpp-python was built with AMX on this AMX CPU, so llama.cpp cannot serve as the "
                    "tests' oracle: rebuild it as README.md's \"CPUs with AMX\" says", returncode=3)


def load_questions(n: int) -> list[dict]:
    """The first n test questions, in the benchmark's order (round-robin over the categories)."""
    questions = bench_questions.load_questions(QUESTIONS, limit=n)
    assert len(questions) == n, f"{QUESTIONS} has {len(questions)} questions, a test asks for {n}"
    return questions


def chat_prompt(lm: KangarooLM, question: dict) -> str:
    return lm.apply_chat_template([{"role": "user", "content": question["turns"][0]}])


@pytest.fixture(scope="session", autouse=True)
def run_outside_the_source_tree(tmp_path_factory):
    """Subprocesses started with `python -m kangaroo_edge...` put the working directory first on
    sys.path; from the repository root they would import the source tree (which has no compiled
    extension on a fresh clone) instead of the installed package."""
    old = os.getcwd()
    os.chdir(tmp_path_factory.mktemp("cwd"))
    yield
    os.chdir(old)


@pytest.fixture(scope="session")
def smollm_path() -> Path:
    return default_model_path()


@pytest.fixture(scope="session")
def qwen_path() -> Path:
    return qwen_coder_path()


@pytest.fixture(scope="session")
def gemma3_path() -> Path:
    return gemma3_270m_path()


@pytest.fixture(scope="session")
def gemma3(gemma3_path) -> KangarooLM:
    return KangarooLM(gemma3_path, n_ctx=TEST_N_CTX, n_threads=TEST_THREADS, device="cpu")


@pytest.fixture(scope="session")
def smollm(smollm_path) -> KangarooLM:
    return KangarooLM(smollm_path, n_ctx=TEST_N_CTX, n_threads=TEST_THREADS, device="cpu")


@pytest.fixture(scope="session")
def qwen(qwen_path) -> KangarooLM:
    return KangarooLM(qwen_path, n_ctx=TEST_N_CTX, n_threads=TEST_THREADS, device="cpu")


@pytest.fixture(scope="session", params=["smollm", "qwen"])
def any_model(request) -> KangarooLM:
    return request.getfixturevalue(request.param)
