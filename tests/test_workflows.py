"""The sample workflows: converted to the API format by comfy-cli's own converter, checked
node by node (ours against our classes, ComfyUI's against the schema a real ComfyUI served),
and our nodes in them executed for real."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import comfy_executor  # noqa: E402

pytest.importorskip("comfy_cli.workflow_to_api", reason="comfy-cli is needed for the UI -> API converter "
                    "(pip install --no-deps comfy-cli pathspec)")

WORKFLOWS = comfy_executor.REPO / "workflows"
CORE = comfy_executor.core_object_info()

pack = comfy_executor.load_pack()
P = pack.__name__


def convert(name: str) -> dict:
    workflow = json.loads((WORKFLOWS / name).read_text())
    info = {**CORE, **comfy_executor.pack_object_info(pack)}
    return comfy_executor.ui_to_api(workflow, info)


def by_class(prompt: dict, kind: str) -> list[str]:
    return sorted((i for i, n in prompt.items() if n["class_type"] == kind), key=int)


def test_workflow_files_are_what_make_workflows_writes():
    """The files are generated from the nodes' schemas: a node change without regenerating fails here."""
    spec = importlib.util.spec_from_file_location("make_workflows", WORKFLOWS / "make_workflows.py")
    maker = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(maker)
    info = {**CORE, **comfy_executor.pack_object_info(pack)}
    assert sorted(p.name for p in WORKFLOWS.glob("*.json")) == sorted(maker.WORKFLOWS)
    for name, build in maker.WORKFLOWS.items():
        assert json.loads((WORKFLOWS / name).read_text()) == json.loads(json.dumps(build(info))), (
            f"{name} is stale: run python workflows/make_workflows.py")


@pytest.mark.parametrize("name", sorted(p.name for p in WORKFLOWS.glob("*.json")))
def test_workflow_converts_and_every_node_checks(name, tmp_path, monkeypatch):
    monkeypatch.setenv("ASD_MODELS_DIR", str(tmp_path))
    (tmp_path / "self_forcing_dmd.pt").touch()  # listed by the loader; only the Wan workflow names it
    prompt = convert(name)
    executor = comfy_executor.Executor(pack, CORE)
    order = executor.validate(prompt)
    assert set(order) == set(prompt)  # every node feeds an output
    assert by_class(prompt, "SaveVideo") and by_class(prompt, "CreateVideo") and by_class(prompt, "ASDCausalSampler")
    for node_id in by_class(prompt, "SaveVideo"):
        assert prompt[node_id]["inputs"]["filename_prefix"].startswith("ASD/")


