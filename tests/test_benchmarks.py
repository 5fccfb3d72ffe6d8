"""The benchmark scripts run and report what they measured (no timing asserts)."""

import dataclasses
import importlib.util
import json
import math
import pathlib
import subprocess
import sys

import numpy as np
import pytest

BENCHMARKS = pathlib.Path(__file__).resolve().parent.parent / "benchmarks"


def _load(name: str):
  spec = importlib.util.spec_from_file_location(
      f"benchmarks_{name}", BENCHMARKS / f"{name}.py")
  module = importlib.util.module_from_spec(spec)
  sys.modules[spec.name] = module  # dataclasses look their module up there
  spec.loader.exec_module(module)
  return module


def test_inference_benchmark_writes_rows_and_compares(tmp_path):
  out = tmp_path / "run.json"
  command = [sys.executable, str(BENCHMARKS / "inference.py"), "--configs",
             "default", "--batches", "1", "--repeats", "1", "--json", str(out)]
  first = subprocess.run(command, capture_output=True, text=True, check=True)
  assert "fraction_of_peak" in first.stdout
  rows = json.loads(out.read_text())["rows"]
  assert [(r["config"], r["batch"]) for r in rows] == [("default", 1)]
  assert rows[0]["ms_per_frame"] > 0 and rows[0]["achieved_flops_per_s"] > 0
  second = subprocess.run(command + ["--compare", str(out)],
                          capture_output=True, text=True, check=True)
  assert "speed-up" in second.stdout and "default" in second.stdout


def test_cpu_flags_sweep_reports_unknown_flags_on_their_own_row(monkeypatch):
  cpu_flags = _load("cpu_flags")
  monkeypatch.setitem(cpu_flags.SETTINGS, "bogus",
                      cpu_flags.Setting("--xla_cpu_no_such_flag_for_tests=true"))
  table = cpu_flags.sweep(["baseline", "bogus"], ["default"], [1], rounds=1,
                          repeats=1)
  baseline = [r for r in table if r["setting"] == "baseline"]
  assert len(baseline) == 1
  assert baseline[0]["ms_per_frame"] > 0
  assert math.isclose(baseline[0]["speed_up_vs_baseline"], 1.0)
  bogus = [r for r in table if r["setting"] == "bogus"]
  assert len(bogus) == 1 and "ms_per_frame" not in bogus[0]
  assert bogus[0]["error"]


def test_cpu_flags_settings_start_with_the_baseline():
  cpu_flags = _load("cpu_flags")
  assert next(iter(cpu_flags.SETTINGS)) == "baseline"
  assert cpu_flags.SETTINGS["baseline"] == cpu_flags.Setting()
  assert cpu_flags.SETTINGS["one_core"].describe() == "taskset -c 0"
  with pytest.raises(KeyError):
    cpu_flags.run_setting("no_such_setting", ["default"], [1], 1)


def test_saved_inference_results_compare_and_flag_slower_rows(capsys):
  from xfactor_core import benchmarking
  saved = BENCHMARKS / "results" / "inference_cpu_2core.json"
  rows = json.loads(saved.read_text())["rows"]
  assert {(r["config"], r["batch"]) for r in rows} == {
      (c, b) for c in ("published", "small", "default") for b in (1, 8)}
  default = next(r for r in rows if (r["config"], r["batch"]) == ("default", 1))
  twice_as_slow = {**default, "ms_per_frame": 2 * default["ms_per_frame"]}
  benchmarking.compare_rows(str(saved), [twice_as_slow],
                            key=("config", "batch"), metric="ms_per_frame",
                            higher_is_better=False)
  line = next(l for l in capsys.readouterr().out.splitlines()
              if l.startswith("default"))
  assert "0.5" in line and line.rstrip().endswith("slower")


def test_image_metrics_benchmark_compares_ours_with_dm_pix(tmp_path):
  pytest.importorskip("dm_pix")
  out = tmp_path / "run.json"
  command = [sys.executable, str(BENCHMARKS / "image_metrics.py"), "--shapes",
             "2x16", "--repeats", "1", "--json", str(out)]
  printed = subprocess.run(command, capture_output=True, text=True,
                           check=True).stdout
  assert "vs_ours" in printed
  rows = json.loads(out.read_text())["rows"]
  assert {(r["computation"], r["implementation"]) for r in rows} == {
      (c, i) for c in ("loss+grad", "psnr") for i in ("ours", "dm-pix")}
  # Both compute the same SSIM, gradient and PSNR (to float32 rounding).
  assert all(r["max_rel_diff"] < 1e-4 and r["ms"] > 0 for r in rows)


def test_pose_probe_trains_arms_and_saves_their_encoders(tmp_path, capsys):
  """At a tiny size: the table has every arm, the loss falls on a training set
  small enough to fit, and the saved encoder loads as a checkpoint."""
  from xfactor_core import checkpoints  # pylint: disable=import-outside-toplevel
  probe = _load("pose_probe")
  out = tmp_path / "probe.json"
  probe.main(["--workdir", str(tmp_path / "work"), "--arms", "fused",
              "correlation@0.5", "--max-steps", "60", "--size", "64",
              "--features", "32", "--num-heads", "2", "--layers", "1",
              "--pose-dim", "8", "--global-tokens", "2", "--batch-size", "8",
              "--peak-lr", "3e-3", "--train-clips", "4", "--test-clips", "4",
              "--parallel", "2", "--json", str(out)])
  printed = capsys.readouterr().out
  assert "| fused |" in printed and "| correlation@0.5 |" in printed
  results = json.loads(out.read_text())
  for arm, result in results.items():
    assert result["steps"] == 60
    assert result["last_loss"] < 0.7 * result["first_loss"], arm
    assert set(result["r2"]["standard"]) == set(probe.TABLE_TERMS)
  assert "own_range" in results["correlation@0.5"]["r2"]
  params = checkpoints.load_params(tmp_path / "work" / "correlation@0.5")
  assert "CorrelationStem_0" in params["PoseEnc"]
  # Each child trained with the flags given here, none at its default.
  base = probe.ProbeSettings(max_steps=60, size=64, features=32, num_heads=2,
                             layers=1, pose_dim=8, global_tokens=2,
                             batch_size=8, peak_lr=3e-3, train_clips=4,
                             test_clips=4)
  for arm, pair_input, motion in (("fused", "fused", 1.0),
                                  ("correlation@0.5", "correlation", 0.5)):
    assert results[arm]["settings"] == dataclasses.asdict(dataclasses.replace(
        base, pair_input=pair_input, motion_factor=motion))


