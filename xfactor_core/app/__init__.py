"""XFactor Studio app: the Gradio UI's logic as plain, browser-free functions.

Modules:
  registry      ModelSpec, discover_models (published, shipped defaults,
                --checkpoints DIR), ModelRegistry (lazy loading, bounded LRU
                cache).
  downloads     Downloads: background fetches of the published models (the
                page's Download, XFACTOR_FETCH_AT_START; broken installs are
                reinstalled), and the owner's advice when a start-up fetch
                fails.
  estimates     Estimator (seconds a transfer takes: measured, else from its
                FLOPs), QueueWait (the wait of a new job, the bound).
  uploads       InputError, Limits, UploadPolicy (which files a caller may
                name), file/context/video/frames/camera path (.npz, .npy)
                readers that validate type, size, pixels and frame counts,
                then read through inference.media.
  jobs          TransferSettings, MotionRequest, TransferRequest, run_transfer
                (streamed, cancellable), transfer, scrub (fractional frames),
                output_size (flow models render at any output size).
  job_board     JobBoard: open jobs and which of them were cancelled.
  sessions      the sessions' job folders (made per job, swept by age).
  example_cache ExampleCache: lazy cache of the shipped examples' results.
  export        export_result (one zip: MP4, side by side, GIF, PNGs, camera
                path, settings) and batch_export (grid + contact sheet).
  check         check_transfer: TPS with a pose oracle (COLMAP) and a plot.
  presets       PresetLibrary of the shipped motion clips and contexts.
  make_presets  CLI that renders presets/ with the synthetic world.
  gate          GatedBlocks: every event's raw values are checked before
                Gradio reads them (uploads and presets only, file counts,
                finite numbers, text length).
  errors        how handlers' exceptions reach the visitor (gr.Error).
  picker        ModelPicker: the model row's handlers and page text
                (model_facts, resolution_options, Download, start-up
                failures).
  ui            widget adapters (settings_from_ui, motion_from_ui) and Studio
                (the other event handlers on forms keyed by widget name; the
                job's admission against the wait bound).
  layout        build_app (the page, one helper per panel) and the wiring of
                its events; Widgets (Gradio's dict form by widget name).
  testing       test checkpoints (linked published-format weights, random
                weights of any config) and a live-server context manager.

Run the app with ``python app.py``.
"""
