"""The queue's wait bound: the estimate of a new job's wait, the refusal of
one over the bound, and the wiring that keeps a refused job out of the
queue. Plain functions and handlers; tests/test_app_browser.py shows both
states in a browser."""

import types

import gradio as gr
import pytest

from xfactor_core.app import (estimates, layout, presets, registry, testing,
                              ui)

LIBRARY = presets.load_presets()
CAT = str(LIBRARY.context("photo: cat").files[0])
FORM = {"context": [CAT], "num_frames": 30, "resolution": "native"}


@pytest.fixture(scope="module")
def models(reference_dir, tmp_path_factory):
  folder = testing.write_test_checkpoints(
      tmp_path_factory.mktemp("ckpts"),
      reference_dir / "official_format_checkpoint")
  return registry.ModelRegistry(
      registry.discover_models(folder, defaults={}), batch_size=4)


@pytest.fixture
def sm(models):
  return next(s.model_id for s in models.specs
              if s.kind == "stereo-monocular")


@pytest.fixture
def studio(models, tmp_path):
  return ui.Studio(models, LIBRARY, work_root=tmp_path / "work")


def test_the_wait_is_the_jobs_ahead_plus_this_one():
  job = estimates.Estimate(90.0, measured=True)
  wait = estimates.queue_wait(3, job)
  assert wait.seconds == 360.0
  assert wait.describe() == ("Queued: 3 jobs ahead of yours; estimated wait "
                             "until your result about 6.0 min.")
  assert estimates.queue_wait(1, job).describe().startswith(
      "Queued: 1 job ahead of yours")
  assert estimates.queue_wait(0, job).describe() == ""
  assert estimates.queue_wait(2, None).seconds is None
  assert estimates.queue_wait(2, None).describe() == (
      "Queued: 2 jobs ahead of yours.")
  assert estimates.queue_wait(-1, job).ahead == 0
  assert [estimates.format_seconds(s) for s in (0.013, 4.24, 42.4, 300)] == [
      "0.01 s", "4.2 s", "42 s", "5.0 min"]


def test_a_wait_over_the_bound_is_refused_with_the_wait_named():
  job = estimates.Estimate(100.0, measured=False)
  assert estimates.queue_wait(4, job).admitted(600)  # 500 s
  over = estimates.queue_wait(6, job)  # 700 s
  assert not over.admitted(600)
  message = over.refusal(600)
  assert "6 jobs ahead of yours" in message
  assert "about 11.7 min" in message and "limit of 10.0 min" in message
  assert "Nothing was queued" in message
  # Nothing ahead, no bound, or no estimate yet: the job is queued.
  assert estimates.queue_wait(0, estimates.Estimate(9e9, False)).admitted(1)
  assert over.admitted(0) and over.admitted(None)
  assert estimates.queue_wait(30, None).admitted(1)


def test_the_bound_comes_from_the_flag_or_the_environment():
  assert estimates.max_wait_seconds(None, {}) == 600.0
  assert estimates.max_wait_seconds(None, {"XFACTOR_MAX_WAIT_S": "120"}) == 120
  assert estimates.max_wait_seconds(30, {"XFACTOR_MAX_WAIT_S": "120"}) == 30
  assert estimates.max_wait_seconds(None, {"XFACTOR_MAX_WAIT_S": "0"}) == 0
  with pytest.raises(ValueError, match="XFACTOR_MAX_WAIT_S='ten'"):
    estimates.max_wait_seconds(None, {"XFACTOR_MAX_WAIT_S": "ten"})
  with pytest.raises(ValueError, match="0 \\(off\\) or a positive"):
    estimates.max_wait_seconds(-5, {})


def test_estimates_use_measured_speed_once_known(models, sm, monkeypatch):
  monkeypatch.setattr(estimates, "host_flops", lambda: 2e9)
  pipe = models.get(sm)
  estimator = estimates.Estimator()
  first = estimator.estimate_seconds(sm, pipe, 10, 1)
  assert not first.measured
  assert first.seconds == pytest.approx(10 * pipe.flops_per_frame(1) / 1e9)
  estimator.record_speed(sm, pipe, 1, 0.5)
  estimator.record_speed(sm, pipe, 1, 1.5)  # averaged with the last
  assert estimator.estimate_seconds(sm, pipe, 10, 1) == estimates.Estimate(
      10.0, measured=True)
  assert "as this model ran before" in estimates.Estimate(
      10.0, True).describe()