def test_t2v_default_runs_our_nodes_for_real():
    prompt = convert("asd_t2v_default_1star.json")
    executor = comfy_executor.Executor(pack, CORE)
    results = executor.run(prompt)
    (sampler,) = by_class(prompt, "ASDCausalSampler")
    (decode,) = by_class(prompt, "ASDDecode")
    (plan,) = by_class(prompt, "ASDStepScheduler")
    assert results[plan][0].spec == "1*"
    widgets = prompt[sampler]["inputs"]
    samples = results[sampler][0]["samples"]
    assert samples.shape == (1, 16, (widgets["frames"] - 1) // 4 + 1, widgets["height"] // 8, widgets["width"] // 8)
    images = results[decode][0]
    assert images.shape == (widgets["frames"], widgets["height"], widgets["width"], 3)
    (video,) = by_class(prompt, "CreateVideo")
    assert prompt[video]["inputs"]["images"] == [decode, 0]  # our IMAGE goes into core CreateVideo
    assert video not in results and by_class(prompt, "SaveVideo")[0] not in results  # core: checked, never imitated
    (loader,) = by_class(prompt, "ASDModelLoader")
    assert "trained plan" in executor.ui[loader]["text"][0]


def test_compare_workflow_same_seed_three_plans():
    prompt = convert("asd_compare_1star_2star_4.json")
    results = comfy_executor.Executor(pack, CORE).run(prompt)
    samplers = by_class(prompt, "ASDCausalSampler")
    plans = {results[prompt[s]["inputs"]["plan"][0]][0].spec: results[s][0]["samples"] for s in samplers}
    assert sorted(plans) == ["1*", "2*", "4"]
    assert len({prompt[s]["inputs"]["seed"] for s in samplers}) == 1
    chunk = pack.NODE_CLASS_MAPPINGS["ASDModelLoader"]().load("(built-in default)", "auto")["result"][0].model.config.chunk_frames
    # The first chunk gets 4 steps under every plan (FFE): identical; later chunks differ by plan.
    assert torch.equal(plans["1*"][:, :, :chunk], plans["4"][:, :, :chunk])
    assert torch.equal(plans["2*"][:, :, :chunk], plans["4"][:, :, :chunk])
    assert not torch.equal(plans["1*"][:, :, chunk:], plans["4"][:, :, chunk:])
    stitch = by_class(prompt, "ImageStitch")
    assert len(stitch) == 2


def test_wan_workflow_uses_core_text_encoder_and_vae(tmp_path, monkeypatch):
    """The loader runs for real on a (tiny) Self Forcing .pt; the rest waits on core nodes."""
    monkeypatch.setenv("ASD_MODELS_DIR", str(tmp_path))
    core_config = sys.modules[f"{P}.asd_core.config"]
    import importlib

    model_cls = importlib.import_module(f"{P}.asd_core.model").CausalWanTransformer
    layouts = importlib.import_module(f"{P}.asd_core.layouts")
    config = core_config.tiny_config(num_attention_heads=1, attention_head_dim=128, text_dim=4096)
    weights = {f"model.{k}": v for k, v in layouts.diffusers_to_wan(model_cls(config).state_dict()).items()}
    torch.save({"generator_ema": weights}, tmp_path / "self_forcing_dmd.pt")

    prompt = convert("asd_wan2.1_1.3b_causal.json")
    executor = comfy_executor.Executor(pack, CORE)
    results = executor.run(prompt)
    (clip,) = by_class(prompt, "CLIPLoader")
    assert prompt[clip]["inputs"]["type"] == "wan" and "umt5" in prompt[clip]["inputs"]["clip_name"]
    (sampler,) = by_class(prompt, "ASDCausalSampler")
    (encode,) = by_class(prompt, "CLIPTextEncode")
    (decode,) = by_class(prompt, "VAEDecode")
    assert prompt[sampler]["inputs"]["positive"] == [encode, 0]
    assert prompt[decode]["inputs"]["samples"] == [sampler, 0]  # our LATENT straight into core VAEDecode
    widgets = prompt[sampler]["inputs"]
    assert (widgets["width"], widgets["height"], widgets["frames"]) == (832, 480, 81)
    (loader,) = by_class(prompt, "ASDModelLoader")
    assert "file layout: self_forcing" in results[loader][1]
    assert results[loader][0].model.config.text_dim == 4096
    assert sampler not in results  # needs CLIPTextEncode's output: checked, not run


def test_continue_workflow_feeds_a_loaded_video_into_the_prefix():
    prompt = convert("asd_continue_video.json")
    (load,) = by_class(prompt, "LoadVideo")
    (parts,) = by_class(prompt, "GetVideoComponents")
    (prefix,) = by_class(prompt, "ASDEncodeVideoPrefix")
    (sampler,) = by_class(prompt, "ASDCausalSampler")
    assert prompt[parts]["inputs"]["video"] == [load, 0]
    assert prompt[prefix]["inputs"]["images"] == [parts, 0]
    assert prompt[sampler]["inputs"]["prefix"] == [prefix, 0]
    results = comfy_executor.Executor(pack, CORE).run(prompt)
    assert prefix not in results and sampler not in results  # they wait on core LoadVideo


def test_executor_refuses_what_comfyui_refuses():
    prompt = convert("asd_t2v_default_1star.json")
    executor = comfy_executor.Executor(pack, CORE)
    (sampler,) = by_class(prompt, "ASDCausalSampler")
    (text,) = by_class(prompt, "ASDTextEncode")
    wrong_link = json.loads(json.dumps(prompt))
    wrong_link[sampler]["inputs"]["plan"] = [text, 0]
    with pytest.raises(comfy_executor.PromptError, match="expects ASD_PLAN, linked to CONDITIONING"):
        executor.validate(wrong_link)
    out_of_range = json.loads(json.dumps(prompt))
    out_of_range[sampler]["inputs"]["width"] = 8
    with pytest.raises(comfy_executor.PromptError, match="below the minimum 16"):
        executor.validate(out_of_range)
    (save,) = by_class(prompt, "SaveVideo")
    bad_core = json.loads(json.dumps(prompt))
    bad_core[save]["inputs"]["format"] = "gif"
    with pytest.raises(comfy_executor.PromptError, match="not in the options"):
        executor.validate(bad_core)
    no_output = {k: v for k, v in prompt.items() if v["class_type"] not in ("SaveVideo", "PreviewAny")}
    with pytest.raises(comfy_executor.PromptError, match="no output node"):
        executor.validate(no_output)


# --- seeds, model downloads, frame rates -----------------------------------------------------


def ui(name: str) -> dict:
    return json.loads((WORKFLOWS / name).read_text())


def ui_nodes(workflow: dict, kind: str) -> list[dict]:
    return [n for n in workflow["nodes"] if n["type"] == kind]


def body_notes(workflow: dict) -> list[dict]:
    """The workflow's notes other than the title header every template has."""
    return [n for n in ui_nodes(workflow, "MarkdownNote") if not n["widgets_values"][0].startswith("# ")]


def seed_control(node: dict) -> str:
    """The control_after_generate word next to a sampler's seed (its widget slots: seed, control, ...)."""
    assert node["widgets_values"][1] in ("fixed", "increment", "decrement", "randomize")
    return node["widgets_values"][1]


@pytest.mark.parametrize("name", ["asd_t2v_default_1star.json", "asd_wan2.1_1.3b_causal.json",
                                  "asd_continue_video.json", "asd_long_video.json", "asd_prompt_switch.json",
                                  "asd_i2v.json"])
def test_sample_workflows_draw_a_new_seed_after_every_run(name):
    workflow = ui(name)
    (sampler,) = ui_nodes(workflow, "ASDCausalSampler")
    assert seed_control(sampler) == "randomize"


def test_compare_workflow_feeds_one_randomized_seed_to_all_three_samplers():
    """The comparison needs the same noise under every plan: one seed source, new after every Run."""
    workflow = ui("asd_compare_1star_2star_4.json")
    (primitive,) = ui_nodes(workflow, "PrimitiveNode")
    assert primitive["widgets_values"][1] == "randomize" and primitive["outputs"][0]["widget"] == {"name": "seed"}
    samplers = ui_nodes(workflow, "ASDCausalSampler")
    links = {link[0]: link for link in workflow["links"]}
    fed = set()
    for sampler in samplers:
        (seed_input,) = [i for i in sampler["inputs"] if i["name"] == "seed"]
        assert seed_input["widget"] == {"name": "seed"}
        link = links[seed_input["link"]]
        assert link[1] == primitive["id"] and link[3] == sampler["id"]
        assert link[4] == sampler["inputs"].index(seed_input)
        assert sampler["widgets_values"][0] == primitive["widgets_values"][0]  # as the frontend shows it
        fed.add(sampler["id"])
    assert len(fed) == 3 and sorted(primitive["outputs"][0]["links"]) == sorted(
        i["link"] for s in samplers for i in s["inputs"] if i["name"] == "seed")
    prompt = convert("asd_compare_1star_2star_4.json")  # the primitive is UI-only: its value lands in each sampler
    assert {prompt[s]["inputs"]["seed"] for s in by_class(prompt, "ASDCausalSampler")} == {primitive["widgets_values"][0]}
    (note,) = body_notes(workflow)
    assert "one seed" in note["widgets_values"][0].lower() and "on purpose" in note["widgets_values"][0]


REPACKAGED = "https://huggingface.co/Comfy-Org/Wan_2.1_ComfyUI_repackaged/resolve/main/split_files/"


def test_wan_workflow_links_its_model_files_for_the_frontend_to_download():
    """ComfyUI's frontend reads `models` ({name, url, directory}) at the top level and in a node's
    properties, and offers a missing file for download when its url is on huggingface.co and its
    name ends in .safetensors; `directory` must be one of ComfyUI's model folder keys."""
    workflow = ui("asd_wan2.1_1.3b_causal.json")
    expected = {
        "umt5_xxl_fp8_e4m3fn_scaled.safetensors": ("text_encoders", "CLIPLoader", "clip_name"),
        "wan_2.1_vae.safetensors": ("vae", "VAELoader", "vae_name"),
    }
    assert sorted(m["name"] for m in workflow["models"]) == sorted(expected)
    prompt = convert("asd_wan2.1_1.3b_causal.json")
    for model in workflow["models"]:
        directory, kind, widget = expected[model["name"]]
        assert model["directory"] == directory
        assert model["url"].startswith(REPACKAGED + directory + "/" + model["name"])
        (node,) = ui_nodes(workflow, kind)
        assert node["properties"]["models"] == [model]  # the per-node form ComfyUI's templates use
        (node_id,) = by_class(prompt, kind)
        assert prompt[node_id]["inputs"][widget] == model["name"]  # the file the node loads is the one linked


def test_wan_workflow_saves_at_16_fps_and_its_note_says_where_each_file_goes():
    prompt = convert("asd_wan2.1_1.3b_causal.json")
    (video,) = by_class(prompt, "CreateVideo")
    assert prompt[video]["inputs"]["fps"] == 16.0
    workflow = ui("asd_wan2.1_1.3b_causal.json")
    (note,) = body_notes(workflow)
    text = note["widgets_values"][0]
    for folder, name in [("models/asd_models/", "self_forcing_dmd.pt"),
                         ("models/text_encoders/", "umt5_xxl_fp8_e4m3fn_scaled.safetensors"),
                         ("models/vae/", "wan_2.1_vae.safetensors")]:
        assert folder in text and name in text
    for model in workflow["models"]:
        assert model["url"] in text


def test_workflows_saved_before_the_loader_input_rename_still_load():
    """UI-format files keep widget values by position, so `ckpt_name` -> `model_file` changes nothing
    in them; API prompts name inputs, and ComfyUI refuses the old name as a missing input."""
    info = {**CORE, **comfy_executor.pack_object_info(pack)}
    old_style = {
        "nodes": [{"id": 1, "type": "ASDModelLoader", "inputs": [], "mode": 0,
                   "outputs": [{"name": "model", "type": "ASD_MODEL", "links": []},
                               {"name": "info", "type": "STRING", "links": [2]}],
                   "properties": {"Node name for S&R": "ASDModelLoader"},
                   "widgets_values": ["(built-in default)", "auto"]},  # as saved with ckpt_name
                  {"id": 2, "type": "PreviewAny", "inputs": [{"name": "source", "type": "*", "link": 2}],
                   "outputs": [], "mode": 0, "properties": {}, "widgets_values": []}],
        "links": [[2, 1, 1, 2, 0, "STRING"]],
    }
    prompt = comfy_executor.ui_to_api(old_style, info)
    # widgets added since (the optional family and lora_file) take their defaults, as in ComfyUI
    assert prompt["1"]["inputs"] == {"model_file": "(built-in default)", "dtype": "auto", "family": "auto",
                                     "lora_file": "(none)"}
    results = comfy_executor.Executor(pack, CORE).run(prompt)
    assert "built-in default" in results["1"][1]
    old_api = {**prompt, "1": {"class_type": "ASDModelLoader", "inputs": {"ckpt_name": "(built-in default)",
                                                                          "dtype": "auto"}}}
    with pytest.raises(comfy_executor.PromptError, match="required input 'model_file' missing"):
        comfy_executor.Executor(pack, CORE).validate(old_api)


def test_requirements_txt_is_pyprojects_dependencies_without_torch():
    """ComfyUI-Manager installs requirements.txt for a clone; it must not drift from pyproject, and
    must never name torch (ComfyUI's own build stays)."""
    import tomllib

    repo = Path(__file__).resolve().parent.parent
    declared = tomllib.loads((repo / "pyproject.toml").read_text())["project"]["dependencies"]
    listed = [line.strip() for line in (repo / "requirements.txt").read_text().splitlines()
              if line.strip() and not line.startswith("#")]
    assert listed == [d for d in declared if not d.startswith("torch")]


# --- long video, prompt switch, image to video, templates -------------------------------------


def maker():
    spec = importlib.util.spec_from_file_location("make_workflows", WORKFLOWS / "make_workflows.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def uint8_frames(images: torch.Tensor):
    """ComfyUI IMAGE [T, H, W, 3] in 0..1 -> the evaluator's uint8 frames."""
    return (images.clamp(0, 1) * 255).round().to(torch.uint8).numpy()


def test_long_video_workflow_is_4x_the_trained_length_in_a_rolling_window_with_sinks():
    prompt = convert("asd_long_video.json")
    results = comfy_executor.Executor(pack, CORE).run(prompt)
    (sampler,) = by_class(prompt, "ASDCausalSampler")
    (decode,) = by_class(prompt, "ASDDecode")
    (loader,) = by_class(prompt, "ASDModelLoader")
    (text,) = by_class(prompt, "ASDTextEncode")
    (plan,) = by_class(prompt, "ASDStepScheduler")
    widgets = prompt[sampler]["inputs"]
    model = results[loader][0].model
    trained_latent_frames = 9  # the built-in default's clips: 33 frames
    assert (widgets["window_frames"], widgets["sink_frames"]) == (trained_latent_frames, model.config.chunk_frames)
    samples = results[sampler][0]["samples"]
    assert samples.shape[2] == 4 * trained_latent_frames
    # The node's output is the library's rolling-window sampler with that window and sink, nothing else.
    context = sys.modules[f"{P}.asd_core.text"].conditioning_from_comfy(results[text][0])
    expected = sys.modules[f"{P}.asd_core.sampler"].generate_latents(
        model, plan=results[plan][0], context=context, num_frames=samples.shape[2], latent_height=8, latent_width=8,
        seeds=[widgets["seed"]], max_cache_frames=trained_latent_frames, sink_frames=model.config.chunk_frames)
    assert torch.equal(samples, sys.modules[f"{P}.asd_core.vae"].to_raw(expected))
    whole_cache = sys.modules[f"{P}.asd_core.sampler"].generate_latents(
        model, plan=results[plan][0], context=context, num_frames=samples.shape[2], latent_height=8, latent_width=8,
        seeds=[widgets["seed"]])
    assert not torch.equal(expected, whole_cache)  # the window really rolled
    images = results[decode][0]
    assert images.shape == (widgets["frames"], 64, 64, 3) == (141, 64, 64, 3)


def test_i2v_workflow_begins_with_the_start_image_it_ships():
    """LoadImage is core: the test gives it what ComfyUI loads from the file the workflow names."""
    from PIL import Image

    prompt = convert("asd_i2v.json")
    (load,) = by_class(prompt, "LoadImage")
    (start,) = by_class(prompt, "ASDEncodeStartImage")
    (sampler,) = by_class(prompt, "ASDCausalSampler")
    (decode,) = by_class(prompt, "ASDDecode")
    assert prompt[start]["inputs"]["image"] == [load, 0] and prompt[sampler]["inputs"]["start_latent"] == [start, 0]
    picture = np.array(Image.open(WORKFLOWS / prompt[load]["inputs"]["image"]).convert("RGB"))
    image = torch.from_numpy(picture).float()[None] / 255
    results = comfy_executor.Executor(pack, CORE).run(prompt, given={load: (image, torch.zeros(1, 64, 64))})
    widgets = prompt[sampler]["inputs"]
    assert results[sampler][0]["samples"].shape[2] == 1 + (widgets["frames"] - 1) // 4 + 1
    assert torch.allclose(results[sampler][0]["samples"][:, :, :1], results[start][0]["samples"], atol=1e-5)
    frames = uint8_frames(results[decode][0])
    assert len(frames) == 1 + widgets["frames"] + 3  # the start latent decodes to 1 frame, each later one to 4
    # The decoded first frame shows what the start image shows, by the evaluator's segmentation.
    measures = sys.modules[f"{P}.asd_core.toy.measures"]
    shown = measures.analyse(frames[:1], min_area=8)
    expected = measures.analyse(picture[None], min_area=8)
    assert (shown.count[0] > 0).tolist() == (expected.count[0] > 0).tolist()


def test_every_workflow_is_a_template_with_a_title_a_description_and_a_crisp_thumbnail():
    """The template browser lists each .json of workflows/ by its file name with the same-named .jpg;
    the title and one-line description head the canvas and sit in extra.template (the fields of
    the frontend's template index), and the README's table names each one."""
    from PIL import Image

    templates = maker().TEMPLATES
    readme = (WORKFLOWS / "README.md").read_text()
    for name, template in templates.items():
        workflow = ui(name)
        meta = workflow["extra"]["template"]
        assert meta == {"name": name[:-5], "title": template.title, "description": template.description,
                        "mediaType": "image", "mediaSubtype": "jpg"}
        assert template.title and "\n" not in template.description and len(template.description) <= 120
        header = min(ui_nodes(workflow, "MarkdownNote"), key=lambda n: n["pos"][1])
        assert header["widgets_values"][0] == f"# {template.title}\n\n{template.description}"
        assert f"`{name}`" in readme and template.title.replace("*", "\\*") in readme, name  # markdown-escaped
        thumbnail = Image.open(WORKFLOWS / name.replace(".json", ".jpg"))
        assert thumbnail.size == (512, 384), name
        if name != "asd_wan2.1_1.3b_causal.json":  # a screenshot: the only one not made of frames
            pixels = np.asarray(thumbnail.convert("RGB"), dtype=np.int16)
            # Nearest-neighbour blocks: each 2x2 block of the enlarged frames is one colour (up to JPEG).
            blocks = pixels[:384 - 384 % 2, :512].reshape(192, 2, 256, 2, 3)
            assert np.median(np.abs(blocks - blocks[:, :1, :, :1]).max(axis=(1, 3, 4))) <= 12, name
            assert (np.abs(pixels[:8] - np.array([24, 24, 28])).max(axis=2) > 8).any(), name  # no dark card border


@pytest.mark.parametrize("name", ["asd_t2v_default_1star.json", "asd_compare_1star_2star_4.json", "asd_i2v.json",
                                  "asd_continue_video.json", "asd_long_video.json"])
def test_sample_workflow_videos_show_what_their_prompt_names(name):
    """What a user sees first: every video a sample workflow makes with the built-in default, at the
    seed saved in it, shows the named shapes in the named colours (the evaluator's semantic score
    against the workflow's own prompt, each decode's whole video)."""
    from asd_core.toy.scores import score_videos

    spec = importlib.util.spec_from_file_location("make_thumbnails", WORKFLOWS / "make_thumbnails.py")
    thumbnails = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(thumbnails)
    prompt = convert(name)
    (text,) = by_class(prompt, "ASDTextEncode")
    words = prompt[text]["inputs"]["text"]
    videos = thumbnails.decoded_videos(name, maker(), comfy_executor, pack, CORE)
    assert videos
    for video in videos:
        semantic = float(score_videos(video[None], [words])["semantic"][0])
        assert semantic >= 0.8, (name, words, semantic)


def test_prompt_switch_workflow_follows_the_switch_by_the_evaluators_colour_check():
    prompt = convert("asd_prompt_switch.json")
    (schedule,) = by_class(prompt, "ASDPromptSchedule")
    (sampler,) = by_class(prompt, "ASDCausalSampler")
    (decode,) = by_class(prompt, "ASDDecode")
    switch_at = prompt[schedule]["inputs"]["start_frame_1"]
    assert prompt[schedule]["inputs"]["recache"] is True and prompt[sampler]["inputs"]["prompt_schedule"] == [schedule, 0]
    measures = sys.modules[f"{P}.asd_core.toy.measures"]

    def colour_shown(prompt_to_run, colour, kind):
        """Per frame: whether the evaluator finds a significant blob of that colour (its `colour` check)."""
        results = comfy_executor.Executor(pack, CORE).run(prompt_to_run)
        analysis = measures.analyse(uint8_frames(results[decode][0]), min_area=8)
        return measures.frame_checks(analysis, [(colour, kind)])["colour"][:, 0]

    red, blue = colour_shown(prompt, "red", "circle"), colour_shown(prompt, "blue", "circle")
    unswitched = json.loads(json.dumps(prompt))
    del unswitched[sampler]["inputs"]["prompt_schedule"]
    blue_unswitched = colour_shown(unswitched, "blue", "circle")
    assert len(red) == prompt[sampler]["inputs"]["frames"]
    assert red[:switch_at].mean() >= 0.8 and blue[:switch_at].mean() <= 0.1  # "a red circle" before the switch
    assert (blue[:switch_at] == blue_unswitched[:switch_at]).all()  # the chunks before the switch are the same
    # "a blue circle" from the switch on: blue shows in many more frames than without the switch.
    assert blue[switch_at:].mean() >= blue_unswitched[switch_at:].mean() + 0.25


def test_run_in_comfyui_reports_a_partly_refused_prompt_as_refused(monkeypatch):
    """ComfyUI answers 200 when only some outputs fail validation, runs the rest, and lists the
    failures in node_errors: the runner must not print that as a success with no video."""
    spec = importlib.util.spec_from_file_location("run_in_comfyui", WORKFLOWS / "run_in_comfyui.py")
    runner = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(runner)
    asked = []

    def server(_server, path, payload=None):
        asked.append(path)
        if path == "/prompt":
            return {"prompt_id": "p1", "number": 0,
                    "node_errors": {"9": {"errors": [{"message": "Value not in list: sampler: 'bogus'"}]}}}
        return {"p1": {"status": {"completed": True, "status_str": "success"}, "outputs": {}}}

    monkeypatch.setattr(runner, "call", server)
    info = {**CORE, **comfy_executor.pack_object_info(pack)}
    state, _, files = runner.run("http://server", WORKFLOWS / "asd_t2v_default_1star.json", info, timeout=5)
    assert state.startswith("refused") and "Value not in list" in state and files == []
    assert asked == ["/prompt"]  # no polling for a prompt that will not make the video
