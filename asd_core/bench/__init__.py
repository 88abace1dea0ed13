"""Benchmarks of the causal sampler, as a library (`asd-bench` is a thin leaf over it).

* `timing`: device checks, CUDA synchronisation, interleaved best-of timing;
* `ratios`: the design ratios at a configurable small size (1 vs 4 steps, KV cache vs
  recompute, rolling-cache memory growth), with `nocache` the no-cache reference sampler and
  `memory` the fresh-process memory probes;
* `models` + `realsize`: random Wan2.1-1.3B-sized models and the real-size GPU benchmark
  (FPS and first-chunk latency per plan, peak memory, a bidirectional reference).

Nothing here imports the trainer; its benchmark is `python -m trainer.bench`.
"""