def test_open_job_refuses_a_job_over_the_bound(studio, models, sm):
  models.get(sm)  # loaded: its estimate is known
  studio.estimator.record_speed(sm, models.get(sm), 1, 2.0)  # 60 s a job
  studio.queue_depth = lambda: 4
  studio.max_wait_s = 240.0  # 5 x 60 s = 300 s is over it
  refused = studio.open_job({"model": sm, **FORM})
  assert refused["job"] is None and len(studio.job_board) == 0
  assert refused["status"].startswith("**Not queued.** The queue is too long")
  assert ("4 jobs ahead of yours, an estimated wait of about 5.0 min"
          in refused["status"])
  with pytest.raises(gr.Error, match="the status says how long") as stopped:
    studio.admit(refused)  # the chain ends before the queue
  assert stopped.value.title == "Queue too long"
  studio.max_wait_s = 600.0
  update = studio.open_job({"model": sm, **FORM})
  assert update["job"] is not None and len(studio.job_board) == 1
  assert studio.admit(update) is None
  assert update["status"] == ("Queued: 4 jobs ahead of yours; estimated wait "
                              "until your result about 5.0 min.")
  # Fewer frames, a shorter wait: within the bound again.
  studio.max_wait_s = 200.0
  assert studio.open_job({"model": sm, **FORM, "num_frames": 10})["job"]


def test_open_job_without_a_queue_or_an_estimate_just_opens(studio, models,
                                                            sm):
  studio.max_wait_s = 0.001
  assert studio.open_job({}).keys() == {"job"}  # nothing ahead
  studio.queue_depth = lambda: 3
  unloaded = [s.model_id for s in models.specs if s.model_id != sm
              and not models.is_loaded(s.model_id)]
  update = studio.open_job({"model": unloaded[0], **FORM})
  assert update["status"] == "Queued: 3 jobs ahead of yours."
  # Settings the job itself will refuse give no estimate either.
  assert studio.open_job({"model": sm, **FORM, "num_frames": "many"})["job"]


def test_jobs_in_queue_counts_waiting_and_running_events():
  heavy = types.SimpleNamespace(queue=[object()] * 3, current_concurrency=1)
  demo = types.SimpleNamespace(_queue=types.SimpleNamespace(
      event_queue_per_concurrency_id={"heavy": heavy}))
  assert layout.jobs_in_queue(demo, "heavy") == 4
  assert layout.jobs_in_queue(demo, "scrub") == 0
  assert layout.jobs_in_queue(types.SimpleNamespace(), "heavy") == 0


def test_a_refused_job_never_reaches_the_queue(studio):
  """The transfer events follow the job's admission on success only, which
  follows its opening on success only, and the studio counts the heavy
  events of the app's own queue."""
  demo = layout.build_app(studio)
  fns = {d.api_name: d for d in demo.fns.values()}
  for name in ("transfer_ui", "example_transfer"):
    transfer = fns[name]
    admitted = demo.fns[transfer.trigger_after]
    opened = demo.fns[admitted.trigger_after]
    assert transfer.trigger_only_on_success, name
    assert admitted.trigger_only_on_success, name
    assert (admitted.fn.__name__, opened.fn.__name__) == ("admit", "open_job")
    assert opened.queue is False and admitted.queue is False
  assert studio.queue_depth() == 0
  heavy = types.SimpleNamespace(queue=[object()] * 2, current_concurrency=1)
  demo._queue.event_queue_per_concurrency_id["heavy"] = heavy
  assert studio.queue_depth() == 3


def test_api_calls_over_the_bound_are_refused_before_the_queue(studio,
                                                               models, sm):
  """/transfer's validator (Gradio runs it before the call is queued) refuses
  as the page does, on num_frames, and admits otherwise."""
  studio.estimator.record_speed(sm, models.get(sm), 1, 2.0)  # 60 s a job
  studio.queue_depth = lambda: 4
  studio.max_wait_s = 240.0
  checks = studio.api_admission([CAT], None, "zoom in", 30)
  assert [c["is_valid"] for c in checks] == [True, True, True, False, True,
                                             True]
  assert "4 jobs ahead of yours" in checks[3]["message"]
  assert "about 5.0 min" in checks[3]["message"]
  assert all(c["is_valid"] for c in studio.api_admission([CAT], None,
                                                         "zoom in", 10))
  assert all(c["is_valid"] for c in studio.api_admission(None, None, None,
                                                         "x"))
  api = next(d for d in layout.build_app(studio).fns.values()
             if d.api_name == "transfer")
  assert api.validator == studio.api_admission


def test_app_takes_the_bound_as_a_flag():
  import app  # pylint: disable=g-import-not-at-top
  assert app.parse_args([]).max_wait_s is None  # then the variable, or 600
  args = app.parse_args(["--max-wait-s", "90"])
  assert estimates.max_wait_seconds(
      args.max_wait_s, {"XFACTOR_MAX_WAIT_S": "5"}) == 90.0
