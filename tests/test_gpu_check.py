"""scripts/gpu_check.py: its CPU dry run end to end (real games, real measurements, the report read back), the
device-side replay against the host memory, the published curve's lookup, the deadline of the speed runs and bad
input. No timed assertions: only that figures are measured, consistent with each other and reported."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from agents.bench.gpu_check import PUBLISHED_DQN, Check, CheckSettings, published_at
from agents.bench.gpu_levers import PLAIN, DeviceFrameReplay, filled_memory
from agents.bench.gpu_report import markdown
from agents.bench.speed_benchmark import BenchSettings, DeadlinePassed, run_variant
from scripts.gpu_check import install_wheels, main, requirements

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def dry_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, str, Path]:
    out = tmp_path_factory.mktemp("gpu_check")
    assert main(["--dry-run", "--out", str(out)]) == 0
    return json.loads((out / "report.json").read_text()), (out / "report.md").read_text(), out


@pytest.mark.slow
def test_dry_run_falls_back_to_the_cpu_and_says_so(dry_run: tuple[dict, str, Path]) -> None:
    report, md, _ = dry_run
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU: no fallback to note")
    assert report["machine"]["device"] == "cpu" and report["machine"]["gpu"] is None
    assert any("no CUDA device" in note for note in report["notes"])
    assert "no CUDA device" in md and "# GPU check: CPU only" in md
    assert report["elapsed_s"] < report["deadline_s"] == CheckSettings.dry_run().deadline_s
    assert set(report["parts"]) == {"speed", "update", "learning", "sequence"}


@pytest.mark.slow
def test_dry_run_measures_sb3_and_the_full_agent_side_by_side(dry_run: tuple[dict, str, Path]) -> None:
    report, md, _ = dry_run
    speed = report["parts"]["speed"]
    assert speed["status"] == "done"
    runs = {(r["n_envs"], r["variant"]): r for r in speed["runs"]}
    assert set(runs) == {(1, "sb3"), (1, "full"), (2, "sb3"), (2, "full_cpp")}
    for (n, variant), r in runs.items():
        assert r["steps_per_s"] > 0 and r["timed_steps"] >= 8 and r["updates"] == r["timed_steps"] // 4
        assert r["vs_sb3"] == pytest.approx(r["steps_per_s"] / runs[(n, "sb3")]["steps_per_s"], abs=1e-3)
        assert f"| {n} | {variant} | {r['steps_per_s']} |" in md
    assert runs[(1, "full")]["anchors"] == runs[(2, "full_cpp")]["anchors"] == 2  # EWC with two anchors
    fastest = max((runs[(1, "full")], runs[(2, "full_cpp")]), key=lambda r: r["steps_per_s"])
    assert speed["fastest"]["steps_per_s"] == fastest["steps_per_s"]
    assert speed["fastest"]["vector"] == ("cpp" if fastest["variant"] == "full_cpp" else "python")


@pytest.mark.slow
def test_dry_run_times_each_update_lever_against_the_plain_update(dry_run: tuple[dict, str, Path]) -> None:
    report, md, _ = dry_run
    rows = {r["lever"]: r for r in report["parts"]["update"]["rows"]}
    plain = rows[PLAIN]["ms"]
    measured = [r for r in rows.values() if "ms" in r]
    assert len(measured) == 4 and all(r["ms"] > 0 for r in measured)
    for r in measured:
        assert r["speedup_vs_plain"] == pytest.approx(plain / r["ms"], rel=0.01)
        assert f"| {r['lever']} | {r['ms']} |" in md
    skipped = [r for r in rows.values() if "skipped" in r]
    assert any("CUDA" in r["skipped"] for r in skipped)  # no CUDA graph on a CPU


@pytest.mark.slow
def test_dry_run_trains_breakout_and_scores_it_over_time(dry_run: tuple[dict, str, Path]) -> None:
    report, md, out = dry_run
    learning = report["parts"]["learning"]
    assert learning["status"] == "done" and learning["game"] == "Breakout"
    assert learning["agent_steps"] > 0 and learning["frames"] == 4 * learning["agent_steps"]
    evaluations = learning["evaluations"]
    assert len(evaluations) >= 2
    steps = [e["step"] for e in evaluations]
    assert steps == sorted(steps) and steps[-1] > steps[0]
    for e in evaluations:
        assert len(e["scores"]) == CheckSettings.dry_run().eval_episodes
        assert e["score"] == pytest.approx(float(np.mean(e["scores"])), abs=0.01)
    assert evaluations[-1]["step"] == learning["agent_steps"]  # the last score is of the agent as training stopped
    assert learning["random_score"] == 1.7 and learning["published"]["iteration"] == 0
    assert learning["published"]["DQN"] == PUBLISHED_DQN["Breakout"]["DQN"][0]
    for e in evaluations:  # the published curve beside each score, at that score's frames
        assert e["published"] == {
            a: v[e["frames"] // 1_000_000] for a, v in PUBLISHED_DQN["Breakout"].items() if a != "source"
        }
    assert "| published DQN |" in md
    assert list((out / "learning" / "tb").rglob("events.out.tfevents.*")), "no TensorBoard events of the run"
    assert "Dopamine" in md or "dopamine" in md
    assert f"{learning['agent_steps']:,} agent steps" in md


@pytest.mark.slow
def test_dry_run_plays_the_revisit_with_fine_tuning_and_ewc(dry_run: tuple[dict, str, Path]) -> None:
    report, md, _ = dry_run
    sequence = report["parts"]["sequence"]
    assert sequence["status"] == "done" and sequence["games"] == ["Breakout", "Pong", "Breakout"]
    for method in ("none", "ewc"):
        run = sequence["methods"][method]
        assert run["after_segment"], f"{method}: no segment end was scored"
        first = run["after_segment"][0]
        assert first["step"] == sequence["steps_per_segment"] and set(first["scores"]) == {"Breakout", "Pong"}
    assert "| fine-tuning (none) | 1 |" in md and "| ewc | 1 |" in md


def test_device_replay_gives_the_host_memorys_stacks() -> None:
    memory = filled_memory(150, frame_shape=(4, 12, 12), transitions=420)  # both rings wrapped, episodes of 100
    on_device = DeviceFrameReplay(memory, torch.device("cpu"))
    indices = np.arange(memory.tail, memory.head)
    host, device = memory.get(indices), on_device.get(torch.as_tensor(indices))
    assert torch.equal(host.observations, device.observations)
    assert torch.equal(host.next_observations, device.next_observations)
    assert torch.equal(host.actions.long(), device.actions)
    assert torch.equal(host.rewards.unsqueeze(1), device.rewards) and torch.equal(host.dones.unsqueeze(1), device.dones)
    assert device.dones.sum() > 0  # episode ends are among them
    drawn = on_device.sample(64)
    assert drawn.observations.shape == (64, 4, 12, 12) and drawn.actions.shape == (64, 1)


def test_published_point_is_the_iteration_that_holds_the_frames() -> None:
    table = PUBLISHED_DQN["Breakout"]
    assert published_at("Breakout", 999_999)["iteration"] == 0
    point = published_at("Breakout", 1_600_000)
    assert point is not None and point["iteration"] == 1 and point["DQN"] == table["DQN"][1]
    assert point["frames"] == "1,000,000-2,000,000" and not point["beyond_table"]
    last = published_at("Breakout", 40_000_000)
    assert last is not None and last["beyond_table"] and last["iteration"] == len(table["DQN"]) - 1
    assert published_at("Pong", 1_000_000) is None
    assert all(len(v) == len(table["DQN"]) for k, v in table.items() if k != "source")


def test_requirements_are_the_projects_dependencies_without_torch(capsys: pytest.CaptureFixture[str]) -> None:
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    declared = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    listed = requirements()
    assert listed == [d for d in declared if not re.match(r"torch\b", d)] and "stable-baselines3>=2.4" in listed
    assert main(["--print-requirements"]) == 0
    assert capsys.readouterr().out.split() == listed


def test_wheels_install_offline_and_a_missing_wheel_is_a_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    install_wheels(tmp_path)  # every requirement is installed here already: pip needs no wheel and no network
    monkeypatch.setattr("scripts.gpu_check.requirements", lambda: ["cl-rl-no-such-package==0.0"])
    with pytest.raises(SystemExit, match=r"must\s+hold a wheel"):
        install_wheels(tmp_path)


def test_bad_input_exits_2_with_a_message(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--wheels", str(tmp_path / "none"), "--out", str(tmp_path)]) == 2
    assert "no such folder" in capsys.readouterr().err
    assert main(["--n-envs", "0", "--out", str(tmp_path)]) == 2
    assert main(["--game", "Brakeout", "--out", str(tmp_path)]) == 2
    assert "Breakout" in capsys.readouterr().err  # the closest valid name
    assert main(["--device", "tpu", "--out", str(tmp_path)]) == 2
    if not torch.cuda.is_available():
        assert main(["--device", "cuda", "--out", str(tmp_path)]) == 2
        assert "no CUDA device" in capsys.readouterr().err
    assert not (tmp_path / "report.json").exists()


def test_a_speed_run_past_its_deadline_before_timing_raises() -> None:
    s = BenchSettings(steps=8, warmup=8, learning_starts=64, buffer_size=500, deadline=time.perf_counter())
    with pytest.raises(DeadlinePassed, match="before"):
        run_variant("sb3", s)


@pytest.mark.slow
def test_a_speed_run_cut_short_by_its_deadline_reports_the_steps_it_timed() -> None:
    s = BenchSettings(steps=100_000, warmup=8, learning_starts=64, buffer_size=500, deadline=time.perf_counter() + 8)
    result = run_variant("sb3", s)
    assert 0 < result.timed_steps < 100_000 and result.steps_per_s > 0
    assert abs(result.updates - result.timed_steps // 4) <= 1


def test_markdown_says_why_a_part_has_no_figures() -> None:
    report = {
        "started_utc": "2026-01-01 00:00:00",
        "deadline_s": 530.0,
        "elapsed_s": 12.0,
        "command": "python scripts/gpu_check.py",
        "machine": {"device": "cuda", "gpu": "NVIDIA H100, 80 GiB", "cpus": 16, "torch": "2.5", "cuda": "12.4"}
        | {"python": "3.11", "platform": "Linux"},
        "notes": [],
        "parts": {
            "speed": {"budget_s": 100, "allowed_s": 100, "elapsed_s": 3.0, "status": "failed", "error": "OSError: x"},
            "update": {"budget_s": 45, "allowed_s": 0.5, "elapsed_s": 0.0, "status": "skipped", "note": "0 s left"},
        },
    }
    md = markdown(report)
    assert "# GPU check: NVIDIA H100, 80 GiB" in md and "Status: **failed**" in md and "`OSError: x`" in md
    assert "Status: **skipped**" in md and "0 s left" in md and "## learning: not reached" in md


def test_parts_share_one_deadline_and_a_failure_or_a_skip_is_recorded(tmp_path: Path) -> None:
    written: list[set[str]] = []
    settings = CheckSettings.dry_run(deadline_s=30.0, margin_s=1.0)
    report: dict = {"parts": {}}
    check = Check(settings, tmp_path, time.perf_counter(), "test", report, lambda r, _: written.append(set(r["parts"])))
    seen: dict[str, float] = {}

    def record(deadline: float) -> dict:
        seen["deadline"] = deadline
        return {"figure": 1.0}

    check.run_part("first", 1_000.0, record)  # a budget beyond the deadline is cut to the time left
    assert report["parts"]["first"]["status"] == "done" and report["parts"]["first"]["figure"] == 1.0
    assert report["parts"]["first"]["allowed_s"] <= 29.0 and seen["deadline"] <= check.deadline

    def fail(deadline: float) -> dict:
        raise OSError("disk full")

    check.run_part("second", 5.0, fail)
    second = report["parts"]["second"]
    assert second["status"] == "failed" and "OSError: disk full" in second["error"]
    check.run_part("third", 5.0, record, minimum=60.0)  # needs more than the deadline leaves
    assert report["parts"]["third"]["status"] == "skipped" and "needed" in report["parts"]["third"]["note"]
    assert written == [{"first"}, {"first", "second"}, {"first", "second", "third"}]  # the report after every part
