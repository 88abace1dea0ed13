"""The ComfyUI nodes, run as ComfyUI runs them: the pack imported as a package, functions called
with widget values; ComfyUI's own hooks (progress bar, interrupt, model management) stood in
for by recording modules only where a test needs to see the calls."""

from __future__ import annotations

import gc
import inspect
import json
import os
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import comfy_executor  # noqa: E402

pack = comfy_executor.load_pack()
P = pack.__name__
nodes = sys.modules[f"{P}.nodes"]
loader_mod = sys.modules[f"{P}.nodes.loader"]
sampler_mod = sys.modules[f"{P}.nodes.sampler"]
host = sys.modules[f"{P}.nodes.host"]
core_config = sys.modules[f"{P}.asd_core.config"]
core_schedule = sys.modules[f"{P}.asd_core.schedule"]
core_sampler = sys.modules[f"{P}.asd_core.sampler"]

MAPPINGS = pack.NODE_CLASS_MAPPINGS
WIDGETS = {"INT", "FLOAT", "STRING", "BOOLEAN"}


def core(name):
    """A module of the pack's own asd_core (the one the nodes use), imported on first need."""
    import importlib

    return importlib.import_module(f"{P}.asd_core.{name}")


def run(node: str, **kwargs):
    """Call a node's FUNCTION like ComfyUI does; returns (result tuple, ui dict)."""
    cls = MAPPINGS[node]
    output = getattr(cls(), cls.FUNCTION)(**kwargs)
    if isinstance(output, dict):
        return output["result"], output.get("ui", {})
    return output, {}


def defaults(node: str) -> dict:
    """Widget defaults of a node, as a fresh node in the frontend has them."""
    values = {}
    for section in ("required", "optional"):
        for name, spec in MAPPINGS[node].INPUT_TYPES().get(section, {}).items():
            kind, options, choices = comfy_executor.spec_type_and_options(spec)
            if kind == "COMBO":
                values[name] = options.get("default", choices[0])
            elif kind in WIDGETS:
                values[name] = options["default"]
    return values


# --- the pack as ComfyUI sees it ---------------------------------------------------------


