"""The CLI's other subcommands, run as a user runs them: generate --json, info, bench, --help,
and user errors (one line on stderr, non-zero exit, no traceback)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from conftest import QUESTIONS, REPO
from kangaroo_edge.bench.runner import SYSTEMS

SMALL = ["-c", "1024", "-t", "2"]


def cli(*args: str, timeout: float = 900) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "kangaroo_edge.cli.main", *args], capture_output=True, text=True,
                          timeout=timeout)


def test_generate_json_fields():
    r = cli("generate", "-p", "The kangaroo is", "-n", "16", *SMALL, "--json")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert set(out) >= {"text", "token_ids", "finish_reason", "timings"}
    assert out["finish_reason"] in ("stop", "length") and 0 < len(out["token_ids"]) <= 16
    for key in ("prompt_n", "cache_n", "prompt_ms", "predicted_n", "predicted_ms", "prompt_per_second",
                "predicted_per_second", "speculative"):
        assert key in out["timings"], key
    assert out["timings"]["predicted_n"] == len(out["token_ids"])


@pytest.mark.parametrize("flags, lookup", [([], True), (["--no-lookup"], False), (["--tau", "0.6"], False),
                                           (["--tau", "0.6", "--lookup"], True)])
def test_generate_lookup_flag(flags, lookup):
    """Prompt lookup: on with the controller, off with a fixed --tau, either way when asked."""
    r = cli("generate", "--chat", "-p", "Repeat exactly: one two three, one two three, one two three.", "-n", "24",
            *SMALL, "--json", *flags)
    assert r.returncode == 0, r.stderr
    timings = json.loads(r.stdout)["timings"]
    assert timings["speculative"] and timings["lookup"] is lookup
    if not lookup:
        assert [d["cycles"] for d in timings["by_drafter"] if d["name"] == "lookup"] == [0]


def test_generate_penalty_flags_equal_the_library(smollm):
    """--repeat-penalty, --repeat-last-n, --presence-penalty, --frequency-penalty (llama.cpp's flags)."""
    prompt, flags = "1, 2, 3, 1, 2, 3, 1, 2, 3,", ["--repeat-penalty", "1.3", "--repeat-last-n", "16",
                                                   "--presence-penalty", "0.5", "--frequency-penalty", "0.25"]
    r = cli("generate", "-p", prompt, "-n", "24", *SMALL, "--json", *flags)
    assert r.returncode == 0, r.stderr
    smollm.reset()
    want = smollm.generate(prompt, 24, repeat_penalty=1.3, repeat_last_n=16, presence_penalty=0.5,
                           frequency_penalty=0.25)
    assert json.loads(r.stdout)["token_ids"] == want.token_ids


def test_info_table_and_json():
    r = cli("info", *SMALL)
    assert r.returncode == 0, r.stderr
    for word in ("architecture", "llama", "30 layers", "Q4_1", "n_ctx_train", "fingerprint", "backend", "adapter", "matmuls"):
        assert word in r.stdout, word
    assert "architectures llama, qwen2, qwen3, gemma3" in r.stdout
    r = cli("info", *SMALL, "--json")
    assert r.returncode == 0, r.stderr
    info = json.loads(r.stdout)
    assert info["arch"] == "llama" and info["n_layer"] == 30 and info["file_type"] == "Q4_1"
    assert info["n_threads"] == 2 and info["n_ctx"] == 1024
    assert info["supported_architectures"] == ["llama", "qwen2", "qwen3", "gemma3"]
    assert set(info["matmul_paths"]) == {"Q4_1", "Q8_0"}  # the default model's matrix types
    assert all(p.startswith(("kernels (", "ggml mul_mat (")) for p in info["matmul_paths"].values())
    # the embedded model comes with its shipped adapter, which must be built for exactly this model file
    adapter = info["adapter"]
    assert adapter["path"].endswith(".kangaroo.gguf") and adapter["matches_model"]
    assert adapter["base_fingerprint"] == info["fingerprint"] and adapter["exit_layer"] < info["n_layer"]
    assert len(info["fingerprint"]) == 16 and info["file_bytes"] > 0 and info["n_ctx_train"] > 0


@pytest.mark.parametrize("command", ["chat", "generate", "info", "bench", "serve"])
def test_help_describes_every_flag(command):
    r = cli(command, "--help")
    assert r.returncode == 0 and "usage:" in r.stdout
    assert "-m MODEL" in r.stdout and "-t THREADS" in r.stdout


def _one_line_error(r: subprocess.CompletedProcess) -> None:
    assert r.returncode != 0
    assert "Traceback" not in r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "error" in lines[0], r.stderr


@pytest.mark.parametrize("args", [
    ["chat", "-n", "0"],
    ["generate", "-p", "x", "--temp", "hot"],
    ["generate", "-p", "x", "-t", "-3"],
    ["generate", "-p", "x", "--top-p", "1.5"],
    ["generate", "-p", "x", "--repeat-penalty", "0"],
    ["generate", "-p", "x", "--repeat-penalty", "inf"],
    ["generate", "-p", "x", "--repeat-last-n", "-2"],
    ["generate", "-p", "x", "--presence-penalty", "nan"],
    ["generate", "-p", "x", "--bogus-flag"],
    ["generate", "-p", "x", "-m", "/nonexistent/model.gguf"],
    ["info", "-m", str(REPO / "README.md")],  # not a GGUF
    ["info", *SMALL, "--adapter", "/nonexistent/adapter.gguf"],
    ["info", *SMALL, "--adapter", str(REPO / "README.md")],
    ["bench", "--questions", "/nonexistent/q.jsonl"],
    ["bench", "--questions", str(QUESTIONS), "--categories", "no_such_category", "-c", "1024"],
    ["bench", "--limit", "0"],
    ["serve", "--port", "70000"],
    ["serve", "--max-queue", "0"],
    ["no-such-command"],
    [],
])
def test_user_errors_are_one_line(args):
    _one_line_error(cli(*args))


@pytest.mark.parametrize("command", ["chat", "generate", "info", "bench", "train", "convert"])
def test_every_command_has_help(command):
    r = cli(command, "--help")
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith(f"usage: kangaroo-edge {command}")


def test_bench_tune_with_a_fixed_tau_measures_every_draft_length(tmp_path):
    """--tune with forced drafting (a fixed tau never takes a plain step): the cost model still
    has a measured plain step, a measured cost for every k from 1 to gamma, and the ratios
    against our plain step and llama.cpp's step from the same run."""
    js = tmp_path / "b.json"
    r = cli("bench", "--questions", str(QUESTIONS), "--limit", "3", "--max-new-tokens", "24", "-t", "2",
            "--systems", "llamacpp_plain,ours_plain,ours_kangaroo", "--tau", "0", "--gamma", "8", "--tune",
            "--no-progress", "--json", str(js))
    assert r.returncode == 0, r.stderr
    assert "Traceback" not in r.stderr
    cm = json.loads(js.read_text())["cost_model"]
    assert cm["plain_measured"] and cm["plain_seconds"] > 0
    assert cm["llamacpp_step_seconds"] > 0
    adapter = cm["drafters"]["adapter"]
    assert adapter["verify_measured"][:8] == [True] * 8
    assert all(v > 0 for v in adapter["verify_seconds"][:8])
    assert all(x > 0 for x in adapter["verify_vs_plain"][:8] + adapter["verify_vs_llamacpp"][:8])
    assert "k=8 (8 rows)" in r.stdout and "llama.cpp" in r.stdout
    # tau = 0 runs to gamma with confident drafts: the bonus row's step was measured and printed
    assert adapter["bonus_step_measured"] and "adapter: bonus row step" in r.stdout
    assert "lookup: bonus row step" not in r.stdout  # lookup's rows already end with one


def test_bench_small_run(tmp_path):
    js, md, png = tmp_path / "b.json", tmp_path / "b.md", tmp_path / "b.png"
    r = cli("bench", "--questions", str(QUESTIONS), "--limit", "2", "--max-new-tokens", "8",
            "--categories", "qa,writing", "-t", "2", "--no-progress",
            "--json", str(js), "--markdown", str(md), "--chart", str(png))
    assert r.returncode == 0, r.stderr
    assert "| **overall** |" in r.stdout and md.read_text() in r.stdout
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    res = json.loads(js.read_text())
    assert set(res) >= {"config", "machine", "model", "load_seconds", "kangaroo_fallback", "questions", "summary"}
    cfg = res["config"]
    assert cfg["threads"] == 2 and cfg["max_new_tokens"] == 8 and cfg["n_questions"] == 2
    assert cfg["categories"] == ["qa", "writing"] and cfg["systems"] == list(SYSTEMS)
    assert {"cpu", "cpu_count", "platform", "llama_cpp_python", "ggml"} <= set(res["machine"])
    assert sorted(q["category"] for q in res["questions"]) == ["qa", "writing"]
    for q in res["questions"]:
        assert {"question_id", "category", "n_prompt_tokens", "order", "systems", "match_kangaroo_vs_plain",
                "match_plain_vs_llamacpp", "match_pld_vs_llamacpp"} <= set(q)
        assert set(q["systems"]) == set(SYSTEMS) and sorted(q["order"]) == sorted(SYSTEMS)
        for run in q["systems"].values():
            assert {"n_tokens", "tokens_per_second", "generation_seconds", "prefill_seconds",
                    "prefill_tokens_per_second", "token_ids"} <= set(run)
            assert 0 < run["n_tokens"] <= 8
        assert q["match_plain_vs_llamacpp"] is True  # greedy: our plain decoding is llama.cpp's
        assert q["match_kangaroo_vs_plain"] is True  # lossless (or the plain fallback)
    if res["kangaroo_fallback"] is None:  # an adapter was used: the speculation counters are there
        assert all("mean_accepted" in q["systems"]["ours_kangaroo"] for q in res["questions"])
    for group in ("qa", "writing", "overall"):
        g = res["summary"][group]
        assert {"n_questions", "systems", "match_rate_kangaroo_vs_plain", "match_rate_plain_vs_llamacpp"} <= set(g)
        for name in SYSTEMS:
            s = g["systems"][name]
            assert {"median_tokens_per_second", "median_prefill_tokens_per_second", "speedup_vs_llamacpp",
                    "speedup_vs_ours_plain", "total_tokens"} <= set(s)
        assert "mean_accepted" in g["systems"]["llamacpp_pld"]