def _unlike_defaults(probe):
  """Pose-probe settings with every field away from its default."""
  other = lambda v: v + "-other" if isinstance(v, str) else v * 2 + 3
  return probe.ProbeSettings(**{
      f.name: other(f.default) for f in dataclasses.fields(probe.ProbeSettings)})


def test_pose_probe_settings_reach_the_child_whole():
  """Every setting has a flag, travels to the child's command line as JSON
  and comes back equal, with its type; a job that lacks a field or has an
  unknown one is refused instead of falling back to a default."""
  probe = _load("pose_probe")
  wanted = _unlike_defaults(probe)
  defaults = probe.ProbeSettings()
  fields = dataclasses.fields(probe.ProbeSettings)
  assert all(getattr(wanted, f.name) != getattr(defaults, f.name)
             for f in fields)
  flags = ["--workdir", "w", "--arms", "conv@0.5"]
  for f in fields:
    if f.name not in probe.ARM_FIELDS:
      flags += [f"--{f.name.replace('_', '-')}", str(getattr(wanted, f.name))]
  args = probe.parse_args(flags)
  base = probe.settings_from_args(args)
  assert base == dataclasses.replace(wanted, pair_input=defaults.pair_input,
                                     motion_factor=defaults.motion_factor)
  jobs = probe.arm_jobs("w", base, args.arms)
  assert list(jobs) == ["conv@0.5"]
  job = jobs["conv@0.5"]
  assert job.settings == dataclasses.replace(base, pair_input="conv",
                                             motion_factor=0.5)
  command = probe.arm_command(job)
  assert command[1] == probe.__file__
  child = probe.parse_args(command[2:])
  received = probe.ArmJob.from_json(child.run_arm)
  assert received == job
  for f in fields:
    assert type(getattr(received.settings, f.name)) is type(f.default), f.name
  values = json.loads(job.to_json())
  del values["settings"]["peak_lr"]
  with pytest.raises(ValueError, match="missing.*peak_lr"):
    probe.ArmJob.from_json(json.dumps(values))
  values["settings"].update(peak_lr=1e-3, learning_rate=1e-3)
  with pytest.raises(ValueError, match="unknown.*learning_rate"):
    probe.ArmJob.from_json(json.dumps(values))


def test_pose_probe_steps_and_batches():
  """The step count follows the time budget unless max_steps is set, and a
  mirrored training pair carries the mirrored terms."""
  probe = _load("pose_probe")
  assert probe.step_count(probe.ProbeSettings(minutes=1.0), 0.5) == 120
  assert probe.step_count(probe.ProbeSettings(minutes=1.0), 60.0) == 10
  assert probe.step_count(probe.ProbeSettings(max_steps=7), 0.5) == 7
  rng = np.random.default_rng(0)
  train = {"frames": rng.integers(0, 256, (4, 2, 8, 8, 3), dtype=np.uint8),
           "terms": rng.normal(size=(4, 5)).astype(np.float32)}
  frames, terms = probe.sample_batch(np.random.default_rng(1), train, 64,
                                     np.zeros(5), np.ones(5))
  mirrored = 0
  for pair, term in zip(frames, terms):
    plain = [i for i in range(4) if np.array_equal(pair, train["frames"][i])]
    flipped = [i for i in range(4)
               if np.array_equal(pair, train["frames"][i][:, :, ::-1])]
    assert len(plain) + len(flipped) == 1
    if flipped:
      mirrored += 1
      expected = probe.global_motion.flip_terms(train["terms"][flipped[0]])
    else:
      expected = train["terms"][plain[0]]
    np.testing.assert_allclose(term, expected, rtol=1e-6)
  assert 10 < mirrored < 54


def test_app_benchmark_published_mode_fetches_and_streams(tmp_path):
  """The published mode end to end at a tiny size: a release archive served
  locally, fetched by the CLI, transferred streamed and in the old order."""
  out = tmp_path / "app.json"
  done = subprocess.run(
      [sys.executable, str(BENCHMARKS / "app.py"), "--mode", "published",
       "--published-size", "tiny", "--frames", "3", "--repeats", "1",
       "--json", str(out)], capture_output=True, text=True, check=True)
  assert "first_call_first_frame_s" in done.stdout
  result = json.loads(out.read_text())
  orders = [r["order"] for r in result["published"]]
  assert orders[0].startswith("streamed") and orders[1].startswith("pre-")
  for row in result["published"]:
    assert 0 < row["warm_first_frame_s"] <= row["warm_total_s"]
  facts = result["published_facts"]
  assert 0 < facts["installed_GB"] < facts["archive_GB"]
  assert facts["fetch_s"] > 0 and facts["fetch_peak_rss_GB"] > 0
  assert facts["estimate_before_s"] > 0 and facts["estimate_after_s"] > 0
  assert 0.5 < facts["estimate_vs_xla_flops"] < 2.0