def test_pack_imports_without_comfyui_modules():
    """ComfyUI loads the folder's __init__.py as a package; nothing may need comfy/folder_paths at import."""
    repo = comfy_executor.REPO
    code = (
        "import importlib.util, sys\n"
        f"spec = importlib.util.spec_from_file_location('somepack', {str(repo / '__init__.py')!r}, "
        f"submodule_search_locations=[{str(repo)!r}])\n"
        "m = importlib.util.module_from_spec(spec); sys.modules['somepack'] = m; spec.loader.exec_module(m)\n"
        "assert not any(k == 'comfy' or k.startswith('comfy.') or k == 'folder_paths' for k in sys.modules)\n"
        "print(sorted(m.NODE_CLASS_MAPPINGS))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd="/")
    assert out.returncode == 0, out.stderr
    assert "ASDCausalSampler" in out.stdout


def test_entry_point_imports_as_a_lone_module(tmp_path):
    """What pytest does where the clone's folder name is no identifier: the tests must still run."""
    clone = tmp_path / "tmp.Ab3x"
    clone.mkdir()
    (clone / "__init__.py").write_text((comfy_executor.REPO / "__init__.py").read_text())
    code = (
        "import importlib.util\n"
        f"spec = importlib.util.spec_from_file_location('__init__', {str(clone / '__init__.py')!r})\n"
        "m = importlib.util.module_from_spec(spec); spec.loader.exec_module(m)\n"
        "assert not hasattr(m, 'NODE_CLASS_MAPPINGS')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd="/")
    assert out.returncode == 0, out.stderr


@pytest.mark.parametrize("name", sorted(MAPPINGS))
def test_node_declarations_are_consistent(name):
    cls = MAPPINGS[name]
    assert name in pack.NODE_DISPLAY_NAME_MAPPINGS
    assert cls.CATEGORY.startswith("ASD/")
    assert cls.DESCRIPTION.strip()
    types_ = cls.INPUT_TYPES()
    assert set(types_) <= {"required", "optional"}
    assert isinstance(cls.RETURN_TYPES, tuple) and cls.RETURN_TYPES
    assert len(cls.RETURN_NAMES) == len(cls.RETURN_TYPES) == len(cls.OUTPUT_TOOLTIPS)
    function = getattr(cls, cls.FUNCTION)
    parameters = inspect.signature(function).parameters
    for section, inputs in types_.items():
        for input_name, spec in inputs.items():
            kind, options, choices = comfy_executor.spec_type_and_options(spec)
            assert options.get("tooltip"), f"{name}.{input_name} has no tooltip"
            assert input_name in parameters, f"{name}.{cls.FUNCTION} does not take {input_name}"
            optional_param = parameters[input_name].default is not inspect.Parameter.empty
            assert optional_param == (section == "optional"), f"{name}.{input_name}: default/section mismatch"
            if kind in ("INT", "FLOAT"):
                assert options["min"] <= options["default"] <= options["max"], f"{name}.{input_name}"
            if kind == "COMBO":
                assert options.get("default", choices[0]) in choices
    json.dumps(comfy_executor.node_info(name, cls, pack.NODE_DISPLAY_NAME_MAPPINGS))


def test_object_info_has_the_shape_comfyui_serves():
    core_info = comfy_executor.core_object_info()
    ours = comfy_executor.pack_object_info(pack)
    classic = core_info["VAEDecode"]  # a classic-API core node
    for name, info in ours.items():
        assert set(classic) <= set(info), f"{name} lacks {set(classic) - set(info)}"
        assert info["input_order"]["required"] == list(info["input"]["required"])


# --- step scheduler --------------------------------------------------------------------------


def test_scheduler_defaults_are_the_papers_1star():
    (plan, text), ui = run("ASDStepScheduler", **defaults("ASDStepScheduler"))
    assert plan == core_schedule.parse_plan("1*")
    assert ui["text"] == [text] and "first chunk 4 step(s)" in text and "later chunks 1 step(s)" in text


@pytest.mark.parametrize("steps, first, spec", [(2, 4, "2*"), (4, 4, "4"), (4, 0, "4"), (2, 0, "2")])
def test_scheduler_numbers(steps, first, spec):
    (plan, _), _ = run("ASDStepScheduler", steps=steps, first_chunk_steps=first, shift=5.0, spec="")
    assert plan == core_schedule.parse_plan(spec)


def test_scheduler_spec_overrides_and_shift():
    (plan, _), _ = run("ASDStepScheduler", steps=1, first_chunk_steps=4, shift=3.0, spec="first=1000,500;rest=1000")
    assert plan == core_schedule.parse_plan("first=1000,500;rest=1000;shift=3")
    (plan, _), _ = run("ASDStepScheduler", steps=1, first_chunk_steps=4, shift=3.0, spec="")
    assert plan.first[1] == pytest.approx(1000 * core_schedule.warp_sigma(0.75, 3.0))


def test_scheduler_rejects_unknown_spec_with_the_accepted_forms():
    with pytest.raises(ValueError, match=r"unknown step plan 'fast'.*accepted.*1\*.*Clear 'spec'"):
        run("ASDStepScheduler", steps=1, first_chunk_steps=4, shift=5.0, spec="fast")


# --- model loader -------------------------------------------------------------------------


def tiny_weights(config, seed=0):
    model_cls = core("model").CausalWanTransformer
    torch.manual_seed(seed)
    return model_cls(config).state_dict()


@pytest.fixture
def model_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("ASD_MODELS_DIR", str(tmp_path))
    return tmp_path


def test_loader_lists_and_loads_our_checkpoint_and_shows_its_plan(model_dir):
    config = core_config.tiny_config()
    weights = tiny_weights(config)
    core("checkpoint").save_checkpoint(model_dir / "sub" / "tiny.safetensors", weights, config, plan="2*")
    choices = MAPPINGS["ASDModelLoader"].INPUT_TYPES()["required"]["model_file"][0]
    assert choices == ["(built-in default)", "sub/tiny.safetensors"]
    (asd_model, info), ui = run("ASDModelLoader", model_file="sub/tiny.safetensors", dtype="auto")
    assert ui["text"] == [info] and "trained plan: 2*" in info and "sub/tiny.safetensors" in info
    assert asd_model.model.dtype == torch.float32  # auto on a CPU
    for key, value in asd_model.model.state_dict().items():
        assert torch.equal(value, weights[key]), key


def test_loader_reads_a_self_forcing_pt_as_released(model_dir):
    config = core_config.tiny_config(num_attention_heads=1, attention_head_dim=128)
    weights = tiny_weights(config, seed=3)
    wan = core("layouts").diffusers_to_wan(weights)
    torch.save({"generator": {f"model.{k}": v + 1 for k, v in wan.items()},
                "generator_ema": {f"model.{k}": v for k, v in wan.items()}}, model_dir / "self_forcing_dmd.pt")
    (asd_model, info), _ = run("ASDModelLoader", model_file="self_forcing_dmd.pt", dtype="bfloat16")
    assert "file layout: self_forcing" in info and "trained plan: 4" in info
    assert "family: self_forcing (by file name)" in info
    state = asd_model.model.state_dict()
    assert state["proj_out.weight"].dtype == torch.bfloat16
    assert torch.equal(state["proj_out.weight"], weights["proj_out.weight"].to(torch.bfloat16))  # EMA, not +1


def test_loader_family_combo_and_lora_file(model_dir):
    """`family` (auto first) picks a release's settings; `lora_file` merges LongLive's adapter at load."""
    optional = MAPPINGS["ASDModelLoader"].INPUT_TYPES()["optional"]
    assert optional["family"][0][0] == "auto" and "causal_forcing_framewise" in optional["family"][0]
    config = core_config.tiny_config(num_attention_heads=1, attention_head_dim=128)
    weights = tiny_weights(config, seed=4)
    wan = core("layouts").diffusers_to_wan(weights)
    torch.save({"generator": {f"model.{k}": v for k, v in wan.items()}}, model_dir / "longlive_base.pt")
    width = weights["blocks.0.attn1.to_q.weight"].shape[0]
    torch.save({"generator_lora": {"base_model.model.blocks.0.self_attn.q.lora_A.weight": torch.ones(2, width),
                                   "base_model.model.blocks.0.self_attn.q.lora_B.weight": torch.ones(width, 2)}},
               model_dir / "longlive_lora.pt")
    assert "longlive_lora.pt" in MAPPINGS["ASDModelLoader"].INPUT_TYPES()["optional"]["lora_file"][0]
    (asd_model, info), _ = run("ASDModelLoader", model_file="longlive_base.pt", dtype="float32", family="auto",
                               lora_file="longlive_lora.pt")
    assert "family: longlive (by LoRA)" in info and "LoRA merged: longlive_lora.pt" in info
    assert "sampler (auto): self_forcing" in info
    merged = asd_model.model.state_dict()["blocks.0.attn1.to_q.weight"]
    # LongLive's alpha is 256 whatever the rank: scale 256 / 2, and B @ A = 2 everywhere
    assert torch.allclose(merged, weights["blocks.0.attn1.to_q.weight"] + 256.0)
    (asd_model, info), _ = run("ASDModelLoader", model_file="longlive_base.pt", dtype="float32",
                               family="one_forcing")
    assert "family: one_forcing (by family=)" in info and asd_model.model.config.chunk_frames == 1
    with pytest.raises(ValueError, match="released with a LoRA"):
        run("ASDModelLoader", model_file="longlive_base.pt", dtype="float32")
    with pytest.raises(ValueError, match="takes no LoRA"):
        run("ASDModelLoader", model_file="(built-in default)", dtype="float32", lora_file="longlive_lora.pt")


def test_loader_bad_files_say_what_is_wrong(model_dir):
    (model_dir / "broken.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json}")
    with pytest.raises(ValueError, match="broken.safetensors"):
        run("ASDModelLoader", model_file="broken.safetensors", dtype="float32")
    with pytest.raises(ValueError, match=r"not found; put it in one of: .*" + str(model_dir.name)):
        run("ASDModelLoader", model_file="missing.safetensors", dtype="float32")


def test_loader_refuses_crafted_metadata_at_once(model_dir):
    """Issue 25 item 5: metadata saying num_layers 10000000 used to hang the loader while memory grew."""
    config = core_config.tiny_config()
    weights = tiny_weights(config)
    checkpoint = core("checkpoint")
    for name, changes, message in [
        ("layers.safetensors", {"num_layers": 10000000}, r"num_layers must be a whole number in \[1, 1000\]"),
        ("heads.safetensors", {"num_attention_heads": "2"}, r"num_attention_heads must be a whole number .*'2' \(str\)"),
        ("blocks.safetensors", {"num_layers": 500}, r"says num_layers 500 but the file holds 2 transformer blocks"),
    ]:
        values = json.loads(config.to_json()) | changes
        import safetensors.torch

        safetensors.torch.save_file(weights, model_dir / name,
                                    metadata={"asd.format": checkpoint.FORMAT, "asd.config": json.dumps(values)})
        with pytest.raises(ValueError, match=message):
            run("ASDModelLoader", model_file=name, dtype="float32")


# --- hub download (offline, through huggingface-hub's real code path) ---------------------

HUB_SCRIPT = """
import json, sys
sys.path.insert(0, {tests!r})
import comfy_executor
pack = comfy_executor.load_pack()
node = pack.NODE_CLASS_MAPPINGS["ASDHubDownloadLoader"]()
out = {{}}
result = node.load(repo_id="someone/tiny-causal", filename="ckpt/tiny.safetensors", revision="main", dtype="float32")
out["info"] = result["result"][1]
out["params"] = sum(p.numel() for p in result["result"][0].model.parameters())
for repo, name in [("someone/tiny-causal", "ckpt/other.safetensors"), ("nobody/unknown-repo", "x.pt")]:
    try:
        node.load(repo_id=repo, filename=name, revision="main", dtype="float32")
        out[name] = "no error"
    except ValueError as err:
        out[name] = str(err)
print(json.dumps(out))
"""


def test_hub_download_uses_the_local_cache_offline(tmp_path):
    config = core_config.tiny_config()
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo_cache = tmp_path / "hub" / "models--someone--tiny-causal"
    snapshot = repo_cache / "snapshots" / commit / "ckpt" / "tiny.safetensors"
    core("checkpoint").save_checkpoint(snapshot, tiny_weights(config), config, plan="1*")
    (repo_cache / "refs").mkdir(parents=True)
    (repo_cache / "refs" / "main").write_text(commit)
    models = tmp_path / "models"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(tmp_path / "hub"), "HF_HOME": str(tmp_path / "home"),
           "ASD_MODELS_DIR": str(models)}
    script = HUB_SCRIPT.format(tests=str(Path(__file__).resolve().parent))
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=180)
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout.strip().splitlines()[-1])
    placed = models / "someone--tiny-causal" / "ckpt" / "tiny.safetensors"
    assert placed.is_file() and os.path.samefile(placed, snapshot)  # linked, not copied
    assert "trained plan: 1*" in result["info"] and str(placed) in result["info"]
    assert result["params"] == sum(v.numel() for v in tiny_weights(config).values())
    for name in ("ckpt/other.safetensors", "x.pt"):
        assert "no connection to the Hub (or HF_HUB_OFFLINE=1)" in result[name], result[name]
        assert "not in the local Hugging Face cache" in result[name]


def test_hub_download_rejects_malformed_names():
    node = MAPPINGS["ASDHubDownloadLoader"]()
    with pytest.raises(ValueError, match="owner/name"):
        node.load(repo_id="no-slash", filename="a.pt", revision="main", dtype="float32")
    with pytest.raises(ValueError, match="inside the repository"):
        node.load(repo_id="a/b", filename="../../etc/passwd", revision="main", dtype="float32")


# --- causal sampler ---------------------------------------------------------------------------

SIZE = 32  # pixels: 4x4 latents, 2x2 tokens per frame


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    model = core("model").CausalWanTransformer(core_config.tiny_config(chunk_frames=2)).eval().requires_grad_(False)
    return loader_mod.AsdModel(model=model, label="tiny")


def conditioning(dim=32, length=5, seed=7):
    return [[torch.randn(1, length, dim, generator=torch.Generator().manual_seed(seed)), {}]]


def sampler_args(tiny, **overrides):
    (plan, _), _ = run("ASDStepScheduler", steps=1, first_chunk_steps=4, shift=5.0, spec="")
    args = dict(model=tiny, plan=plan, positive=conditioning(), seed=5, frames=13, width=SIZE, height=SIZE,
                batch_size=1, chunk_frames=0, context_noise=0.0, window_frames=0, cfg=1.0)
    args.update(overrides)
    return args


def reference(tiny, plan, seeds, num_frames=4, **kwargs):
    """The core sampler called directly, its output de-normalised as the node promises."""
    context = core("text").conditioning_from_comfy(conditioning())
    latents = core_sampler.generate_latents(tiny.model, plan=plan, context=context, num_frames=num_frames,
                                            latent_height=SIZE // 8, latent_width=SIZE // 8, seeds=seeds, **kwargs)
    return core("vae").to_raw(latents)


def test_sampler_output_is_the_core_samplers_in_raw_wan_space(tiny):
    args = sampler_args(tiny)
    (latent,), _ = run("ASDCausalSampler", **args)
    samples = latent["samples"]
    assert samples.shape == (1, 16, 4, SIZE // 8, SIZE // 8) and samples.dtype == torch.float32
    assert torch.equal(samples, reference(tiny, args["plan"], [5]))
    vae = core("vae")
    assert torch.allclose(vae.to_raw(vae.from_raw(samples)), samples, atol=1e-5)


def test_sampler_batch_uses_one_seed_per_video(tiny):
    (two,), _ = run("ASDCausalSampler", **sampler_args(tiny, batch_size=2))
    (second,), _ = run("ASDCausalSampler", **sampler_args(tiny, seed=6))
    # batched matmuls may round differently from single ones: equal up to float error
    assert torch.allclose(two["samples"][1:], second["samples"], atol=1e-5, rtol=1e-5)
    assert not torch.equal(two["samples"][0], two["samples"][1])


def test_sampler_chunk_size_override_is_frame_wise_and_temporary(tiny):
    args = sampler_args(tiny, chunk_frames=1)
    (latent,), _ = run("ASDCausalSampler", **args)
    assert tiny.model.config.chunk_frames == 2  # restored
    import dataclasses

    frame_wise = core("model").CausalWanTransformer(dataclasses.replace(tiny.model.config, chunk_frames=1))
    frame_wise.load_state_dict(tiny.model.state_dict())
    frame_wise.eval()
    expected = reference(loader_mod.AsdModel(frame_wise, "copy"), args["plan"], [5])
    assert torch.equal(latent["samples"], expected)


def test_sampler_continues_a_prefix(tiny):
    prefix = torch.randn(1, 16, 3, SIZE // 8, SIZE // 8, generator=torch.Generator().manual_seed(1))
    (latent,), _ = run("ASDCausalSampler", **sampler_args(tiny, prefix={"samples": prefix}))
    assert latent["samples"].shape[2] == 3 + 4
    assert torch.equal(latent["samples"][:, :, :3], prefix)
    expected = reference(tiny, sampler_args(tiny)["plan"], [5], prefix=core("vae").from_raw(prefix))
    assert torch.equal(latent["samples"][:, :, 3:], expected)
    (only_new,), _ = run("ASDCausalSampler", **sampler_args(tiny, prefix={"samples": prefix}, include_prefix=False))
    assert torch.equal(only_new["samples"], expected)


def test_sampler_refuses_a_request_larger_than_the_device_memory(tiny, monkeypatch):
    request = core("request")
    monkeypatch.setattr(request, "device_memory", lambda device: 10**5)  # 100 kB
    calls = []
    handle = tiny.model.register_forward_pre_hook(lambda *a: calls.append(1))
    try:
        with pytest.raises(ValueError, match=r"^253 frames of 32x32 need about [\d.]+ MB \(KV cache .*\) but cpu has "
                                             r"[\d.]+ MB available: use frames \d+ or fewer, or a smaller width/height$"):
            run("ASDCausalSampler", **sampler_args(tiny, frames=4 * 63 + 1))
    finally:
        handle.remove()
    assert calls == []


@pytest.mark.parametrize("overrides, message", [
    (dict(frames=12), r"frames 12: the Wan VAE needs 4k\+1 frames, e.g. 9 or 13; with chunks of 2 latent frames use "
                      r"frames 5 or 13"),
    (dict(frames=25), r"frames 25: 25 frames make 7 latent frames, which do not split into chunks of 2; use frames 21 "
                      r"or 29"),
    (dict(width=40), r"multiples of 16"),
    (dict(positive=conditioning(dim=4096)), r"width 4096 but this model expects 32"),
    (dict(prefix={"samples": torch.zeros(1, 16, 2, 8, 8)}), r"set width/height to the prefix video's size"),
    (dict(prefix={"samples": torch.zeros(1, 16, 8, 8)}), r"must be a video latent"),
    (dict(window_frames=3), r"window_frames=3 is too small.*>= 4"),
    (dict(context_noise=1001.0), r"context_noise is a timestep in \[0, 1000\]"),
    (dict(frames=4 * 257 + 1), r"exceed the 256 frame positions"),
    # issue 25 item 4: one validator for CLI, API and nodes
    (dict(frames=4 * 255 + 1, prefix={"samples": torch.zeros(1, 16, 4, 4, 4)}),
     r"frames 1021: 256 latent frames after a prefix of 4 latent frames exceed the 256 frame positions this model "
     r"has \(rope_max_seq_len; a rolling window does not extend them\); use frames 1005 or fewer"),
    (dict(width=8192), r"width 8192 is larger than this model can place: .* use width 4096 or less"),
    (dict(context_noise=float("nan")), r"context_noise is a timestep in \[0, 1000\], got nan"),
    (dict(cfg=float("inf"), negative=conditioning()), r"cfg must be a finite number"),
    (dict(seed=2**64), r"seed must be an integer in \[0, 2\^64 - 1\]"),
])
def test_sampler_rejects_bad_requests_before_any_model_call(tiny, overrides, message):
    assert not hasattr(sampler_mod, "latent_frames_for")  # the rule is asd_core.request's, not redefined here
    calls = []
    handle = tiny.model.register_forward_pre_hook(lambda *a: calls.append(1))
    try:
        with pytest.raises(ValueError, match=message):
            run("ASDCausalSampler", **sampler_args(tiny, **overrides))
    finally:
        handle.remove()
    assert calls == []


class FakeComfy:
    """Records what the nodes ask of ComfyUI: progress updates, memory calls, interrupt checks."""

    def __init__(self, interrupt_after=None):
        self.updates, self.totals, self.freed = [], [], []
        self.emptied = self.checks = 0
        self.interrupt_after = interrupt_after

        class InterruptProcessingException(Exception):
            pass

        self.Interrupt = InterruptProcessingException
        outer = self

        class ProgressBar:
            def __init__(self, total):
                outer.totals.append(total)

            def update_absolute(self, value, total=None, preview=None):
                outer.updates.append((value, total, preview))

        mm = types.ModuleType("comfy.model_management")
        mm.InterruptProcessingException = InterruptProcessingException
        mm.get_torch_device = lambda: torch.device("cpu", 0)  # not the model's device: the node must move it
        mm.unet_offload_device = lambda: torch.device("cpu")
        mm.free_memory = lambda n, device: outer.freed.append((n, device))
        mm.soft_empty_cache = self._empty
        mm.throw_exception_if_processing_interrupted = self._check
        utils = types.ModuleType("comfy.utils")
        utils.ProgressBar = ProgressBar
        package = types.ModuleType("comfy")
        package.model_management, package.utils = mm, utils
        self.modules = {"comfy": package, "comfy.model_management": mm, "comfy.utils": utils}

    def _empty(self):
        self.emptied += 1

    def _check(self):
        self.checks += 1
        if self.interrupt_after is not None and self.checks > self.interrupt_after:
            raise self.Interrupt()


@pytest.fixture
def fake_comfy(monkeypatch):
    def install(**kwargs):
        fake = FakeComfy(**kwargs)
        for name, module in fake.modules.items():
            monkeypatch.setitem(sys.modules, name, module)
        return fake
    return install


def test_sampler_progress_ticks_per_model_call_with_a_preview_per_chunk(tiny, fake_comfy):
    fake = fake_comfy()
    args = sampler_args(tiny, frames=21)  # 6 latent frames: 3 chunks of 2
    run("ASDCausalSampler", **args)
    total = args["plan"].model_calls(3) - 1  # 4 + 1, 1 + 1, 1 (the last chunk is not cached)
    assert fake.totals == [total] == [8]
    assert [v for v, t, p in fake.updates if p is None] == [1, 2, 3, 4, 5, 6, 7, 8]
    assert all(t == total for _, t, _ in fake.updates)
    previews = [(v, p) for v, _, p in fake.updates if p is not None]
    assert [v for v, _ in previews] == [4, 6, 8]  # after each chunk's last step, before its cache fill
    for _, (fmt, image, max_size) in previews:
        assert fmt == "JPEG" and max_size == 512 and min(image.size) >= 256
    assert fake.checks == 8  # Cancel is looked at before every model call
    params = sum(p.numel() * p.element_size() for p in tiny.model.parameters())
    # ComfyUI is asked for the weights plus the KV cache (2 layers x keys and values x 6 frames x
    # 4 tokens x 2 heads x 32 x 4 bytes) plus one chunk's activations (well under 1 MB here).
    cache = 2 * 2 * (6 * 4) * 2 * 32 * 4
    [(freed, device)] = fake.freed
    assert device == torch.device("cpu", 0) and params + cache < freed < params + cache + 2**20 and fake.emptied == 1
    gc.collect()  # the KV cache lives in the sampler call only: nothing keeps it on the device afterwards
    assert not [o for o in gc.get_objects() if isinstance(o, core("kv_cache").KVCache)]


def test_cancel_stops_within_one_model_call_and_propagates_comfys_exception(tiny, fake_comfy):
    fake = fake_comfy(interrupt_after=3)
    calls = []
    handle = tiny.model.register_forward_pre_hook(lambda *a: calls.append(1))
    try:
        with pytest.raises(fake.Interrupt):
            run("ASDCausalSampler", **sampler_args(tiny, frames=21))
    finally:
        handle.remove()
    assert len(calls) == 3 and tiny.model.device == torch.device("cpu") and fake.emptied == 1


def test_preview_projects_the_dominant_latent_direction():
    previewer = sys.modules[f"{P}.nodes.preview"].ChunkPreviewer()
    gradient = torch.linspace(-3, 3, 16)
    chunk = 0.01 * torch.randn(1, 16, 2, 8, 16, generator=torch.Generator().manual_seed(0))
    chunk[0, 5, -1] += gradient  # channel 5 varies along the width, the rest is faint noise
    rgb = previewer.rgb(chunk)
    assert rgb.shape == (8, 16, 3) and 0 <= rgb.min() and rgb.max() <= 1
    first = rgb[..., 0].mean(0)  # the first principal axis is channel 5: its colour follows the gradient
    corr = torch.corrcoef(torch.stack([first, gradient]))[0, 1]
    assert abs(corr) > 0.99
    again = previewer.rgb(chunk * 2)  # the axes and colour range stay fixed after the first chunk
    assert not torch.allclose(again, rgb)


def test_repeated_runs_do_not_grow_memory(tiny):
    def live_tensors():
        gc.collect()
        return sum(1 for o in gc.get_objects() if type(o) in (torch.Tensor, torch.nn.Parameter))

    counts = []
    for _ in range(20):
        run("ASDCausalSampler", **sampler_args(tiny, frames=5))
        counts.append(live_tensors())
    assert counts[-1] <= counts[1], counts


# --- built-in default: text encode, decode, prefix encode --------------------------------


@pytest.fixture(scope="module")
def builtin():
    (asd_model, info), ui = run("ASDModelLoader", model_file="(built-in default)", dtype="auto")
    return asd_model, info


def test_builtin_chain_runs_with_every_nodes_defaults(builtin):
    asd_model, info = builtin
    assert "built-in default" in info and "trained plan" in info
    (cond,), _ = run("ASDTextEncode", **defaults("ASDTextEncode"))
    assert isinstance(cond, list) and cond[0][0].ndim == 3 and isinstance(cond[0][1], dict)
    assert cond[0][0].shape[-1] == asd_model.model.config.text_dim
    (plan, _), _ = run("ASDStepScheduler", **defaults("ASDStepScheduler"))
    (latent,), _ = run("ASDCausalSampler", model=asd_model, plan=plan, positive=cond, **defaults("ASDCausalSampler"))
    frames, width, height = (defaults("ASDCausalSampler")[k] for k in ("frames", "width", "height"))
    assert latent["samples"].shape == (1, 16, (frames - 1) // 4 + 1, height // 8, width // 8)
    (images,), _ = run("ASDDecode", latent=latent)
    assert images.shape == (frames, height, width, 3) and 0 <= images.min() and images.max() <= 1
    (prefix,), _ = run("ASDEncodeVideoPrefix", images=images, **defaults("ASDEncodeVideoPrefix"))
    assert prefix["samples"].shape == latent["samples"].shape


def test_text_encode_matches_the_builtin_encoder(builtin):
    (a,), _ = run("ASDTextEncode", text="a red circle")
    (b,), _ = run("ASDTextEncode", text="a green triangle and a blue square")
    pipeline = loader_mod.default_pipeline()
    with torch.no_grad():  # the node encodes without a graph (PyTorch's fused encoder path: ~1e-7 apart with one)
        expected = pipeline.text_encoder.encode(["a red circle"])
    assert torch.equal(core("text").conditioning_from_comfy(a), expected)
    assert not torch.equal(a[0][0][..., :1, :], b[0][0][..., :1, :]) or a[0][0].shape != b[0][0].shape


def test_decode_and_prefix_encode_match_the_codec(builtin):
    vae = core("vae")
    codec = loader_mod.default_pipeline().codec
    latents = torch.randn(1, 16, 3, 8, 8, generator=torch.Generator().manual_seed(2))
    (images,), _ = run("ASDDecode", latent={"samples": vae.to_raw(latents)})
    with torch.no_grad():
        video = codec.decode(latents)  # (1, 3, 9, 64, 64) in [-1, 1]
    assert images.shape == (9, 64, 64, 3)
    assert torch.allclose(images, ((video.clamp(-1, 1) + 1) / 2)[0].permute(1, 2, 3, 0), atol=1e-5)
    (prefix,), _ = run("ASDEncodeVideoPrefix", images=images, last_frames=7)  # 7 -> the last 5 frames
    with torch.no_grad():
        expected = vae.to_raw(codec.encode(images[4:].permute(3, 0, 1, 2)[None] * 2 - 1))
    assert prefix["samples"].shape == (1, 16, 2, 8, 8)
    assert torch.allclose(prefix["samples"], expected, atol=1e-5)


def test_prefix_encode_rejects_sizes_the_vae_cannot_take():
    with pytest.raises(ValueError, match=r"multiples of 16.*e\.g\. to 48x32"):
        run("ASDEncodeVideoPrefix", images=torch.zeros(5, 40, 50, 3), last_frames=0)
    with pytest.raises(ValueError, match=r"IMAGE \[frames, height, width, 3\]"):
        run("ASDEncodeVideoPrefix", images=torch.zeros(5, 64, 64), last_frames=0)


def _decoder_calls(codec, part: str) -> tuple[list, object]:
    """Count calls of the built-in VAE's encoder or decoder (one per latent frame)."""
    calls = []
    handle = getattr(codec.vae, part).register_forward_pre_hook(lambda *a: calls.append(1))
    return calls, handle


def test_decode_ticks_progress_per_chunk_and_cancels_between_chunks(builtin, fake_comfy):
    """109 s for a 393-frame decode with no progress and no Cancel: now one tick and one Cancel check per chunk."""
    codec = loader_mod.default_pipeline().codec
    chunk = loader_mod.default_pipeline().model.config.chunk_frames  # 3
    samples = core("vae").to_raw(torch.randn(1, 16, 2 * chunk + 1, 8, 8, generator=torch.Generator().manual_seed(4)))
    (plain,), _ = run("ASDDecode", latent={"samples": samples})

    fake = fake_comfy()
    (images,), _ = run("ASDDecode", latent={"samples": samples})
    assert torch.equal(images, plain)  # chunking and progress change nothing in the frames
    assert fake.totals == [3] and [(v, t) for v, t, _ in fake.updates] == [(1, 3), (2, 3), (3, 3)]
    assert fake.checks == 3

    fake = fake_comfy(interrupt_after=1)  # Cancel pressed while the first chunk decodes
    calls, handle = _decoder_calls(codec, "decoder")
    try:
        with pytest.raises(fake.Interrupt):  # ComfyUI's own exception, not wrapped
            run("ASDDecode", latent={"samples": samples})
    finally:
        handle.remove()
    assert len(calls) == chunk and [v for v, _, _ in fake.updates] == [1]


def test_prefix_encode_ticks_progress_per_chunk_and_cancels_between_chunks(builtin, fake_comfy):
    codec = loader_mod.default_pipeline().codec
    images = torch.rand(4 * 6 + 1, 64, 64, 3, generator=torch.Generator().manual_seed(5))  # 7 latent frames
    with torch.no_grad():
        expected = core("vae").to_raw(codec.encode(images.permute(3, 0, 1, 2)[None] * 2 - 1))

    fake = fake_comfy()
    (prefix,), _ = run("ASDEncodeVideoPrefix", images=images, last_frames=0)
    assert torch.equal(prefix["samples"], expected)  # the same causal pass as the codec's one-call encode
    assert fake.totals == [3] and [(v, t) for v, t, _ in fake.updates] == [(1, 3), (2, 3), (3, 3)]
    assert fake.checks == 3

    fake = fake_comfy(interrupt_after=2)  # Cancel pressed during the second chunk
    calls, handle = _decoder_calls(codec, "encoder")
    try:
        with pytest.raises(fake.Interrupt):
            run("ASDEncodeVideoPrefix", images=images, last_frames=0)
    finally:
        handle.remove()
    assert len(calls) == 6 and [v for v, _, _ in fake.updates] == [1, 2]


# --- model folder, loader input name, frames widget ------------------------------------------


def fake_folder_paths(models_dir: Path, registered: dict | None = None) -> types.ModuleType:
    """ComfyUI's `folder_paths` as far as the pack uses it at registration."""
    module = types.ModuleType("folder_paths")
    module.models_dir = str(models_dir)
    module.supported_pt_extensions = {".safetensors", ".pt"}
    module.folder_names_and_paths = dict(registered or {})
    return module


def test_model_folder_is_created_when_the_pack_registers(tmp_path, monkeypatch):
    models = tmp_path / "models"
    models.mkdir()
    folder_paths = fake_folder_paths(models)
    monkeypatch.setitem(sys.modules, "folder_paths", folder_paths)
    host.register_model_folder()
    assert (models / "asd_models").is_dir()
    assert folder_paths.folder_names_and_paths["asd_models"][0] == [str(models / "asd_models")]

    # extra_model_paths.yaml named the key first: its folder stays, the default one is added and made
    other = fake_folder_paths(tmp_path / "models2", {"asd_models": (["/elsewhere/asd"], set())})
    (tmp_path / "models2").mkdir()
    monkeypatch.setitem(sys.modules, "folder_paths", other)
    host.register_model_folder()
    assert other.folder_names_and_paths["asd_models"][0] == ["/elsewhere/asd", str(tmp_path / "models2" / "asd_models")]
    assert (tmp_path / "models2" / "asd_models").is_dir()


def test_model_folder_not_writable_is_no_error(tmp_path, monkeypatch, caplog):
    blocker = tmp_path / "models"
    blocker.write_text("a file where the models dir would be")  # mkdir fails here even for root
    folder_paths = fake_folder_paths(blocker)
    monkeypatch.setitem(sys.modules, "folder_paths", folder_paths)
    host.register_model_folder()  # no exception: ComfyUI must still start
    assert "asd_models" in folder_paths.folder_names_and_paths
    assert "could not create" in caplog.text and "diffusion_models" in caplog.text


def test_pack_start_creates_the_model_folder(tmp_path):
    """What ComfyUI's start does: import the pack with its `folder_paths` importable."""
    (tmp_path / "models").mkdir()
    (tmp_path / "folder_paths.py").write_text(
        f"models_dir = {str(tmp_path / 'models')!r}\nsupported_pt_extensions = {{'.safetensors'}}\n"
        "folder_names_and_paths = {}\n"
    )
    code = (
        f"import sys; sys.path.insert(0, {str(tmp_path)!r}); sys.path.insert(0, {str(Path(__file__).parent)!r})\n"
        "import comfy_executor; comfy_executor.load_pack()\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd="/")
    assert out.returncode == 0, out.stderr
    assert (tmp_path / "models" / "asd_models").is_dir()


def test_no_input_is_named_ckpt_name():
    """Frontend 1.27 fails to draw any node with a `ckpt_name` input unless `spandrel` is installed."""
    for name, cls in MAPPINGS.items():
        for section in cls.INPUT_TYPES().values():
            assert "ckpt_name" not in section, name
    assert "model_file" in MAPPINGS["ASDModelLoader"].INPUT_TYPES()["required"]


def frontend_int_values(options: dict, count: int) -> list[int]:
    """The first `count` values ComfyUI's frontend lets an INT widget hold.

    Its INT widget snaps every value to round((v - offset) / step) * step + offset with
    offset = min % step (and the arrows move by step), so the grid is min + k * step.
    """
    step, low = options.get("step", 1), options["min"]
    offset = low % step

    def snap(v):
        return round((v - offset) / step) * step + offset

    values = sorted({snap(v) for v in range(low, low + step * count)})
    return [v for v in values if low <= v <= options["max"]][:count]


def fills_whole_chunks(frames: int, chunk: int) -> bool:
    return (frames - 1) % 4 == 0 and ((frames - 1) // 4 + 1) % chunk == 0


def test_every_frames_value_the_widget_offers_fills_whole_chunks():
    options = MAPPINGS["ASDCausalSampler"].INPUT_TYPES()["required"]["frames"][1]
    values = frontend_int_values(options, 40)
    assert values[:4] == [9, 21, 33, 45] and 81 in values
    for chunk in (3, 1):  # Wan 1.3B / Self Forcing / the built-in default; frame-wise
        assert [v for v in values if not fills_whole_chunks(v, chunk)] == [], chunk
    assert options["default"] in values and fills_whole_chunks(options["max"], 3)


def test_text_encode_tooltip_lists_the_vocabulary_and_unknown_words_are_logged(builtin, caplog):
    tooltip = MAPPINGS["ASDTextEncode"].INPUT_TYPES()["required"]["text"][1]["tooltip"]
    assert "knows only these words: a and red green blue yellow magenta cyan white circle square triangle" in tooltip
    with caplog.at_level("WARNING"):
        run("ASDTextEncode", text="a purple circle")
    assert "does not know 'purple'" in caplog.text


def test_builtin_previews_are_decoded_true_colour_frames(builtin, fake_comfy):
    """With the built-in default the preview of each chunk is its last frame through the model's
    own VAE (true colour), not the latent false-colour projection Wan files get."""
    from PIL import Image

    fake = fake_comfy()
    asd_model, _ = builtin
    (plan, _), _ = run("ASDStepScheduler", steps=1, first_chunk_steps=4, shift=5.0, spec="")
    (cond,), _ = run("ASDTextEncode", text="a red circle")
    (latent,), _ = run("ASDCausalSampler", model=asd_model, plan=plan, positive=cond, seed=1, frames=21, width=64,
                       height=64, batch_size=1, chunk_frames=0, context_noise=0.0, window_frames=0, cfg=1.0)
    previews = [p for _, _, p in fake.updates if p is not None]
    assert len(previews) == 2  # one per chunk
    first_chunk = core("vae").from_raw(latent["samples"])[:, :, :3]
    with torch.no_grad():
        expected = (asd_model.pipeline.codec.decode(first_chunk)[0, :, -1].permute(1, 2, 0) + 1) / 2  # (H, W, 3)
    picture = previews[0][1].resize((64, 64), Image.NEAREST)  # undo the preview's 4x enlargement
    got = torch.from_numpy(np.array(picture)).float() / 255
    assert (got - expected.clamp(0, 1)).abs().max() < 1.5 / 255


# --- image to video, prompt schedule -----------------------------------------------------------


def test_sampler_begins_the_video_with_a_start_latent(tiny):
    start = torch.randn(1, 16, 1, SIZE // 8, SIZE // 8, generator=torch.Generator().manual_seed(3))
    args = sampler_args(tiny, start_latent={"samples": start})
    (latent,), _ = run("ASDCausalSampler", **args)
    assert latent["samples"].shape[2] == 1 + 4  # the start frame, then the frames asked for
    assert torch.allclose(latent["samples"][:, :, :1], start, atol=1e-5)  # raw -> normalised -> raw
    expected = reference(tiny, args["plan"], [5], start_latents=core("vae").from_raw(start))
    assert torch.equal(latent["samples"], expected)
    assert not torch.equal(latent["samples"][:, :, 1:], reference(tiny, args["plan"], [5]))  # it conditions


@pytest.mark.parametrize("overrides, message", [
    (dict(start_latent={"samples": torch.zeros(1, 16, 1, 8, 8)}), r"set width/height to the start image's size"),
    (dict(start_latent={"samples": torch.zeros(1, 16, 1, 4, 4)}, prefix={"samples": torch.zeros(1, 16, 1, 4, 4)}),
     r"either prefix .* or start_latent .*, not both"),
    (dict(start_latent=torch.zeros(1, 16, 1, 4, 4)), r"start_latent must be a LATENT"),
    (dict(sink_frames=-3), r"sink_frames must be >= 0, -1 for one chunk or -2 for the checkpoint family's own"),
    (dict(window_frames=-2), r"window_frames must be >= 0, or -1 for the checkpoint family's own"),
    (dict(sampler="beam"), r"unknown sampler 'beam'"),
    (dict(window_frames=4, sink_frames=3), r"window_frames=4 is too small: the rolling cache keeps 3 sink frames"),
    (dict(prompt_schedule="a red circle"), r"prompt_schedule must come from the ASD Prompt Schedule node"),
])
def test_sampler_rejects_bad_start_latents_sinks_and_schedules(tiny, overrides, message):
    with pytest.raises(ValueError, match=message):
        run("ASDCausalSampler", **sampler_args(tiny, **overrides))


def test_sampler_sink_frames_reach_the_rolling_cache(tiny):
    args = sampler_args(tiny, frames=29, window_frames=4)  # 8 latent frames, chunks of 2, a window of 4
    for sinks, expected_sinks in [(-1, None), (0, 0), (2, 2)]:
        (latent,), _ = run("ASDCausalSampler", **{**args, "sink_frames": sinks})
        expected = reference(tiny, args["plan"], [5], num_frames=8, max_cache_frames=4, sink_frames=expected_sinks)
        assert torch.equal(latent["samples"], expected), sinks
    (no_sink,), _ = run("ASDCausalSampler", **{**args, "sink_frames": 0})
    (one_chunk,), _ = run("ASDCausalSampler", **{**args, "sink_frames": -1})
    assert not torch.equal(no_sink["samples"], one_chunk["samples"])


def test_sampler_defaults_to_the_familys_sampler_window_and_sinks(tiny, monkeypatch):
    """Widgets left at -1 / -2 / auto sample as the family's release does (here Reward Forcing's EMA sink)."""
    import dataclasses

    released = dataclasses.replace(core("families").BY_NAME["reward_forcing"], max_cache_frames=4, sink_frames=2)
    monkeypatch.setattr(tiny.model, "family", released, raising=False)  # sized for the tiny model's chunks of 2
    args = sampler_args(tiny, frames=29)  # 8 latent frames, chunks of 2: the window rolls
    node_defaults = {name: defaults("ASDCausalSampler")[name] for name in ("window_frames", "sink_frames", "sampler")}
    assert node_defaults == {"window_frames": -1, "sink_frames": -2, "sampler": "auto"}
    (latent,), _ = run("ASDCausalSampler", **{**args, **node_defaults})
    context = core("text").conditioning_from_comfy(conditioning())
    ema = core("ema_sink").sample_ema_sink_video(
        tiny.model, window_frames=4, sink_frames=2, plan=args["plan"], context=context, num_frames=8,
        latent_height=SIZE // 8, latent_width=SIZE // 8, seeds=[5])
    assert torch.equal(latent["samples"], core("vae").to_raw(torch.cat(list(ema), dim=2)))
    # Explicit widgets win: the plain loop over the same window, and the whole-video cache.
    (plain,), _ = run("ASDCausalSampler", **{**args, **node_defaults, "sampler": "self_forcing"})
    assert torch.equal(plain["samples"], reference(tiny, args["plan"], [5], num_frames=8, max_cache_frames=4,
                                                   sink_frames=2))
    assert not torch.equal(plain["samples"], latent["samples"])
    (whole,), _ = run("ASDCausalSampler", **{**args, **node_defaults, "sampler": "self_forcing", "window_frames": 0})
    assert torch.equal(whole["samples"], reference(tiny, args["plan"], [5], num_frames=8))


def test_sampler_without_a_family_keeps_the_whole_video_and_one_chunk_of_sinks(tiny):
    args = sampler_args(tiny, frames=29, window_frames=-1, sink_frames=-2)
    (latent,), _ = run("ASDCausalSampler", **args)
    assert torch.equal(latent["samples"], reference(tiny, args["plan"], [5], num_frames=8))
    (rolled,), _ = run("ASDCausalSampler", **{**args, "window_frames": 4})
    assert torch.equal(rolled["samples"], reference(tiny, args["plan"], [5], num_frames=8, max_cache_frames=4))


def test_rolling_forcing_sampler_refuses_what_it_cannot_do_before_any_model_call(tiny):
    start = {"samples": torch.zeros(1, 16, 1, SIZE // 8, SIZE // 8)}
    with pytest.raises(ValueError, match="the rolling_forcing sampler takes no start_latents"):
        run("ASDCausalSampler", **sampler_args(tiny, sampler="rolling_forcing", start_latent=start))


def test_encode_start_image_is_the_library_encoder_in_raw_space(builtin):
    asd_model, _ = builtin
    image = torch.rand(1, 64, 64, 3, generator=torch.Generator().manual_seed(0))
    (latent,), _ = run("ASDEncodeStartImage", image=image)
    encoded = core("start_image").encode_start_image(asd_model.pipeline.codec, image)
    assert latent["samples"].shape == (1, 16, 1, 8, 8)
    assert torch.allclose(core("vae").from_raw(latent["samples"]), encoded, atol=1e-5)
    with pytest.raises(ValueError, match="multiples of 16"):
        run("ASDEncodeStartImage", image=torch.rand(1, 40, 64, 3))


schedule_mod = sys.modules[f"{P}.nodes.schedule"]


def schedule_of(*starts, recache=True):
    conditionings = {f"conditioning_{i}": conditioning(seed=i) for i in range(1, len(starts) + 1)}
    frames = {f"start_frame_{i}": s for i, s in enumerate(starts, start=1)}
    frames.update({f"start_frame_{i}": 1 for i in range(len(starts) + 1, 5)})
    (schedule,), _ = run("ASDPromptSchedule", recache=recache, **frames, **conditionings)
    return schedule


@pytest.mark.parametrize("starts, chunk, latent_frames, expected, warned", [
    ((21,), 3, 12, [6], False),  # pixel 21 = latent 6 exactly: no warning
    ((17,), 3, 12, [6], True),  # latent 5: nearest boundary 6
    ((13,), 3, 12, [3], True),  # latent 4: nearest boundary 3
    ((9, 33), 3, 12, [3, 9], False),  # latents 3 and 9
    ((5, 9, 13), 1, 8, [2, 3, 4], False),  # frame-wise: every latent frame is a boundary
])
def test_schedule_starts_snap_to_the_nearest_chunk_boundary(starts, chunk, latent_frames, expected, warned, caplog):
    schedule = schedule_of(*starts)
    with caplog.at_level("WARNING"):
        assert schedule_mod.switch_latent_frames(schedule, chunk, latent_frames) == expected
    assert ("nearest chunk start" in caplog.text) == warned
    for frame, boundary in zip(starts, expected):  # the pixel frame told is where that latent frame begins
        assert not warned or f"pixel frame {4 * boundary - 3}, the nearest chunk start to {frame}" in caplog.text


@pytest.mark.parametrize("starts, message", [
    ((4,), r"inside the first chunk \(pixel frames 0..8\).*use a start frame >= 9"),
    ((45,), r"video generates only 45 frames"),
    ((21, 23), r"start frames must increase by at least a chunk \(12 pixel frames\)"),
])
def test_schedule_refuses_starts_it_cannot_place(starts, message):
    with pytest.raises(ValueError, match=message):
        schedule_mod.switch_latent_frames(schedule_of(*starts), 3, 12)


def test_schedule_needs_a_conditioning_and_orders_them():
    with pytest.raises(ValueError, match="no conditioning connected"):
        run("ASDPromptSchedule", start_frame_1=21, start_frame_2=45, start_frame_3=69, start_frame_4=93, recache=True)
    (schedule,), _ = run("ASDPromptSchedule", start_frame_1=45, start_frame_2=21, start_frame_3=69, start_frame_4=93,
                         recache=False, conditioning_1=conditioning(seed=1), conditioning_2=conditioning(seed=2))
    assert [(e.name, e.start_frame) for e in schedule.entries] == [("conditioning_2", 21), ("conditioning_1", 45)]
    assert schedule.recache is False


def test_sampler_follows_a_prompt_schedule_as_the_library_does(tiny):
    args = sampler_args(tiny, frames=29)  # 8 latent frames, chunks of 2
    later = conditioning(seed=11)
    for recache in (True, False):
        schedule = schedule_mod.PromptSchedule((schedule_mod.PromptScheduleEntry("conditioning_1", 13, later),),
                                               recache)
        (latent,), _ = run("ASDCausalSampler", **{**args, "prompt_schedule": schedule})  # pixel 13 = latent 4
        switch = core_sampler.PromptSwitch(frame=4, context=core("text").conditioning_from_comfy(later))
        expected = reference(tiny, args["plan"], [5], num_frames=8, prompt_switches=(switch,), recache=recache)
        assert torch.equal(latent["samples"], expected), recache
        plain = reference(tiny, args["plan"], [5], num_frames=8)
        assert torch.equal(latent["samples"][:, :, :4], plain[:, :, :4])  # before the switch: the first prompt
        assert not torch.equal(latent["samples"][:, :, 4:], plain[:, :, 4:])
